//go:build linux

package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// batchSize is the number of flows read per BPF_MAP_LOOKUP_BATCH call.
// Hash maps reject batches smaller than their fullest bucket (ENOSPC), so
// it must stay well above 64.
const batchSize = 4096

// ReadFlows replaces the contents of dst with every flow in the kernel
// table, reusing dst's buffers. Every entry in the table for the whole
// read is returned once; entries inserted while it runs may or may not
// be, and an entry being evicted is not (Evict returns its final counts).
//
// It reads with one walk of the table in the kernel (bpf/dump.c), and
// where that could not be loaded (FullReadFallback says why) or fails,
// with batch lookups (ReadFlowsBatch).
func (d *Datapath) ReadFlows(dst *FlowTable) error {
	if d.dump == nil {
		return d.ReadFlowsBatch(dst)
	}
	d.tableMu.Lock()
	dst.Reset()
	err := d.dump.read(dst)
	d.tableMu.Unlock()
	if err == nil {
		return nil
	}
	if batchErr := d.ReadFlowsBatch(dst); batchErr != nil {
		return errors.Join(err, batchErr)
	}
	return nil
}

// FullReadFallback returns nil when ReadFlows reads with the walk in the
// kernel, else why it reads with batch lookups.
func (d *Datapath) FullReadFallback() error { return d.dumpErr }

// ReadFlowsBatch is ReadFlows by batch lookups (BPF_MAP_LOOKUP_BATCH):
// each takes the lock of every bucket it reads and copies whole kernel
// values, ~4x the cost of the walk at 1,000,000 entries. They need
// Linux 5.6 or newer (the package requires 5.15). It returns every entry,
// including one being evicted, whose final counts Evict returns.
func (d *Datapath) ReadFlowsBatch(dst *FlowTable) error {
	dst.Reset()
	var cursor ebpf.MapBatchCursor
	values := make([]xdpflowFlowValue, batchSize) // whole kernel values, one batch
	for {
		keys := dst.growKeys(batchSize)
		n, err := d.objs.Flows.BatchLookup(&cursor, keys, values, nil)
		dst.Keys = dst.Keys[:len(dst.Keys)+n]
		for i := range n {
			c := &values[i].Counters
			dst.Values = append(dst.Values, FlowValue{Packets: c.Packets, Bytes: c.Bytes, FirstSeenNs: c.FirstSeenNs, LastSeenNs: c.LastSeenNs})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("read flow table: batch lookups need Linux 5.6 or newer (xdpflow requires 5.15): %w", err)
		}
		if err != nil {
			return fmt.Errorf("read flow table: %w", err)
		}
	}
}

// Evict removes keys from the kernel table and appends each removed flow,
// with its final counters, to dst. Keys no longer in the table are skipped,
// and so, rarely, is a key whose packets keep the program from evicting it
// at once: that one stays in the table, live, for a later call.
//
// Each key is evicted by the xdpflow_evict program, whose final counters
// hold every packet counted before; a packet after starts a new entry,
// with a new first-seen time. "Lossless eviction" in bpf/xdpflow.c says
// why no packet is lost or counted twice.
func (d *Datapath) Evict(keys []FlowKey, dst *FlowTable) error {
	var in, out xdpflowEvictMsg
	opts := ebpf.RunOptions{Data: bytesOf(&in), DataOut: bytesOf(&out)}
	d.tableMu.Lock() // no delete while a walk reads the table (ReadFlows)
	defer d.tableMu.Unlock()
	for _, k := range keys {
		in.Key = kernelKey(k)
		if _, err := d.objs.XdpflowEvict.Run(&opts); err != nil {
			return fmt.Errorf("evict flow from %s: %w", k.Source(), err)
		}
		if out.Found == 0 {
			continue // not in the table, or still in it (see above)
		}
		c := out.Counters
		dst.Append(k, FlowValue{Packets: c.Packets, Bytes: c.Bytes, FirstSeenNs: c.FirstSeenNs, LastSeenNs: c.LastSeenNs})
	}
	return nil
}
