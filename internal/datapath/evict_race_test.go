//go:build linux

package datapath

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestEvictRacingPackets evicts a connection over and over while packets
// of it are being counted on another CPU, and inserts and evicts a second
// connection B in between. Every packet of A must end up in exactly one
// evicted value, or in the overflow counters (a packet that found its
// entry marked dead MAX_COUNT_ATTEMPTS times in a row), and so must every
// packet of B, sent once before each of its evictions: no packet of A may
// be counted in an entry that was reused for B.
//
// With BPF_MAP_LOOKUP_AND_DELETE_ELEM as the eviction, about 0.3-0.8% of
// A's packets were lost and a few dozen counted in B per run (6.18, 2 CPUs).
//
// The full-table case runs the same in a table that A fills: B finds it
// full (and overflows) except just after an eviction of A, when A's racing
// packets and B compete for the freed entry. It checks that the
// full-table hint loses nothing either.
func TestEvictRacingPackets(t *testing.T) {
	privtest.RequireRoot(t)
	t.Run("free table", func(t *testing.T) { testEvictRacingPackets(t, 0) })
	t.Run("full table", func(t *testing.T) { testEvictRacingPackets(t, 15) })
}

// testEvictRacingPackets runs the race in a 16-entry table holding others
// other connections, or in the default table when others is 0.
func testEvictRacingPackets(t *testing.T, others int) {
	const rounds, repeat = 50, 200000
	opts := testOptions()
	if others > 0 {
		opts.MaxConnections = 16
	}
	d := loadDatapath(t, opts)
	prog := d.Program()
	ifindex := loopbackIndex(t)
	a, b := keyOf(0, ifindex), keyOf(1, ifindex)
	for i := range others {
		runFrame(t, d, keyFrame(2+i))
	}

	var done atomic.Bool
	var evictedA, evictedB FlowTable
	var sentB uint64
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
			sentB++
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
	// Whatever is left of either: an eviction finds an entry it cannot
	// evict now (a pin held by a stalled CPU) and leaves it live.
	if err := d.Evict([]FlowKey{a}, &evictedA); err != nil {
		t.Fatalf("Evict: %v", err)
	}
	if err := d.Evict([]FlowKey{b}, &evictedB); err != nil {
		t.Fatalf("Evict: %v", err)
	}

	// A's and B's frames differ in length by one byte, so the overflow
	// counters say how many of each they hold, and an entry's bytes say
	// whether it holds a packet of the other connection.
	lenA, lenB := uint64(len(keyFrame(0))), uint64(len(keyFrame(1)))
	if lenB != lenA+1 {
		t.Fatalf("frames of %d and %d bytes: want B's one byte longer than A's", lenA, lenB)
	}
	st := readStats(t, d)
	overflowB := st.OverflowBytes - st.OverflowPackets*lenA
	overflowA := st.OverflowPackets - overflowB
	countedA, bytesA := sumCounters(&evictedA)
	countedB, bytesB := sumCounters(&evictedB)
	if sent := uint64(rounds * repeat); countedA+overflowA != sent {
		t.Errorf("A: sent %d packets, %d evictions returned %d, overflow %d: %d lost",
			sent, evictedA.Len(), countedA, overflowA, int64(sent)-int64(countedA+overflowA))
	}
	if countedB+overflowB != sentB {
		t.Errorf("B: sent %d packets, %d evictions returned %d, overflow %d: %d lost",
			sentB, evictedB.Len(), countedB, overflowB, int64(sentB)-int64(countedB+overflowB))
	}
	if bytesA != countedA*lenA || bytesB != countedB*lenB {
		t.Errorf("evicted values of A hold %d bytes for %d packets, of B %d for %d: a packet counted for the other connection",
			bytesA, countedA, bytesB, countedB)
	}
	t.Logf("A: %d packets, %d evictions, %d packets in overflow; B: %d sent, %d evictions returned %d, %d in overflow",
		countedA, evictedA.Len(), overflowA, sentB, evictedB.Len(), countedB, overflowB)
}

// sumCounters returns the packets and bytes of every value of tbl.
func sumCounters(tbl *FlowTable) (packets, bytes uint64) {
	for _, v := range tbl.Values {
		packets += v.Packets
		bytes += v.Bytes
	}
	return packets, bytes
}
