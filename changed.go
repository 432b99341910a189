package xdpflowreceiver

import (
	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// changedTracker keeps, with export_changed_only, the counters of every
// series in the table as last read, and exports the series whose counts
// changed since the last accepted snapshot, and a rotating share of the
// others: a series is exported at least once in every refresh accepted
// snapshots, spread so that each snapshot carries about 1/refresh of the
// unchanged ones rather than all of them at once.
//
// A snapshot reads from the kernel only the entries packets changed since
// the previous one (Datapath.ReadDirty); an entry no packet changed holds
// what was read last, exactly ("Changed entries" in bpf/xdpflow.c), so the
// unchanged share and the idle connections come from memory. The whole
// table is read at the first snapshot and when the kernel could not list
// every change.
type changedTracker struct {
	refresh uint32 // snapshots within unchanged_export_interval
	// accepted counts the accepted snapshots: it picks the share of
	// unchanged series due, and stands still while exports fail, so that
	// a refused share is offered again.
	accepted uint64
	// synced: the series hold every entry of the table, as read after
	// the epoch of the last ReadDirty began.
	synced bool
	// aliased: the flows collect returned last are the series' own
	// memory (every series exported), to let go before the next read.
	aliased bool

	// The series, as parallel slices; index finds a key's position. The
	// keys and counters (76 bytes a series) are on the Go heap, where the
	// whole-table read puts them; the rest (~30 bytes) is mapped outside
	// it. All of it outside cut the peak RSS of 1 M series to 140 MiB
	// (from 215), but the garbage collector, pacing a heap that much
	// smaller, ran so much more often that a snapshot cost 80-95 ms of
	// CPU instead of 67-72 (BENCHMARKS.md, "1,000,000 connections, 1%
	// changed").
	index   keyIndex
	keys    mappedSlice[datapath.FlowKey]
	values  mappedSlice[datapath.FlowValue]
	hashes  mappedSlice[uint32] // KeyHash
	slots   mappedSlice[uint32] // KeySlot among refresh
	pending mappedSlice[bool]   // changed since their last accepted export
}

func newChangedTracker(cfg *Config) *changedTracker {
	if !cfg.ExportChangedOnly {
		return nil
	}
	refresh := uint32((cfg.UnchangedExportInterval + cfg.CollectionInterval - 1) / cfg.CollectionInterval)
	return &changedTracker{refresh: max(refresh, 1)}
}

// collect updates the series from src, then puts in flows the series to
// export in this snapshot and in idleKeys those last seen before
// idleBefore (kernel ns), to evict: those are left out of flows. The
// series exported are no longer changed unless refused says so. flows
// may be the series' own memory until the next collect or free: it is
// only read meanwhile.
func (t *changedTracker) collect(src flowSource, idleBefore uint64, flows *datapath.FlowTable, idleKeys *[]datapath.FlowKey) error {
	if c := cap(flows.Keys); t.aliased || c > 1<<16 && c > 4*flows.Len() {
		*flows = datapath.FlowTable{} // the series' memory, or a large export's buffers
		t.aliased = false
	}
	full, err := t.read(src, flows)
	if err != nil {
		return err
	}
	flows.Reset()
	*idleKeys = (*idleKeys)[:0]
	slot := t.slot()
	keys, values, slots, pending := t.keys.s, t.values.s, t.slots.s, t.pending.s
	if full && t.exportsAll(idleBefore) {
		// The first snapshot: the series themselves, not a copy of the
		// table, which would double the memory it needs.
		n := len(keys)
		*flows = datapath.FlowTable{Keys: keys[:n:n], Values: values[:n:n]}
		clear(pending)
		t.aliased = true
		return nil
	}
	for i := range values {
		v := &values[i]
		switch {
		case v.LastSeenNs < idleBefore:
			*idleKeys = append(*idleKeys, keys[i])
		case pending[i] || slots[i] == slot:
			flows.Append(keys[i], *v)
			pending[i] = false
		}
	}
	return nil
}

// exportsAll reports whether every series is to be exported: changed,
// and not idle.
func (t *changedTracker) exportsAll(idleBefore uint64) bool {
	for i, changed := range t.pending.s {
		if !changed || t.values.s[i].LastSeenNs < idleBefore {
			return false
		}
	}
	return true
}

// read brings the series up to date: the entries listed changed, using
// buf; or, before the first read and when the list missed changes, the
// whole table, after the epoch began (full).
func (t *changedTracker) read(src flowSource, buf *datapath.FlowTable) (full bool, err error) {
	ok, err := src.ReadDirty(buf)
	if err != nil {
		t.synced = false // the epoch may have ended unread: read the whole table next
		return false, err
	}
	if ok && t.synced {
		for i := range buf.Keys {
			t.update(&buf.Keys[i], &buf.Values[i])
		}
		return false, nil
	}
	t.synced = false
	next := changedTracker{keys: mappedSlice[datapath.FlowKey]{onHeap: true}, values: mappedSlice[datapath.FlowValue]{onHeap: true}}
	var tbl datapath.FlowTable
	err = src.ReadFlows(&tbl)
	next.keys.adopt(tbl.Keys)
	next.values.adopt(tbl.Values)
	if err != nil {
		next.free()
		return true, err
	}
	t.sync(&next)
	t.synced = true
	return true, nil
}

// sync makes the series those of next, whose keys and values hold the
// whole table, and which it takes over: series no longer in the table are
// dropped, a series is changed if it is new, was changed, or its counters
// differ.
func (t *changedTracker) sync(next *changedTracker) {
	n := len(next.keys.s)
	room := n + n/8 + 1024 // for new connections until the next sync
	next.hashes.reserve(room)
	next.slots.reserve(room)
	next.pending.reserve(room)
	next.index.reset(room)
	for i := range next.keys.s {
		k, v := &next.keys.s[i], &next.values.s[i]
		h := datapath.KeyHash(k)
		old, ok := t.index.get(t.keys.s, k, h)
		next.hashes.push(h)
		next.slots.push(h % t.refresh)
		next.pending.push(!ok || t.pending.s[old] || t.values.s[old] != *v)
		next.index.insert(next.keys.s, next.hashes.s, int32(i), h)
	}
	t.free()
	t.index, t.keys, t.values, t.hashes, t.slots, t.pending = next.index, next.keys, next.values, next.hashes, next.slots, next.pending
}

// update records v as k's counters, marking the series changed when they
// differ from those recorded.
func (t *changedTracker) update(k *datapath.FlowKey, v *datapath.FlowValue) {
	h := datapath.KeyHash(k)
	if pos, ok := t.index.get(t.keys.s, k, h); ok {
		if t.values.s[pos] != *v {
			t.values.s[pos] = *v
			t.pending.s[pos] = true
		}
		return
	}
	t.keys.push(*k)
	t.values.push(*v)
	t.hashes.push(h)
	t.slots.push(h % t.refresh)
	t.pending.push(true)
	t.index.insert(t.keys.s, t.hashes.s, int32(len(t.keys.s)-1), h)
}

// evicted drops the series of keys, which left the table.
func (t *changedTracker) evicted(keys []datapath.FlowKey) {
	for i := range keys {
		t.remove(&keys[i])
	}
}

// remove drops k's series, moving the last one into its place.
func (t *changedTracker) remove(k *datapath.FlowKey) {
	h := datapath.KeyHash(k)
	pos, ok := t.index.get(t.keys.s, k, h)
	if !ok {
		return
	}
	t.index.remove(t.keys.s, t.hashes.s, pos, h)
	last := int32(len(t.keys.s) - 1)
	if pos != last {
		t.keys.s[pos], t.values.s[pos], t.hashes.s[pos] = t.keys.s[last], t.values.s[last], t.hashes.s[last]
		t.slots.s[pos], t.pending.s[pos] = t.slots.s[last], t.pending.s[last]
		t.index.move(last, pos, t.hashes.s[pos])
	}
	n := int(last)
	t.keys.truncate(n)
	t.values.truncate(n)
	t.hashes.truncate(n)
	t.slots.truncate(n)
	t.pending.truncate(n)
}

// len returns the number of series: entries of the table.
func (t *changedTracker) len() int { return len(t.keys.s) }

// due reports whether an unchanged series is in this snapshot's share.
func (t *changedTracker) due(k *datapath.FlowKey) bool {
	return datapath.KeySlot(k, t.refresh) == t.slot()
}

func (t *changedTracker) slot() uint32 { return uint32(t.accepted % uint64(t.refresh)) }

// accept records that the snapshot collected last was accepted.
func (t *changedTracker) accept() {
	if t != nil {
		t.accepted++
	}
}

// refused records that the snapshot collected last, flows, was refused:
// its series are exported again with the next one.
func (t *changedTracker) refused(flows *datapath.FlowTable) {
	if t == nil {
		return
	}
	for i := range flows.Keys {
		k := &flows.Keys[i]
		if pos, ok := t.index.get(t.keys.s, k, datapath.KeyHash(k)); ok {
			t.pending.s[pos] = true
		}
	}
}

// free releases the series' memory; the tracker is empty after it.
func (t *changedTracker) free() {
	if t == nil {
		return
	}
	t.keys.free()
	t.values.free()
	t.hashes.free()
	t.slots.free()
	t.pending.free()
	t.index.free()
	t.synced = false
}
