package xdpflowreceiver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// With export_changed_only, a changed series is in every snapshot, an
// unchanged one in exactly one of every 3 accepted snapshots (the
// unchanged_export_interval is 3 collection intervals), and a refused
// snapshot loses neither: its changes and its share come again; the
// changes listed by the source, or found in whole-table reads.
func TestExportChangedOnly(t *testing.T) {
	t.Run("listed", func(t *testing.T) { testExportChangedOnly(t, true) })
	t.Run("whole-table", func(t *testing.T) { testExportChangedOnly(t, false) })
}

func testExportChangedOnly(t *testing.T, listed bool) {
	const unchanged = 30
	src := newFakeSource()
	src.listChanges = listed
	old := kernelNow() - uint64(2*time.Hour)
	for i := range unchanged {
		src.put(testKey("198.51.100.1", uint16(41000+i), 8080, datapath.UDP, 2), datapath.FlowValue{Packets: 1, Bytes: 100, FirstSeenNs: old, LastSeenNs: old})
	}
	busy := testKey("198.51.100.2", 40000, 8080, datapath.TCP, 2)
	touch := func(n uint64) {
		now := kernelNow()
		src.put(busy, datapath.FlowValue{Packets: n, Bytes: 100 * n, FirstSeenNs: old, LastSeenNs: now})
	}
	cfg := fastConfig()
	cfg.CollectionInterval = time.Hour // only the snapshots taken below
	cfg.MinSnapshotInterval = time.Second
	cfg.IdleTimeout = 24 * time.Hour
	cfg.ExportChangedOnly = true
	cfg.UnchangedExportInterval = 3 * time.Hour
	require.NoError(t, cfg.Validate())
	next := &gatedConsumer{open: true}
	r := newTestReceiver(t, cfg, next, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))

	snapshot := func(n uint64) map[int64]int64 {
		touch(n)
		before := len(next.AllMetrics())
		r.takeSnapshot(context.Background(), causeInterval)
		got := map[int64]int64{}
		for _, md := range next.AllMetrics()[before:] {
			for _, dp := range pointsOf(md, metricPackets, -1) {
				port, _ := dp.Attributes().Get(attrSourcePort)
				got[port.Int()] = dp.IntValue()
			}
		}
		return got
	}
	first := snapshot(1)
	assert.Len(t, first, unchanged+1, "the first snapshot carries every series")

	seen := map[int64]int{}
	for n := uint64(2); n <= 7; n++ {
		got := snapshot(n)
		assert.Equal(t, int64(n), got[40000], "the changed series, snapshot %d", n)
		for port := range got {
			seen[port]++
		}
		if n == 4 || n == 7 {
			for i := range unchanged {
				assert.Equal(t, (int(n)-1)/3, seen[int64(41000+i)], "unchanged series %d after snapshot %d", i, n)
			}
		}
	}

	// An outage: the refused snapshot's change and share come again.
	next.mu.Lock()
	next.open = false
	next.mu.Unlock()
	snapshot(8)
	next.mu.Lock()
	next.open = true
	next.mu.Unlock()
	share := map[int64]int64{40000: 9}
	for i := range unchanged {
		if k := testKey("198.51.100.1", uint16(41000+i), 8080, datapath.UDP, 2); r.changed.due(&k) {
			share[int64(41000+i)] = 1
		}
	}
	after := snapshot(9)
	assert.Equal(t, share, after, "the change and the share of the refused snapshot")
	require.NoError(t, r.Shutdown(context.Background()))
	t.Logf("%d series in the snapshot after the outage (changed + a share of the %d unchanged)", len(after), unchanged)
}

// The tracker reads the whole table at the first collect, after a failed
// ReadDirty and after a list that missed changes, and otherwise only the
// listed entries; idle series, found in memory, are left to evict.
func TestChangedTrackerReads(t *testing.T) {
	src := newFakeSource()
	src.listChanges = true
	now := kernelNow()
	key := func(i int) datapath.FlowKey { return testKey("198.51.100.1", uint16(41000+i), 8080, datapath.UDP, 2) }
	for i := range 48 {
		src.put(key(i), datapath.FlowValue{Packets: 1, FirstSeenNs: now, LastSeenNs: now + uint64(i)})
	}
	cfg := fastConfig()
	cfg.ExportChangedOnly = true
	cfg.CollectionInterval = time.Second
	cfg.UnchangedExportInterval = 24 * time.Second
	tr := newChangedTracker(cfg)
	defer tr.free()
	var flows datapath.FlowTable
	var idle []datapath.FlowKey
	reads := func() int {
		n := 0
		for _, c := range src.callLog() {
			if c == "read" {
				n++
			}
		}
		return n
	}
	collect := func(idleBefore uint64) map[datapath.FlowKey]uint64 {
		t.Helper()
		require.NoError(t, tr.collect(src, idleBefore, &flows, &idle))
		tr.accept()
		got := map[datapath.FlowKey]uint64{}
		for i, k := range flows.Keys {
			got[k] = flows.Values[i].Packets
		}
		return got
	}
	assert.Len(t, collect(0), 48, "the first collect exports every series")
	assert.Equal(t, 1, reads(), "the first collect reads the whole table")

	src.put(key(3), datapath.FlowValue{Packets: 2, FirstSeenNs: now, LastSeenNs: now + 100})
	got := collect(0)
	assert.Equal(t, uint64(2), got[key(3)], "the listed change")
	assert.Less(t, len(got), 10, "the change and a share of about 1/24")
	assert.Equal(t, 1, reads(), "only the listed entries are read")

	src.put(key(4), datapath.FlowValue{Packets: 2, FirstSeenNs: now, LastSeenNs: now + 100})
	src.dirtyErr = errors.New("test run failed")
	require.Error(t, tr.collect(src, 0, &flows, &idle))
	src.dirtyErr = nil
	assert.Equal(t, uint64(2), collect(0)[key(4)], "a change of an epoch that ended unread")
	assert.Equal(t, 2, reads(), "after a failed ReadDirty, the whole table")

	src.listChanges = false // a list that missed changes
	src.put(key(5), datapath.FlowValue{Packets: 2, FirstSeenNs: now, LastSeenNs: now + 100})
	got = collect(0)
	assert.Equal(t, uint64(2), got[key(5)])
	assert.NotContains(t, got, key(4), "compared with what was read: unchanged")
	assert.Equal(t, 3, reads())
	src.listChanges = true

	got = collect(now + 10)
	assert.Len(t, idle, 7, "idle in memory: the series last seen before (3, 4 and 5 changed since)")
	for _, k := range idle {
		assert.NotContains(t, got, k, "an idle series is evicted, not exported")
	}
	var evicted datapath.FlowTable
	require.NoError(t, src.Evict(idle, &evicted))
	tr.evicted(evicted.Keys)
	assert.Equal(t, 41, tr.len())
	src.put(key(0), datapath.FlowValue{Packets: 1, FirstSeenNs: now + 200, LastSeenNs: now + 200})
	assert.Equal(t, uint64(1), collect(0)[key(0)], "an evicted series back: new")
	assert.Equal(t, 42, tr.len())
	assert.Equal(t, 3, reads())
}
