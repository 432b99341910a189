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
