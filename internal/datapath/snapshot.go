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
// table, reusing dst's buffers. It uses batch lookups and falls back to
// iterating key by key on kernels without them. Flows inserted while it
// runs may or may not be included; none is returned twice.
func (d *Datapath) ReadFlows(dst *FlowTable) error {
	dst.Reset()
	if !d.batchUnsupported() {
		err := d.readBatched(dst)
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		d.mu.Lock()
		d.noBatchOp = true
		d.mu.Unlock()
		dst.Reset()
	}
	return d.readIterating(dst)
}

func (d *Datapath) batchUnsupported() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.noBatchOp
}

func (d *Datapath) readBatched(dst *FlowTable) error {
	var cursor ebpf.MapBatchCursor
	for {
		keys, values := dst.grow(batchSize)
		n, err := d.objs.Flows.BatchLookup(&cursor, keys, values, nil)
		dst.Keys = dst.Keys[:len(dst.Keys)+n]
		dst.Values = dst.Values[:len(dst.Values)+n]
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read flow table: %w", err)
		}
	}
}

func (d *Datapath) readIterating(dst *FlowTable) error {
	var k FlowKey
	var v FlowValue
	it := d.objs.Flows.Iterate()
	for it.Next(&k, &v) {
		dst.Append(k, v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate flow table: %w", err)
	}
	return nil
}

// Evict removes keys from the kernel table and appends each removed flow,
// with its final counters, to dst. Each key is read and deleted in one
// atomic step (BPF_MAP_LOOKUP_AND_DELETE_ELEM), so every packet counted
// before the deletion is in the returned value, and a packet arriving
// after it starts a new flow with a new first-seen time. Keys no longer in
// the table are skipped.
func (d *Datapath) Evict(keys []FlowKey, dst *FlowTable) error {
	var v FlowValue
	for i := range keys {
		err := d.objs.Flows.LookupAndDelete(&keys[i], &v)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("evict flow: %w", err)
		}
		dst.Append(keys[i], v)
	}
	return nil
}
