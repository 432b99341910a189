//go:build linux

package datapath

import (
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// trackingOptions returns test options with change tracking on, every
// port counted.
func trackingOptions() Options {
	opts := allPorts(testOptions())
	opts.TrackChanges = true
	return opts
}

// readDirty calls ReadDirty, failing the test on an error or an overflow.
func readDirty(t *testing.T, d *Datapath) map[FlowKey]FlowValue {
	t.Helper()
	var tbl FlowTable
	ok, err := d.ReadDirty(&tbl)
	if err != nil || !ok {
		t.Fatalf("ReadDirty: ok %v, %v", ok, err)
	}
	return flowMapDedup(t, &tbl)
}

// flowMapDedup converts tbl to a map; a key listed twice (marked in an
// epoch, then again after an epoch overtook its append) must hold the
// same counters both times.
func flowMapDedup(t *testing.T, tbl *FlowTable) map[FlowKey]FlowValue {
	t.Helper()
	m := make(map[FlowKey]FlowValue, tbl.Len())
	for i, k := range tbl.Keys {
		if v, dup := m[k]; dup && v != tbl.Values[i] {
			t.Fatalf("%s read twice with different counters: %+v, %+v", describeKey(k), v, tbl.Values[i])
		}
		m[k] = tbl.Values[i]
	}
	return m
}

// TestReadDirtyListsChangedEntries checks what packets list: inserted
// entries, then exactly the entries touched since the last call, with
// their counters as the table holds them; a touched entry evicted since
// is left out, one inserted again is its new entry; nothing is listed
// without packets.
func TestReadDirtyListsChangedEntries(t *testing.T) {
	privtest.RequireRoot(t)
	d := loadDatapath(t, trackingOptions())
	const n = 300
	for i := range n {
		runFrame(t, d, keyFrame(i))
	}
	if got := readDirty(t, d); len(got) != n {
		t.Fatalf("after %d inserts, %d entries listed", n, len(got))
	}
	if got := readDirty(t, d); len(got) != 0 {
		t.Fatalf("without packets, %d entries listed", len(got))
	}
	touched := []int{0, 7, 7, 150, 299}
	for _, i := range touched {
		runFrame(t, d, keyFrame(i))
	}
	all := readFlows(t, d)
	got := readDirty(t, d)
	if len(got) != 4 {
		t.Errorf("touched 4 entries, %d listed", len(got))
	}
	for _, i := range touched {
		k := keyOf(i, loopbackIndex(t))
		want := uint64(2)
		if i == 7 {
			want = 3
		}
		if v, ok := got[k]; !ok || v != all[k] || v.Packets != want {
			t.Errorf("%s: listed %v, %+v, table holds %+v", describeKey(k), ok, v, all[k])
		}
	}

	// Touched, then evicted: left out. Touched, evicted, inserted again:
	// the new entry, 1 packet.
	gone, again := keyOf(10, loopbackIndex(t)), keyOf(11, loopbackIndex(t))
	runFrame(t, d, keyFrame(10))
	runFrame(t, d, keyFrame(11))
	var evicted FlowTable
	if err := d.Evict([]FlowKey{gone, again}, &evicted); err != nil || evicted.Len() != 2 {
		t.Fatalf("Evict: %d evicted, %v", evicted.Len(), err)
	}
	runFrame(t, d, keyFrame(11))
	got = readDirty(t, d)
	if _, ok := got[gone]; ok || len(got) != 1 || got[again].Packets != 1 {
		t.Errorf("after evictions: listed %+v, want only %s with 1 packet", got, describeKey(again))
	}

	plain := loadDatapath(t, allPorts(testOptions()))
	if _, err := plain.ReadDirty(&evicted); err == nil {
		t.Error("ReadDirty without Options.TrackChanges succeeded")
	}
}

// TestReadDirtyOverflow checks that a list that cannot hold every change
// is reported, so that the whole table is read, and that the next epoch
// lists again.
func TestReadDirtyOverflow(t *testing.T) {
	privtest.RequireRoot(t)
	opts := trackingOptions()
	opts.MaxConnections = 64 // lists of 64 keys
	d := loadDatapath(t, opts)
	for i := range 64 {
		runFrame(t, d, keyFrame(i))
	}
	if got := readDirty(t, d); len(got) != 64 {
		t.Fatalf("a full list: %d listed, want 64", len(got))
	}
	for i := range 64 {
		runFrame(t, d, keyFrame(i))
	}
	runFrame(t, d, keyFrame(64)) // the table is full: overflow counters, not listed
	if got := readDirty(t, d); len(got) != 64 {
		t.Fatalf("a full list and an overflowing packet: %d listed, want 64", len(got))
	}
	var evicted FlowTable
	if err := d.Evict([]FlowKey{keyOf(0, loopbackIndex(t))}, &evicted); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 65; i++ { // 63 touched and one inserted: 64
		runFrame(t, d, keyFrame(i))
	}
	runFrame(t, d, keyFrame(0)) // evicted, table full: overflow counters
	evicted.Reset()
	if err := d.Evict([]FlowKey{keyOf(1, loopbackIndex(t))}, &evicted); err != nil {
		t.Fatal(err)
	}
	runFrame(t, d, keyFrame(0)) // inserted again: the 65th key listed
	var tbl FlowTable
	if ok, err := d.ReadDirty(&tbl); err != nil || ok {
		t.Fatalf("65 keys in a list of 64: ok %v, %v; want not ok", ok, err)
	}
	runFrame(t, d, keyFrame(5))
	if got := readDirty(t, d); len(got) != 1 {
		t.Errorf("after an overflow, 1 touched: %d listed", len(got))
	}
}

// TestReadDirtyRacingPackets counts packets on every CPU, on shared and
// new connections, while epochs switch as fast as ReadDirty runs and
// shared connections are evicted between the reads, as the receiver does.
// A model kept from what ReadDirty returns (the whole table after an
// overflow), less what was evicted, must end equal to the table: every
// change was listed.
func TestReadDirtyRacingPackets(t *testing.T) {
	privtest.RequireRoot(t)
	const goroutines, passes, conns = 4, 40, 200
	opts := trackingOptions()
	opts.MaxConnections = 16384
	d := loadDatapath(t, opts)
	prog := d.Program()

	model := map[FlowKey]FlowValue{}
	var overflows, reads, evictions int
	var evicted FlowTable
	update := func() {
		var tbl FlowTable
		ok, err := d.ReadDirty(&tbl)
		if err != nil {
			t.Fatalf("ReadDirty: %v", err)
		}
		reads++
		if !ok {
			overflows++
			if err := d.ReadFlows(&tbl); err != nil {
				t.Fatalf("ReadFlows: %v", err)
			}
		}
		for i, k := range tbl.Keys {
			model[k] = tbl.Values[i]
		}
		if reads%7 == 0 { // a shared connection, back with its next packet
			evicted.Reset()
			k := keyOf(reads%conns|1, loopbackIndex(t))
			if err := d.Evict([]FlowKey{k}, &evicted); err != nil {
				t.Fatalf("Evict: %v", err)
			}
			if evicted.Len() == 1 {
				delete(model, k)
				evictions++
			}
		}
	}

	// Each pass, packets race the reads; then, packets stopped, one more
	// read lists the last epoch and the model must equal the table.
	for p := range passes {
		var done atomic.Bool
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range conns {
					// Shared connections, and each goroutine's new ones.
					k := i
					if i%4 == 0 {
						k = conns + g*passes*conns/4 + p*conns/4 + i/4
					}
					if _, err := runExactly(prog, keyFrame(k), 1); err != nil {
						t.Errorf("run: %v", err)
						return
					}
				}
			})
		}
		go func() { wg.Wait(); done.Store(true) }()
		for !done.Load() {
			update()
		}
		update() // the epoch of the last packets
		all := readFlows(t, d)
		if len(model) != len(all) {
			t.Errorf("pass %d: model holds %d entries, the table %d", p, len(model), len(all))
		}
		for k, v := range all {
			if model[k] != v {
				t.Fatalf("pass %d: %s: model %+v, table %+v: a change was not listed", p, describeKey(k), model[k], v)
			}
		}
	}
	all := readFlows(t, d)
	t.Logf("%d entries, %d reads, %d overflows, %d evictions", len(all), reads, overflows, evictions)
}

// TestReadDirtyAfterTakeover lists changes in a table taken over from a
// state directory: the entries hold the epochs of the earlier process,
// which the new one's epochs never meet, so the first packet of each entry
// after the takeover lists it, however many epochs went by before.
func TestReadDirtyAfterTakeover(t *testing.T) {
	privtest.RequireRoot(t)
	const rounds, n = 30, 70
	opts := trackingOptions()
	opts.StateDir = filepath.Join(privtest.MountBPFFS(t), "xdpflow")
	first := loadStateful(t, opts)
	for r := range rounds {
		for i := range n {
			runFrame(t, first, keyFrame(i))
		}
		if got := readDirty(t, first); len(got) != n {
			t.Fatalf("first process, round %d: %d listed, want %d", r, len(got), n)
		}
	}
	closeDatapath(t, first)

	second := loadStateful(t, opts)
	defer closeDatapath(t, second)
	if !second.State().Restored {
		t.Fatalf("the table was not taken over: %+v", second.State())
	}
	// Entry i is touched first in epoch i + 1 after the takeover.
	for i := range n {
		runFrame(t, second, keyFrame(i))
		got := readDirty(t, second)
		k := keyOf(i, loopbackIndex(t))
		if v, ok := got[k]; len(got) != 1 || !ok || v.Packets != rounds+1 {
			t.Fatalf("epoch %d after the takeover: listed %+v, want only %s with %d packets", i+1, got, describeKey(k), rounds+1)
		}
	}
}
