//go:build linux

package datapath

import (
	"fmt"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestReadChangedSelectsInTheKernel fills a table, touches a few entries
// after a point in time, and checks that ReadChanged returns exactly what
// the selection asks for (touched, idle, or in the refresh slot, by
// KeySlot), and that it gives up when the selection outgrows its buffer.
func TestReadChangedSelectsInTheKernel(t *testing.T) {
	privtest.RequireRoot(t)
	opts := allPorts(testOptions())
	opts.ReadChanged = true
	opts.MaxConnections = 1024
	d := loadDatapath(t, opts)
	const n, touched = 600, 7
	for i := range n {
		runFrame(t, d, keyFrame(i))
	}
	all := readFlows(t, d)
	var maxSeen uint64
	for _, v := range all {
		maxSeen = max(maxSeen, v.LastSeenNs)
	}
	time.Sleep(3 * MaxLag())
	for i := range touched {
		runFrame(t, d, keyFrame(i*50))
	}
	after := readFlows(t, d)
	since := maxSeen + 1

	for _, sel := range []ChangedSelection{
		{SinceNs: since},
		{SinceNs: since, Refresh: 8, Slot: 3},
		{SinceNs: since, Refresh: 8, Slot: 0, IdleBeforeNs: maxSeen + 1}, // every untouched entry is "idle"
		{SinceNs: ^uint64(0), Refresh: 64, Slot: 63},
	} {
		want := map[FlowKey]FlowValue{}
		for k, v := range after {
			if v.LastSeenNs >= sel.SinceNs || v.LastSeenNs < sel.IdleBeforeNs || sel.Refresh != 0 && KeySlot(&k, sel.Refresh) == sel.Slot {
				want[k] = v
			}
		}
		var tbl FlowTable
		entries, ok, err := d.ReadChanged(&tbl, sel)
		if err != nil || !ok {
			t.Fatalf("ReadChanged(%+v): ok %v, %v", sel, ok, err)
		}
		if entries != n {
			t.Errorf("ReadChanged(%+v) counted %d entries, want %d", sel, entries, n)
		}
		got := flowMap(t, &tbl)
		if len(got) != len(want) {
			t.Errorf("ReadChanged(%+v): %d entries, want %d", sel, len(got), len(want))
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("ReadChanged(%+v): %s: %+v, want %+v", sel, describeKey(k), got[k], v)
			}
		}
		t.Logf("%+v: %d of %d entries", sel, len(got), n)
	}

	small := opts
	small.MaxConnections = 64 // changed_out holds 64
	s := loadDatapath(t, small)
	for i := range 64 {
		runFrame(t, s, keyFrame(i))
	}
	var tbl FlowTable
	if entries, ok, err := s.ReadChanged(&tbl, ChangedSelection{IdleBeforeNs: ^uint64(0)}); err != nil || !ok || entries != 64 || tbl.Len() != 64 {
		t.Errorf("a full buffer: %d entries, ok %v, %v, %d read; want all 64", entries, ok, err, tbl.Len())
	}
	big := opts
	big.MaxConnections = MaxChangedRead + 1024
	b := loadDatapath(t, big)
	for i := range 65536 {
		runFrame(t, b, keyFrame(i))
	}
	for i := range 64 {
		runFrame(t, b, tcp4Frame("10.250.0."+fmt.Sprint(i), 1, dport, 0))
	}
	if entries, ok, err := b.ReadChanged(&tbl, ChangedSelection{IdleBeforeNs: ^uint64(0)}); err != nil || ok || entries != 65600 {
		t.Errorf("more selected than the buffer holds: %d entries, ok %v, %v; want 65600, not ok", entries, ok, err)
	}
	plain := loadDatapath(t, allPorts(testOptions()))
	if _, _, err := plain.ReadChanged(&tbl, ChangedSelection{}); err == nil {
		t.Error("ReadChanged without Options.ReadChanged succeeded")
	}
}
