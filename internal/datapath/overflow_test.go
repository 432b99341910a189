//go:build linux

package datapath

import (
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestOverflow fills a 16-entry flow table with 100 connections: the first
// 16 are stored, the packets and bytes of the other 84 go to the overflow
// counters, and stored connections keep counting afterwards.
func TestOverflow(t *testing.T) {
	privtest.RequireRoot(t)
	const maxConns, conns = 16, 100
	opts := testOptions()
	opts.MaxConnections = maxConns
	d := loadDatapath(t, opts)
	if got := d.MaxConnections(); got != maxConns {
		t.Fatalf("MaxConnections() = %d, want %d", got, maxConns)
	}
	ifindex := loopbackIndex(t)

	// keyFrame(i) has i%50 payload bytes, so sizes differ.
	var overflowBytes uint64
	for i := range conns {
		f := keyFrame(i)
		runFrame(t, d, f)
		if i >= maxConns {
			overflowBytes += uint64(len(f))
		}
	}

	flows := readFlows(t, d)
	if len(flows) != maxConns {
		t.Fatalf("got %d flows, want %d", len(flows), maxConns)
	}
	for i := range maxConns {
		k := keyOf(i, ifindex)
		if v, ok := flows[k]; !ok || v.Packets != 1 || v.Bytes != uint64(len(keyFrame(i))) {
			t.Errorf("connection %d: %+v (present %v), want 1 packet of %d bytes", i, v, ok, len(keyFrame(i)))
		}
	}
	want := Stats{OverflowPackets: conns - maxConns, OverflowBytes: overflowBytes, NewConnections: maxConns, Events: maxConns / 5}
	if st := readStats(t, d); st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}

	// A stored connection is still counted in its entry.
	runFrame(t, d, keyFrame(3))
	k := keyOf(3, ifindex)
	if v := readFlows(t, d)[k]; v.Packets != 2 || v.Bytes != 2*uint64(len(keyFrame(3))) {
		t.Errorf("connection 3 after a second packet: %+v, want 2 packets", v)
	}
	if st := readStats(t, d); st != want {
		t.Fatalf("stats after a packet of a stored connection %+v, want unchanged %+v", st, want)
	}

	// A connection that overflowed still overflows.
	f := keyFrame(50)
	runFrame(t, d, f)
	want.OverflowPackets++
	want.OverflowBytes += uint64(len(f))
	if st := readStats(t, d); st != want {
		t.Fatalf("stats after a packet of an overflowed connection %+v, want %+v", st, want)
	}
	if n := len(readFlows(t, d)); n != maxConns {
		t.Fatalf("got %d flows, want %d", n, maxConns)
	}
}

// keyOf returns the key of keyFrame(i) seen on ifindex.
func keyOf(i int, ifindex uint32) FlowKey {
	k := wantKey(keyAddr(i), protoTCP, uint16(20000+i), dport)
	k.Ifindex = ifindex
	return k
}

// TestFullTableAfterEviction checks the full-table hint: once an insert
// found the table full, new connections overflow without trying to
// insert, until an eviction frees an entry, which the next new connection
// takes; then the table is full again.
func TestFullTableAfterEviction(t *testing.T) {
	privtest.RequireRoot(t)
	const maxConns = 16
	opts := testOptions()
	opts.MaxConnections = maxConns
	d := loadDatapath(t, opts)
	ifindex := loopbackIndex(t)
	for i := range maxConns + 2 {
		runFrame(t, d, keyFrame(i))
	}
	if st := readStats(t, d); st.NewConnections != maxConns || st.OverflowPackets != 2 {
		t.Fatalf("after filling: %+v, want %d connections and 2 overflow packets", st, maxConns)
	}
	checkFullHint(t, d, 0, true)

	// Two evictions free two entries: the next two new connections take
	// them, the third overflows.
	var evicted FlowTable
	if err := d.Evict([]FlowKey{keyOf(0, ifindex), keyOf(1, ifindex)}, &evicted); err != nil || evicted.Len() != 2 {
		t.Fatalf("Evict = %v, %d flows; want 2", err, evicted.Len())
	}
	checkFullHint(t, d, 2, false)
	for i := 100; i < 103; i++ {
		runFrame(t, d, keyFrame(i))
	}
	flows := readFlows(t, d)
	for i := 100; i < 102; i++ {
		if v, ok := flows[keyOf(i, ifindex)]; !ok || v.Packets != 1 {
			t.Errorf("connection %d after the eviction: %+v (present %v), want stored with 1 packet", i, v, ok)
		}
	}
	if _, ok := flows[keyOf(102, ifindex)]; ok {
		t.Errorf("connection 102 stored in a full table")
	}
	if st := readStats(t, d); st.NewConnections != maxConns+2 || st.OverflowPackets != 3 {
		t.Fatalf("after the evictions: %+v, want %d connections and 3 overflow packets", st, maxConns+2)
	}
	if len(flows) != maxConns {
		t.Fatalf("%d flows, want %d", len(flows), maxConns)
	}
	checkFullHint(t, d, 2, true)
}

// checkFullHint checks the program's eviction count and whether it holds
// the table full.
func checkFullHint(t *testing.T, d *Datapath, evictions uint64, full bool) {
	t.Helper()
	var gotEvictions, mark uint64
	if err := d.objs.Evictions.Get(&gotEvictions); err != nil {
		t.Fatal(err)
	}
	if err := d.objs.FullMark.Get(&mark); err != nil {
		t.Fatal(err)
	}
	if gotEvictions != evictions || (mark == evictions+1) != full {
		t.Errorf("evictions %d, full_mark %d; want %d evictions, full %v", gotEvictions, mark, evictions, full)
	}
}
