//go:build linux

package datapath

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestEvict checks that Evict returns the final counters of the keys it
// removes, appended to dst, skips keys not in the table, and that a packet
// of an evicted connection starts a new entry.
func TestEvict(t *testing.T) {
	privtest.RequireRoot(t)
	d := loadDatapath(t, testOptions())
	ifindex := loopbackIndex(t)
	a, b, c, absent := keyOf(0, ifindex), keyOf(1, ifindex), keyOf(2, ifindex), keyOf(3, ifindex)
	for range 3 {
		runFrame(t, d, keyFrame(0))
	}
	runFrame(t, d, keyFrame(1))
	runFrame(t, d, keyFrame(2))
	before := readFlows(t, d)

	// dst keeps what it held; a duplicate key is evicted once.
	marker := FlowKey{Ifindex: 999}
	var dst FlowTable
	dst.Append(marker, FlowValue{Packets: 42})
	if err := d.Evict([]FlowKey{a, absent, b, a}, &dst); err != nil {
		t.Fatalf("Evict: %v", err)
	}
	wantKeys := []FlowKey{marker, a, b}
	if len(dst.Keys) != len(wantKeys) {
		t.Fatalf("Evict returned %d flows %+v, want %d", dst.Len(), dst.Keys, len(wantKeys))
	}
	for i, k := range wantKeys {
		if dst.Keys[i] != k {
			t.Errorf("evicted flow %d is %+v, want %+v", i, dst.Keys[i], k)
		}
	}
	if dst.Values[0].Packets != 42 {
		t.Errorf("Evict changed the flow dst already held: %+v", dst.Values[0])
	}
	if dst.Values[1] != before[a] || dst.Values[2] != before[b] {
		t.Errorf("evicted values %+v, %+v; want %+v, %+v", dst.Values[1], dst.Values[2], before[a], before[b])
	}
	if before[a].Packets != 3 || before[a].Bytes != 3*uint64(len(keyFrame(0))) {
		t.Errorf("flow a before eviction %+v, want 3 packets", before[a])
	}

	after := readFlows(t, d)
	if len(after) != 1 || after[c] != before[c] {
		t.Fatalf("flows after eviction %+v, want only %+v", after, c)
	}

	// A packet of an evicted connection is a new connection. Wait until the
	// coarse clock has surely moved on, so its first-seen time is later.
	time.Sleep(MaxLag())
	runFrame(t, d, keyFrame(0))
	v, ok := readFlows(t, d)[a]
	if !ok || v.Packets != 1 || v.Bytes != uint64(len(keyFrame(0))) {
		t.Fatalf("flow a after eviction and one packet: %+v (present %v), want 1 packet", v, ok)
	}
	if v.FirstSeenNs <= before[a].LastSeenNs {
		t.Errorf("new first seen %d not after the evicted flow's last seen %d", v.FirstSeenNs, before[a].LastSeenNs)
	}
	if st := readStats(t, d); st.NewConnections != 4 {
		t.Errorf("NewConnections = %d, want 4 (3 + 1 after eviction)", st.NewConnections)
	}

	// Evicting nothing, or only absent keys, is not an error.
	var empty FlowTable
	if err := d.Evict(nil, &empty); err != nil || empty.Len() != 0 {
		t.Errorf("Evict(nil) = %v with %d flows", err, empty.Len())
	}
	if err := d.Evict([]FlowKey{absent, b}, &empty); err != nil || empty.Len() != 0 {
		t.Errorf("Evict(absent keys) = %v with %d flows", err, empty.Len())
	}
}

// TestEvictLeavesAPinnedEntry checks what xdpflow_evict does when a packet
// holds a pin on the entry for longer than it waits (a CPU interrupted
// while adding): it evicts nothing, and the entry stays live and counting
// until the pin is released, when it is evicted with every packet. The
// held pin is written into the entry's state word from user space.
func TestEvictLeavesAPinnedEntry(t *testing.T) {
	privtest.RequireRoot(t)
	d := loadDatapath(t, testOptions())
	a := keyOf(0, loopbackIndex(t))
	runFrame(t, d, keyFrame(0))

	setFlowState(t, d, a, 0, 1) // a pin nobody releases
	var evicted FlowTable
	if err := d.Evict([]FlowKey{a}, &evicted); err != nil || evicted.Len() != 0 {
		t.Fatalf("Evict with a pin held = %v, evicted %+v; want nothing evicted", err, evicted.Values)
	}
	runFrame(t, d, keyFrame(0)) // taking a second pin
	if v := readFlows(t, d)[a]; v.Packets != 2 {
		t.Fatalf("flow a after a failed eviction and a packet: %+v, want 2 packets", v)
	}
	setFlowState(t, d, a, 1, 0) // released; the failed eviction cleared its mark
	if err := d.Evict([]FlowKey{a}, &evicted); err != nil || evicted.Len() != 1 || evicted.Values[0].Packets != 2 {
		t.Fatalf("Evict = %v, evicted %+v; want flow a with 2 packets", err, evicted.Values)
	}
	if st := readStats(t, d); st.OverflowPackets != 0 {
		t.Errorf("overflow packets %d, want 0", st.OverflowPackets)
	}
}

// TestUnpublishedEntryIsNotLive checks that an entry whose state says it is
// not yet published (STATE_NEW: the kernel may still be copying its value
// over a reused entry) is neither counted in nor evicted: a packet of it
// goes to the overflow counters once its lookups are used up.
func TestUnpublishedEntryIsNotLive(t *testing.T) {
	privtest.RequireRoot(t)
	const stateNew = 0x40000000
	d := loadDatapath(t, testOptions())
	a := keyOf(0, loopbackIndex(t))
	runFrame(t, d, keyFrame(0))

	setFlowState(t, d, a, 0, stateNew)
	runFrame(t, d, keyFrame(0))
	var evicted FlowTable
	if err := d.Evict([]FlowKey{a}, &evicted); err != nil || evicted.Len() != 0 {
		t.Fatalf("Evict of an unpublished entry = %v, evicted %+v; want nothing evicted", err, evicted.Values)
	}
	if v := readFlows(t, d)[a]; v.Packets != 1 {
		t.Errorf("unpublished flow a: %+v, want its first packet only", v)
	}
	if st := readStats(t, d); st.OverflowPackets != 1 {
		t.Errorf("overflow packets %d, want 1", st.OverflowPackets)
	}
	setFlowState(t, d, a, stateNew, 0)
	runFrame(t, d, keyFrame(0))
	if v := readFlows(t, d)[a]; v.Packets != 2 {
		t.Errorf("published flow a after a packet: %+v, want 2 packets", v)
	}
}

// setFlowState sets the state word (flow_value.dead) of key's entry, which
// must hold was, with no packet running.
func setFlowState(t *testing.T, d *Datapath, key FlowKey, was, state uint32) {
	t.Helper()
	k := kernelKey(key)
	var v xdpflowFlowValue
	if err := d.objs.Flows.Lookup(&k, &v); err != nil {
		t.Fatalf("look up flow %v: %v", key.Source(), err)
	}
	if v.Dead != was {
		t.Fatalf("state of flow %v is %#x, want %#x", key.Source(), v.Dead, was)
	}
	v.Dead = state
	if err := d.objs.Flows.Update(&k, &v, ebpf.UpdateExist); err != nil {
		t.Fatalf("set the state of flow %v: %v", key.Source(), err)
	}
}

// TestReadFlowsManyBatches reads a table of more flows than one batch
// lookup returns: every flow must come back exactly once, and a second
// read into the same table must return the same flows.
func TestReadFlowsManyBatches(t *testing.T) {
	privtest.RequireRoot(t)
	const conns = 10000 // more than two batches of batchSize
	opts := testOptions()
	opts.MaxConnections = 16384
	d := loadDatapath(t, opts)
	ifindex := loopbackIndex(t)
	for i := range conns {
		runFrame(t, d, keyFrame(i))
	}

	var tbl FlowTable
	for read := range 2 {
		if err := d.ReadFlows(&tbl); err != nil {
			t.Fatalf("ReadFlows: %v", err)
		}
		flows := flowMap(t, &tbl) // fails on a duplicate
		if len(flows) != conns {
			t.Fatalf("read %d: got %d flows, want %d", read, len(flows), conns)
		}
		for i := range conns {
			if v, ok := flows[keyOf(i, ifindex)]; !ok || v.Packets != 1 || v.Bytes != uint64(len(keyFrame(i))) {
				t.Fatalf("read %d: connection %d: %+v (present %v), want 1 packet of %d bytes", read, i, v, ok, len(keyFrame(i)))
			}
		}
	}
	if st := readStats(t, d); st.NewConnections != conns || st.OverflowPackets != 0 {
		t.Errorf("stats %+v, want %d new connections and no overflow", st, conns)
	}
}

// TestCloseTwice checks that Close is idempotent and closes Events().
func TestCloseTwice(t *testing.T) {
	privtest.RequireRoot(t)
	d, err := Load(testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for range d.Events() {
	}
}
