package datapath

import (
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// knownBugsEnv enables tests that reproduce known, unfixed bugs.
const knownBugsEnv = "XDPFLOW_RUN_KNOWN_BUGS"

// TestEvictRacingPackets evicts a connection over and over while packets
// of it are being counted on another CPU, and inserts and evicts a second
// connection B in between. Every packet of A must end up in exactly one
// evicted value or in the final entry, and B, sent once per eviction,
// must be evicted with exactly 1 packet each time.
//
// KNOWN BUG, skipped unless XDPFLOW_RUN_KNOWN_BUGS=1: count() adds to the
// value through the pointer bpf_map_lookup_elem returned, without the
// bucket lock that BPF_MAP_LOOKUP_AND_DELETE_ELEM takes. An add that lands
// after Evict copied the value is lost (in the deleted element), and as
// the flow table is a preallocated hash map, the deleted element can be
// reused at once for another key, so the add is counted in an unrelated
// connection. Seen on 6.18 with 2 CPUs: about 0.3-0.8% of A's packets lost
// and a few dozen of them counted in B per run.
func TestEvictRacingPackets(t *testing.T) {
	privtest.RequireRoot(t)
	if os.Getenv(knownBugsEnv) == "" {
		t.Skipf("known bug: packets racing with Evict are lost or counted in another connection; set %s=1 to run", knownBugsEnv)
	}
	const rounds, repeat = 50, 200000
	d := loadDatapath(t, testOptions())
	prog := d.Program()
	ifindex := loopbackIndex(t)
	a, b := keyOf(0, ifindex), keyOf(1, ifindex)

	var done atomic.Bool
	var evictedA, evictedB FlowTable
	var wg sync.WaitGroup
	wg.Go(func() {
		for !done.Load() {
			if err := d.Evict([]FlowKey{a}, &evictedA); err != nil {
				t.Errorf("Evict: %v", err)
				return
			}
			if _, err := runExactly(prog, keyFrame(1), 1); err != nil {
				t.Errorf("run: %v", err)
				return
			}
			if err := d.Evict([]FlowKey{b}, &evictedB); err != nil {
				t.Errorf("Evict: %v", err)
				return
			}
		}
	})
	for range rounds {
		if _, err := runExactly(prog, keyFrame(0), repeat); err != nil {
			t.Errorf("run: %v", err)
			break
		}
	}
	done.Store(true)
	wg.Wait()
	if err := d.Evict([]FlowKey{a}, &evictedA); err != nil {
		t.Fatalf("Evict: %v", err)
	}

	var countedA uint64
	for _, v := range evictedA.Values {
		countedA += v.Packets
	}
	if sent := uint64(rounds * repeat); countedA != sent {
		t.Errorf("A: sent %d packets, %d evictions returned %d: %d lost", sent, evictedA.Len(), countedA, sent-countedA)
	}
	var extraB uint64
	for _, v := range evictedB.Values {
		extraB += v.Packets - 1
	}
	if extraB != 0 {
		t.Errorf("B: sent 1 packet before each of %d evictions, evicted values hold %d packets more: counted from A", evictedB.Len(), extraB)
	}
	if st := readStats(t, d); st.OverflowPackets != 0 {
		t.Errorf("stats %+v, want no overflow", st)
	}
}
