//go:build linux

package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// MaxChangedRead bounds the kernel's lists of changed entries
// (Options.TrackChanges): each holds min(MaxConnections, MaxChangedRead)
// keys, and ReadDirty returns at most as many entries at once.
const MaxChangedRead = 65536

// ReadDirty starts a new epoch of change tracking and replaces dst with
// the entries packets changed in the epoch it ends, as they are now; a
// key changed and evicted since is left out (its final counters came
// from Evict), one evicted and inserted again is its new entry. An entry
// not in dst had no packet counted since the previous call: its counters
// are those that call, or the read before it, returned. ok is false, and
// dst undefined, when the kernel could not list every change (more than
// min(MaxConnections, MaxChangedRead) entries changed, or a packet was
// still listing one): read the whole table then (ReadFlows), which holds
// every packet counted before the new epoch. The first call after Load
// reports the changes since Load. Calls must not overlap.
//
// "Changed entries" in bpf/xdpflow.c says why no change is missed.
func (d *Datapath) ReadDirty(dst *FlowTable) (ok bool, err error) {
	if !d.tracking {
		return false, errors.New("read changed flows: the datapath was loaded without Options.TrackChanges")
	}
	var msg xdpflowDirtyMsg
	if _, err := d.objs.XdpflowDirty.Run(&ebpf.RunOptions{Data: bytesOf(&msg), DataOut: bytesOf(&msg)}); err != nil {
		return false, fmt.Errorf("list changed flows: %w", err)
	}
	if msg.Overflow != 0 {
		return false, nil
	}
	return true, d.readChangedOut(dst, msg.Copied)
}

// readChangedOut replaces dst with the first n entries of changed_out.
func (d *Datapath) readChangedOut(dst *FlowTable, n uint32) error {
	dst.Reset()
	if n == 0 {
		return nil
	}
	indexes := make([]uint32, n)
	out := make([]xdpflowChangedEntry, n)
	var cursor ebpf.MapBatchCursor
	got, err := d.objs.ChangedOut.BatchLookup(&cursor, indexes, out, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("read changed flows: %w", err)
	}
	for i := range got {
		e := &out[i]
		c := &e.Counters
		dst.Append(flowKeyOf(&e.Key), FlowValue{Packets: c.Packets, Bytes: c.Bytes, FirstSeenNs: c.FirstSeenNs, LastSeenNs: c.LastSeenNs})
	}
	return nil
}

// monotonicNs returns CLOCK_MONOTONIC, the program's bpf_ktime_get_ns.
func monotonicNs() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 1 // not on Linux; Load fails anyway
	}
	return uint64(ts.Nano())
}
