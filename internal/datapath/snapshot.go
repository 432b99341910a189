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
// be. An entry being evicted (Evict, which returns its final counts) may
// be left out, or returned with counts its final ones supersede.
//
// It reads with one walk of the table in the kernel (bpf/dump.c) the
// first time and when the last read found the table at least
// 1/walkMinShare full, else with batch lookups (ReadFlowsBatch), which
// skip empty buckets faster than the walk visits them; and with batch
// lookups where the walk could not be loaded (FullReadFallback says why)
// or fails. The first read walks because a table taken over from a state
// directory may be full: walking an empty one costs ~12 ns a bucket once
// (12 ms for 1,000,000 entries), reading a full one with batch lookups
// ~250 ns more an entry.
func (d *Datapath) ReadFlows(dst *FlowTable) error {
	var err error
	last := d.lastRead.Load()
	if d.dump == nil || last >= 0 && last*walkMinShare < int64(d.dump.buckets) {
		err = d.ReadFlowsBatch(dst)
	} else if err = d.ReadFlowsWalk(dst); err != nil {
		if batchErr := d.ReadFlowsBatch(dst); batchErr != nil {
			err = errors.Join(err, batchErr)
		} else {
			err = nil
		}
	}
	if err == nil {
		d.lastRead.Store(int64(dst.Len()))
	}
	return err
}

// walkMinShare: ReadFlows walks the table when the last read found at
// least one entry per walkMinShare buckets. The walk costs ~12 ns per
// bucket and ~150 per entry at 1,000,000 entries, batch lookups ~1.3 per
// empty bucket and ~400 per entry: they cost the same at about one entry
// in 20 buckets (BENCHMARKS.md, "Snapshot and conversion").
const walkMinShare = 16

// ReadFlowsWalk is ReadFlows by the walk in the kernel, whatever the
// table's occupancy, e.g. to measure it. It fails where the walk could
// not be loaded (FullReadFallback).
func (d *Datapath) ReadFlowsWalk(dst *FlowTable) error {
	if d.dump == nil {
		return fmt.Errorf("read flow table: the walk is not loaded: %w", d.dumpErr)
	}
	d.tableMu.Lock()
	defer d.tableMu.Unlock()
	dst.Reset()
	return d.dump.read(dst)
}

// FullReadFallback returns nil when ReadFlows can read with the walk in
// the kernel, else why it reads with batch lookups only.
func (d *Datapath) FullReadFallback() error { return d.dumpErr }

// ReadFlowsBatch is ReadFlows by batch lookups (BPF_MAP_LOOKUP_BATCH):
// each takes the lock of every bucket it reads and copies whole kernel
// values, ~4x the cost of the walk at 1,000,000 entries. They need
// Linux 5.6 or newer (the package requires 6.1). It returns every entry,
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
			return fmt.Errorf("read flow table: batch lookups need Linux 5.6 or newer (xdpflow requires 6.1): %w", err)
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
