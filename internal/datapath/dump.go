//go:build linux

package datapath

import (
	"fmt"
	"math/bits"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// dumpWindow is how many entries of dump_out one memory mapping covers:
// 5 MiB, a multiple of every page size (4, 16 and 64 KiB), so that
// mapping the array a window at a time adds 5 MiB, not the whole array,
// to the process's resident memory.
const dumpWindow = 65536

// dumpEntrySize is the size of one element of dump_out; the kernel lays
// a memory-mappable array's elements out back to back, each rounded up
// to 8 bytes (80 already is).
const dumpEntrySize = int(unsafe.Sizeof(xdpflowDumpDumpEntry{}))

// dumper reads the whole flow table with the xdpflow_dump program
// (bpf/dump.c): one walk of the table in the kernel copies every live
// entry's key and counters to the array dump_out, which the process
// reads through a memory mapping. It costs dumpEntrySize bytes of kernel
// memory per entry of the table's capacity, beside the table's 208.
type dumper struct {
	objs xdpflowDumpObjects
	// buckets is the number of buckets the walk visits: the kernel
	// gives a hash map of n entries the next power of two.
	buckets uint64
}

// loadDumper loads the walk over flows, with an array of flows' size.
func loadDumper(flows *ebpf.Map) (*dumper, error) {
	spec, err := loadXdpflowDump()
	if err != nil {
		return nil, fmt.Errorf("read embedded flow table walk: %w", err)
	}
	spec.Maps[xdpflowDumpMapFlows].MaxEntries = flows.MaxEntries()
	spec.Maps[xdpflowDumpMapDumpOut].MaxEntries = flows.MaxEntries()
	d := dumper{buckets: 1 << bits.Len32(flows.MaxEntries()-1)}
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{xdpflowDumpMapFlows: flows}}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		return nil, fmt.Errorf("load flow table walk (%d entries of %d bytes): %w", flows.MaxEntries(), dumpEntrySize, err)
	}
	return &d, nil
}

// Close releases the program and its array.
func (d *dumper) Close() error { return d.objs.Close() }

// read appends every live entry of the table to dst (see ReadFlows for
// the contract): the walk sees each entry of a bucket under the bucket's
// RCU read lock, once. The caller keeps other reads, which would
// overwrite dump_out, out (Datapath.tableMu).
func (d *dumper) read(dst *FlowTable) error {
	var msg xdpflowDumpDumpMsg
	if _, err := d.objs.XdpflowDump.Run(&ebpf.RunOptions{Data: bytesOf(&msg), DataOut: bytesOf(&msg)}); err != nil {
		return fmt.Errorf("walk flow table: %w", err)
	}
	if msg.Overflow > 0 {
		return fmt.Errorf("walk flow table: %d entries did not fit in its array of %d", msg.Overflow, d.objs.DumpOut.MaxEntries())
	}
	n := int(msg.Copied)
	dst.growKeys(n)
	for from := 0; from < n; from += dumpWindow {
		if err := d.readWindow(dst, from, min(dumpWindow, n-from)); err != nil {
			return err
		}
	}
	return nil
}

// readWindow appends entries [from, from+count) of dump_out to dst.
func (d *dumper) readWindow(dst *FlowTable, from, count int) error {
	mem, err := unix.Mmap(d.objs.DumpOut.FD(), int64(from*dumpEntrySize), count*dumpEntrySize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map flow table walk's array at entry %d: %w", from, err)
	}
	dst.appendDumped(unsafe.Slice((*xdpflowDumpDumpEntry)(unsafe.Pointer(&mem[0])), count))
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("unmap flow table walk's array: %w", err)
	}
	return nil
}

// appendDumped appends the walk's entries to t, which has room for them.
// FlowKey and FlowValue have the memory layout of the entry's key and
// counters (TestLayoutMatchesGenerated).
func (t *FlowTable) appendDumped(entries []xdpflowDumpDumpEntry) {
	for i := range entries {
		e := &entries[i]
		t.Keys = append(t.Keys, *(*FlowKey)(unsafe.Pointer(&e.Key)))
		t.Values = append(t.Values, *(*FlowValue)(unsafe.Pointer(&e.Counters)))
	}
}
