package xdpflowreceiver

import (
	"math/rand/v2"
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// TestChangedTrackerIndex puts, updates and removes series at random, the
// index growing and shifting keys back, and checks every key against a Go
// map after each step.
func TestChangedTrackerIndex(t *testing.T) {
	tr := &changedTracker{refresh: 24}
	defer tr.free()
	want := map[datapath.FlowKey]uint64{}
	rng := rand.New(rand.NewPCG(1, 2))
	key := func(i int) datapath.FlowKey {
		return datapath.FlowKey{Ifindex: uint32(i % 7), SrcPort: uint16(i), DstPort: uint16(i >> 16), Family: 4}
	}
	for step := range 20000 {
		k := key(rng.IntN(3000))
		if rng.IntN(3) == 0 {
			tr.remove(&k)
			delete(want, k)
		} else {
			v := datapath.FlowValue{Packets: uint64(step)}
			tr.update(&k, &v)
			want[k] = v.Packets
		}
		if step%997 != 0 {
			continue
		}
		if tr.len() != len(want) || tr.index.n != len(want) {
			t.Fatalf("step %d: %d series, %d indexed, want %d", step, tr.len(), tr.index.n, len(want))
		}
		for k, p := range want {
			pos, ok := tr.index.get(tr.keys.s, &k, datapath.KeyHash(&k))
			if !ok || tr.values.s[pos].Packets != p || tr.slots.s[pos] != datapath.KeySlot(&k, 24) {
				t.Fatalf("step %d: %+v at %d (%v): %+v, want %d packets", step, k, pos, ok, tr.values.s[pos], p)
			}
		}
	}
	var next changedTracker
	for k, p := range want {
		next.keys.push(k)
		next.values.push(datapath.FlowValue{Packets: p})
	}
	tr.sync(&next)
	if tr.len() != len(want) {
		t.Fatalf("after sync: %d series, want %d", tr.len(), len(want))
	}
	for k, p := range want {
		if pos, ok := tr.index.get(tr.keys.s, &k, datapath.KeyHash(&k)); !ok || tr.values.s[pos].Packets != p {
			t.Fatalf("after sync: %+v missing", k)
		}
	}
}
