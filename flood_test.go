//go:build linux

package xdpflowreceiver

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// snapshotTally sums what each snapshot exported, keyed by its timestamp
// (every export of one snapshot carries the same one).
type snapshotTally struct {
	mu    sync.Mutex
	order []time.Time
	byTS  map[time.Time]*tally
}

type tally struct {
	series, packets, overflowPackets int64
}

func (s *snapshotTally) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (s *snapshotTally) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	for i := 0; i < ms.Len(); i++ {
		m := ms.At(i)
		if m.Type() != pmetric.MetricTypeSum {
			continue
		}
		dps := m.Sum().DataPoints()
		if dps.Len() == 0 {
			continue
		}
		ts := dps.At(0).Timestamp().AsTime()
		t, ok := s.byTS[ts]
		if !ok {
			t = &tally{}
			s.byTS[ts] = t
			s.order = append(s.order, ts)
		}
		switch m.Name() {
		case metricPackets:
			for j := 0; j < dps.Len(); j++ {
				t.series++
				t.packets += dps.At(j).IntValue()
			}
		case metricOverflowPackets:
			t.overflowPackets = dps.At(0).IntValue()
		}
	}
	return nil
}

func (s *snapshotTally) snapshots() ([]time.Time, map[time.Time]tally) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[time.Time]tally{}
	for ts, t := range s.byTS {
		out[ts] = *t
	}
	return append([]time.Time(nil), s.order...), out
}

// heapAfterGC returns the live heap after a garbage collection.
func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestSYNFloodThroughReceiver floods a receiver whose table holds 65536
// connections with 2 x 200,000 new ones: every packet is either in a
// connection's series or in the overflow sum, snapshots keep their
// interval during the flood, and the receiver's heap does not grow with
// the flood once the table is full.
func TestSYNFloodThroughReceiver(t *testing.T) {
	privtest.RequireRoot(t)
	const (
		table = 65536
		flood = 200_000
	)
	cfg := createDefaultConfig()
	cfg.MaxConnections = table
	cfg.CollectionInterval = 200 * time.Millisecond
	cfg.MinSnapshotInterval = 100 * time.Millisecond
	opts, _ := cfg.datapathOptions()
	dp, err := datapath.Load(opts)
	require.NoError(t, err)
	sink := &snapshotTally{byTS: map[time.Time]*tally{}}
	open := func(*Config, *zap.Logger) (flowSource, error) { return dp, nil }
	r, err := newReceiver(receivertest.NewNopSettings(NewFactory().Type()), cfg, sink, open)
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	stopped := false
	defer func() {
		if !stopped {
			assert.NoError(t, r.Shutdown(context.Background()))
		}
	}()

	send := func(from, to int) time.Duration {
		began := time.Now()
		for i := from; i < to; i++ {
			_, err := dp.Program().Run(&ebpf.RunOptions{Data: synFrame(i)})
			require.NoError(t, err)
		}
		return time.Since(began)
	}
	took := send(0, flood)
	time.Sleep(2 * cfg.CollectionInterval)
	heapFirst := heapAfterGC()
	took += send(flood, 2*flood)
	time.Sleep(2 * cfg.CollectionInterval)
	heapSecond := heapAfterGC()
	t.Logf("flood of %d new connections took %s; heap after the first half %d MiB, after the second %d MiB",
		2*flood, took, heapFirst>>20, heapSecond>>20)
	assert.Less(t, heapSecond, heapFirst+32<<20, "the receiver's heap grows with the flood")
	st, err := dp.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(2*flood-table), st.OverflowPackets)

	// The last snapshot is the one Shutdown takes: complete when it returns.
	stopped = true
	require.NoError(t, r.Shutdown(context.Background()))
	order, snaps := sink.snapshots()
	require.NotEmpty(t, order)
	for i := 1; i < len(order); i++ {
		gap := order[i].Sub(order[i-1])
		assert.Less(t, gap, 4*cfg.CollectionInterval, "snapshot %d came %s after the one before", i, gap)
	}
	last := snaps[order[len(order)-1]]
	assert.Equal(t, int64(table), last.series, "the table holds max_connections connections")
	assert.Equal(t, int64(2*flood), last.packets+last.overflowPackets, "counted + overflow = sent")
}
