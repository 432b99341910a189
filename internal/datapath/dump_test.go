//go:build linux

package datapath

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// fillDistinct runs the program on connections from..from+n-1, from
// 10.0.0.0 up (keyOfIndex), each with one packet, in a frame buffer of its
// own (so that goroutines can fill at once).
func fillDistinct(t testing.TB, d *Datapath, from, n int) {
	t.Helper()
	frame := tcp4Frame("10.0.0.0", 40000, dport, 10)
	opts := ebpf.RunOptions{Data: frame}
	for i := from; i < from+n; i++ {
		binary.BigEndian.PutUint32(frame[ipv4SrcOffset:], 10<<24|uint32(i))
		runFrameOpts(t, d, &opts)
	}
}

// batchFlows reads d's table with batch lookups into a map.
func batchFlows(t testing.TB, d *Datapath) map[FlowKey]FlowValue {
	t.Helper()
	var tbl FlowTable
	if err := d.ReadFlowsBatch(&tbl); err != nil {
		t.Fatalf("ReadFlowsBatch: %v", err)
	}
	return flowMap(t, &tbl)
}

// walkFlows reads d's table with the walk in the kernel into a map.
func walkFlows(t testing.TB, d *Datapath) map[FlowKey]FlowValue {
	t.Helper()
	var tbl FlowTable
	if err := d.ReadFlowsWalk(&tbl); err != nil {
		t.Fatalf("ReadFlowsWalk: %v", err)
	}
	return flowMap(t, &tbl)
}

// equalFlows fails unless got and want hold the same flows.
func equalFlows(t testing.TB, what string, got, want map[FlowKey]FlowValue) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d flows, want %d", what, len(got), len(want))
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: %s: %+v (present %v), want %+v", what, describeKey(k), g, ok, v)
			return
		}
	}
}

// TestReadFlowsWalk checks that the walk in the kernel returns what batch
// lookups return for a table of more entries than one memory-mapped
// window of the walk's array, and reuses its buffers for a smaller table.
func TestReadFlowsWalk(t *testing.T) {
	privtest.RequireRoot(t)
	const n = dumpWindow + 4000
	opts := allPorts(testOptions())
	opts.MaxConnections = n
	d := loadDatapath(t, opts)
	if err := d.FullReadFallback(); err != nil {
		t.Fatalf("the walk was not loaded: %v", err)
	}
	fillDistinct(t, d, 0, n)
	runFrame(t, d, tcp4Frame("10.0.0.7", 40000, dport, 100)) // a second packet

	walked := walkFlows(t, d)
	equalFlows(t, "walk against batch lookups", walked, batchFlows(t, d))
	if len(walked) != n {
		t.Fatalf("read %d flows, want %d", len(walked), n)
	}
	if v := walked[keyOfAddr(t, "10.0.0.7")]; v.Packets != 2 {
		t.Errorf("10.0.0.7: %+v, want 2 packets", v)
	}

	var tbl FlowTable
	if err := d.ReadFlowsWalk(&tbl); err != nil {
		t.Fatal(err)
	}
	keys := &tbl.Keys[0]
	var evicted FlowTable
	if err := d.Evict(tbl.Keys[:n-10], &evicted); err != nil || evicted.Len() != n-10 {
		t.Fatalf("Evict: %d of %d, %v", evicted.Len(), n-10, err)
	}
	if err := d.ReadFlowsWalk(&tbl); err != nil || tbl.Len() != 10 {
		t.Fatalf("walk after evicting all but 10: %d flows, %v", tbl.Len(), err)
	}
	if &tbl.Keys[0] != keys {
		t.Error("the walk did not reuse the table's buffers")
	}
}

// keyOfAddr returns the key of fillDistinct's connection from src.
func keyOfAddr(t *testing.T, src string) FlowKey {
	k := wantKey(src, protoTCP, 40000, dport)
	k.Ifindex = loopbackIndex(t)
	return k
}

// keyOfIndex returns the key of fillDistinct's connection i, counted on
// the interface ifindex.
func keyOfIndex(ifindex uint32, i int) FlowKey {
	k := wantKey("10.0.0.0", protoTCP, 40000, dport)
	k.Ifindex = ifindex
	k.SrcAddr[13], k.SrcAddr[14], k.SrcAddr[15] = byte(i>>16), byte(i>>8), byte(i)
	return k
}

// TestReadFlowsLeavesOutEvicting writes entries in each state a packet or
// an eviction leaves: live with pins, not yet published (STATE_NEW, read:
// its counters are whole) and being evicted (STATE_DEAD: left out by the
// walk, whose caller exports Evict's final counts instead; batch lookups
// return it).
func TestReadFlowsLeavesOutEvicting(t *testing.T) {
	privtest.RequireRoot(t)
	d := loadDatapath(t, testOptions())
	states := map[string]uint32{"10.1.0.1": 2, "10.1.0.2": 0x40000000, "10.1.0.3": 0x80000000, "10.1.0.4": 0x80000001}
	for src, state := range states {
		k := keyOfAddr(t, src)
		v := xdpflowFlowValue{Dead: state, Key: kernelKey(k)}
		v.Counters.Packets, v.Counters.FirstSeenNs = 3, 5
		if err := d.objs.Flows.Put(kernelKey(k), &v); err != nil {
			t.Fatal(err)
		}
	}
	walked, batch := walkFlows(t, d), batchFlows(t, d)
	if len(batch) != len(states) {
		t.Errorf("batch lookups read %d entries, want all %d", len(batch), len(states))
	}
	for src, state := range states {
		_, ok := walked[keyOfAddr(t, src)]
		if want := state&0x80000000 == 0; ok != want {
			t.Errorf("state %#x: read %v, want %v", state, ok, want)
		}
	}
}

// TestReadFlowsFallback checks that ReadFlows reads with batch lookups
// where the walk could not be loaded, and says why.
func TestReadFlowsFallback(t *testing.T) {
	privtest.RequireRoot(t)
	d := loadDatapath(t, allPorts(testOptions()))
	fillDistinct(t, d, 0, 300)
	want := readFlows(t, d)

	if _, err := loadDumper(d.objs.Cidrs); err == nil {
		t.Fatal("loadDumper accepted a map that is not the flow table")
	}
	if err := d.closeDumper(); err != nil {
		t.Fatal(err)
	}
	d.dump, d.dumpErr = nil, errNotLoadedForTest
	if err := d.FullReadFallback(); err != errNotLoadedForTest {
		t.Errorf("FullReadFallback = %v, want %v", err, errNotLoadedForTest)
	}
	equalFlows(t, "batch lookups", readFlows(t, d), want)
}

var errNotLoadedForTest = errors.New("walk not loaded, for the test")

// TestReadFlowsDuringInsertsAndEvictions walks the table over and over
// while packets insert new connections and another goroutine evicts
// connections and lets them come back: every read must return each
// connection that stayed in the table throughout exactly once, with its
// counts, and no connection twice.
func TestReadFlowsDuringInsertsAndEvictions(t *testing.T) {
	privtest.RequireRoot(t)
	const stable, churn, inserted = 20000, 2000, 20000
	opts := allPorts(testOptions())
	opts.MaxConnections = stable + churn + inserted
	d := loadDatapath(t, opts)
	fillDistinct(t, d, 0, stable+churn)
	stableKeys := readFlows(t, d)
	lo := loopbackIndex(t)

	var done atomic.Bool
	var wg sync.WaitGroup
	var added atomic.Int64
	wg.Go(func() { // new connections, inserted at the head of their buckets
		for i := stable + churn; !done.Load() && i < stable+churn+inserted; i++ {
			fillDistinct(t, d, i, 1)
			added.Add(1)
		}
	})
	wg.Go(func() { // churn: evicted, then counted again (a new entry)
		var evicted FlowTable
		frame := tcp4Frame("10.0.0.0", 40000, dport, 10)
		for round := 0; !done.Load(); round++ {
			i := stable + round%churn
			binary.BigEndian.PutUint32(frame[ipv4SrcOffset:], 10<<24|uint32(i))
			if err := d.Evict([]FlowKey{keyOfIndex(lo, i)}, &evicted); err != nil {
				t.Errorf("Evict: %v", err)
				return
			}
			if _, err := d.Program().Run(&ebpf.RunOptions{Data: frame}); err != nil {
				t.Errorf("run: %v", err)
				return
			}
		}
	})
	const reads = 30
	for r := range reads {
		got := walkFlows(t, d) // fails on a connection read twice
		for i := range stable {
			k := keyOfIndex(lo, i)
			if got[k] != stableKeys[k] {
				t.Fatalf("read %d: %s: %+v, want %+v", r, describeKey(k), got[k], stableKeys[k])
			}
		}
	}
	done.Store(true)
	wg.Wait()
	t.Logf("%d reads while %d connections were inserted", reads, added.Load())
	if added.Load() == 0 {
		t.Error("no connection was inserted during the reads")
	}
}

// TestReadFlowsChoosesByOccupancy checks that ReadFlows walks the table
// the first time and when the last read found it at least 1/walkMinShare
// full, and uses batch lookups otherwise. Which one read is told by an
// entry being evicted, which only batch lookups return.
func TestReadFlowsChoosesByOccupancy(t *testing.T) {
	privtest.RequireRoot(t)
	opts := allPorts(testOptions())
	opts.MaxConnections = 64 // 64 buckets: the walk from 4 entries on
	d := loadDatapath(t, opts)
	fillDistinct(t, d, 0, 3)
	k := keyOfAddr(t, "10.1.0.3")
	v := xdpflowFlowValue{Dead: 0x80000000, Key: kernelKey(k)}
	if err := d.objs.Flows.Put(kernelKey(k), &v); err != nil {
		t.Fatal(err)
	}
	// walk (nothing read yet), batch (3 read), walk (4 read), batch
	for i, want := range []int{3, 4, 3, 4} {
		var tbl FlowTable
		if err := d.ReadFlows(&tbl); err != nil || tbl.Len() != want {
			t.Errorf("read %d: %d flows, %v; want %d", i, tbl.Len(), err, want)
		}
	}
}
