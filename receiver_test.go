package xdpflowreceiver

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// newTestReceiver builds a receiver on src whose kernel clock is
// fakeKernelClock.
func newTestReceiver(t *testing.T, cfg *Config, next consumer.Metrics, src flowSource) *xdpflowReceiver {
	t.Helper()
	set := receivertest.NewNopSettings(NewFactory().Type())
	open := func(*Config, *zap.Logger) (flowSource, error) { return src, nil }
	r, err := newReceiver(set, cfg, next, open)
	require.NoError(t, err)
	r.measureClock = fakeKernelClock
	return r
}

// fakeBoot is when the fake kernel clock read 0: a day before the tests
// started, so that "10 minutes ago" is a valid kernel time on a machine
// that booted a minute ago.
var fakeBoot = time.Now().Add(-24 * time.Hour)

// fakeKernelClock pairs the kernel clock of the fake sources with the wall
// clock: kernel time is the time since fakeBoot.
func fakeKernelClock() (datapath.ClockOffset, error) {
	return datapath.NewClockOffset(fakeBoot, 0), nil
}

func fastConfig() *Config {
	cfg := createDefaultConfig()
	cfg.Interfaces = []string{"eth0"} // what fakeSource attached
	cfg.CollectionInterval = 20 * time.Millisecond
	cfg.MinSnapshotInterval = 10 * time.Millisecond
	return cfg
}

// kernelNow returns the current time of fakeKernelClock in ns.
func kernelNow() uint64 {
	return uint64(time.Since(fakeBoot))
}

// sumValue returns the value of metric name for the point whose
// source.port is sport and whose start time is the latest, and how many
// points had that source port.
func sumValue(md pmetric.Metrics, name string, sport int64) (value int64, points int) {
	var latestStart pcommon.Timestamp
	matching := pointsOf(md, name, sport)
	for _, dp := range matching {
		if s := dp.StartTimestamp(); s >= latestStart {
			latestStart, value = s, dp.IntValue()
		}
	}
	return value, len(matching)
}

func TestShutdownWithoutStart(t *testing.T) {
	r := newTestReceiver(t, fastConfig(), consumertest.NewNop(), newFakeSource())
	require.NoError(t, r.Shutdown(context.Background()))
	require.NoError(t, r.Shutdown(context.Background()))
}

func TestStartFailureLeavesNothingRunning(t *testing.T) {
	set := receivertest.NewNopSettings(NewFactory().Type())
	open := func(*Config, *zap.Logger) (flowSource, error) {
		return nil, errors.New("attach xdp to eth9: interface not found")
	}
	r, err := newReceiver(set, fastConfig(), consumertest.NewNop(), open)
	require.NoError(t, err)
	err = r.Start(context.Background(), componenttest.NewNopHost())
	require.ErrorContains(t, err, "attach xdp to eth9: interface not found")
	require.NoError(t, r.Shutdown(context.Background()))
}

func TestStartTwiceFails(t *testing.T) {
	r := newTestReceiver(t, fastConfig(), consumertest.NewNop(), newFakeSource())
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.Error(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, r.Shutdown(context.Background()))
}

func TestIntervalSnapshotsAndFinalSnapshot(t *testing.T) {
	src := newFakeSource()
	now := kernelNow()
	src.put(testKey("198.51.100.1", 40000, 8080, datapath.TCP, 2), datapath.FlowValue{Packets: 3, Bytes: 300, FirstSeenNs: now, LastSeenNs: now})
	sink := new(consumertest.MetricsSink)
	r := newTestReceiver(t, fastConfig(), sink, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.Eventually(t, func() bool { return len(sink.AllMetrics()) >= 2 }, 5*time.Second, 5*time.Millisecond)

	// Counts move on; Shutdown must detach first, then export them.
	src.put(testKey("198.51.100.1", 40000, 8080, datapath.TCP, 2), datapath.FlowValue{Packets: 5, Bytes: 500, FirstSeenNs: now, LastSeenNs: now})
	require.NoError(t, r.Shutdown(context.Background()))
	calls := src.callLog()
	require.Equal(t, []string{"detach", "read", "close"}, calls[len(calls)-3:])

	all := sink.AllMetrics()
	last := all[len(all)-1]
	v, _ := sumValue(last, metricPackets, 40000)
	assert.Equal(t, int64(5), v)
	v, _ = sumValue(last, metricBytes, 40000)
	assert.Equal(t, int64(500), v)
	for _, md := range all {
		m := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0)
		require.Equal(t, metricPackets, m.Name())
		require.True(t, m.Sum().IsMonotonic())
		require.Equal(t, pmetric.AggregationTemporalityCumulative, m.Sum().AggregationTemporality())
	}
}

func TestTriggerBurstIsCoalesced(t *testing.T) {
	src := newFakeSource()
	sink := new(consumertest.MetricsSink)
	cfg := createDefaultConfig()
	cfg.CollectionInterval = time.Hour // only triggers take snapshots
	cfg.MinSnapshotInterval = 100 * time.Millisecond
	r := newTestReceiver(t, cfg, sink, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))

	began := time.Now()
	for i := 0; i < 500; i++ {
		src.events <- datapath.TriggerEvent{NewConnections: uint64(5 * (i + 1))}
		time.Sleep(time.Millisecond)
	}
	burst := time.Since(began)
	// The trigger left pending by the burst is served within one interval.
	time.Sleep(2 * cfg.MinSnapshotInterval)
	snapshots := len(sink.AllMetrics())
	require.NoError(t, r.Shutdown(context.Background()))

	maxSnapshots := int(burst/cfg.MinSnapshotInterval) + 2 // ceil(burst/min)+1
	assert.GreaterOrEqual(t, snapshots, 2, "the burst must cause snapshots")
	assert.LessOrEqual(t, snapshots, maxSnapshots, "burst of %s", burst)
}

func TestIdleConnectionEvictedOnceWithFinalCounts(t *testing.T) {
	src := newFakeSource()
	now := kernelNow()
	idleKey := testKey("198.51.100.2", 40001, 8080, datapath.TCP, 2)
	activeKey := testKey("198.51.100.3", 40002, 8080, datapath.TCP, 2)
	old := now - uint64(10*time.Minute)
	src.put(idleKey, datapath.FlowValue{Packets: 20, Bytes: 2000, FirstSeenNs: old, LastSeenNs: old})
	src.put(activeKey, datapath.FlowValue{Packets: 1, Bytes: 100, FirstSeenNs: now, LastSeenNs: now})

	sink := new(consumertest.MetricsSink)
	r := newTestReceiver(t, fastConfig(), sink, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.Eventually(t, func() bool { return len(sink.AllMetrics()) >= 3 }, 5*time.Second, 5*time.Millisecond)

	// The connection comes back: a new kernel entry, a new series.
	back := kernelNow()
	src.put(idleKey, datapath.FlowValue{Packets: 2, Bytes: 150, FirstSeenNs: back, LastSeenNs: back})
	n := len(sink.AllMetrics())
	require.Eventually(t, func() bool { return len(sink.AllMetrics()) >= n+2 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))

	all := sink.AllMetrics()
	v, points := sumValue(all[0], metricPackets, 40001)
	assert.Equal(t, int64(20), v, "final counts exported when evicted")
	assert.Equal(t, 1, points)
	_, points = sumValue(all[1], metricPackets, 40001)
	assert.Equal(t, 0, points, "an evicted connection is exported once")
	v, _ = sumValue(all[len(all)-1], metricPackets, 40001)
	assert.Equal(t, int64(2), v, "the returning connection is a new series")
	assert.Equal(t, 1, src.evictions)
}

// flakyConsumer refuses the first failures calls, then accepts.
type flakyConsumer struct {
	consumertest.MetricsSink
	mu       sync.Mutex
	failures int
}

func (c *flakyConsumer) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error {
	c.mu.Lock()
	if c.failures > 0 {
		c.failures--
		c.mu.Unlock()
		return errors.New("backend unavailable")
	}
	c.mu.Unlock()
	return c.MetricsSink.ConsumeMetrics(ctx, md)
}

func TestDownstreamFailureKeepsFinalCountsOfEvictedConnections(t *testing.T) {
	src := newFakeSource()
	now := kernelNow()
	old := now - uint64(10*time.Minute)
	src.put(testKey("198.51.100.2", 40001, 8080, datapath.TCP, 2), datapath.FlowValue{Packets: 20, Bytes: 2000, FirstSeenNs: old, LastSeenNs: old})
	src.put(testKey("198.51.100.3", 40002, 8080, datapath.TCP, 2), datapath.FlowValue{Packets: 1, Bytes: 100, FirstSeenNs: now, LastSeenNs: now})

	next := &flakyConsumer{failures: 3}
	r := newTestReceiver(t, fastConfig(), next, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.Eventually(t, func() bool { return len(next.AllMetrics()) >= 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))

	first := next.AllMetrics()[0]
	v, _ := sumValue(first, metricPackets, 40001)
	assert.Equal(t, int64(20), v, "evicted during the outage, exported after it")
	v, _ = sumValue(first, metricPackets, 40002)
	assert.Equal(t, int64(1), v)
	_, points := sumValue(next.AllMetrics()[1], metricPackets, 40001)
	assert.Equal(t, 0, points, "sent once accepted, then forgotten")
}

// gatedConsumer refuses every export while closed, counting the refusals.
type gatedConsumer struct {
	consumertest.MetricsSink
	mu      sync.Mutex
	open    bool
	refused int
}

func (c *gatedConsumer) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error {
	c.mu.Lock()
	if !c.open {
		c.refused++
		c.mu.Unlock()
		return errors.New("backend unavailable")
	}
	c.mu.Unlock()
	return c.MetricsSink.ConsumeMetrics(ctx, md)
}

func (c *gatedConsumer) refusals() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}

func (c *gatedConsumer) setOpen() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open = true
}

// A connection evicted while exports fail, and back before they recover,
// is exported as two series in one snapshot: the ended one first, the new
// one a millisecond later, so Prometheus never sees two samples of one
// label set at one timestamp.
func TestCarriedFinalAndReturningSeriesHaveDistinctTimestamps(t *testing.T) {
	src := newFakeSource()
	idleKey := testKey("198.51.100.2", 40001, 8080, datapath.TCP, 2)
	old := kernelNow() - uint64(10*time.Minute)
	src.put(idleKey, datapath.FlowValue{Packets: 20, Bytes: 2000, FirstSeenNs: old, LastSeenNs: old})

	next := &gatedConsumer{}
	r := newTestReceiver(t, fastConfig(), next, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.Eventually(t, func() bool { return next.refusals() >= 1 }, 5*time.Second, 5*time.Millisecond)
	back := kernelNow()
	src.put(idleKey, datapath.FlowValue{Packets: 2, Bytes: 150, FirstSeenNs: back, LastSeenNs: back})
	refused := next.refusals()
	require.Eventually(t, func() bool { return next.refusals() > refused }, 5*time.Second, 5*time.Millisecond)
	next.setOpen()
	require.Eventually(t, func() bool { return len(next.AllMetrics()) >= 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))

	for _, name := range []string{metricPackets, metricBytes} {
		points := pointsOf(next.AllMetrics()[0], name, 40001)
		require.Len(t, points, 2, name)
		final, returning := points[0], points[1]
		assert.Equal(t, map[string]int64{metricPackets: 20, metricBytes: 2000}[name], final.IntValue(), "%s: the ended series first", name)
		assert.Equal(t, map[string]int64{metricPackets: 2, metricBytes: 150}[name], returning.IntValue(), name)
		assert.Less(t, final.StartTimestamp(), returning.StartTimestamp(), name)
		assert.Equal(t, time.Millisecond, returning.Timestamp().AsTime().Sub(final.Timestamp().AsTime()), name)
	}
}

// pointsOf returns, in export order, the points of metric name whose
// source.port is sport (every point if sport is negative).
func pointsOf(md pmetric.Metrics, name string, sport int64) []pmetric.NumberDataPoint {
	var points []pmetric.NumberDataPoint
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		sms := rms.At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				if ms.At(k).Name() != name {
					continue
				}
				dps := ms.At(k).Sum().DataPoints()
				for l := 0; l < dps.Len(); l++ {
					if p, ok := dps.At(l).Attributes().Get(attrSourcePort); sport < 0 || ok && p.Int() == sport {
						points = append(points, dps.At(l))
					}
				}
			}
		}
	}
	return points
}

func TestReadFailureIsNotFatal(t *testing.T) {
	src := newFakeSource()
	src.readErr = errors.New("map read failed")
	sink := new(consumertest.MetricsSink)
	r := newTestReceiver(t, fastConfig(), sink, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	time.Sleep(100 * time.Millisecond)
	src.mu.Lock()
	src.readErr = nil
	src.mu.Unlock()
	require.Eventually(t, func() bool { return len(sink.AllMetrics()) >= 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))
}

func TestIdleBefore(t *testing.T) {
	assert.Equal(t, uint64(0), idleBefore(uint64(time.Minute), 5*time.Minute), "host up for less than the timeout")
	assert.Equal(t, uint64(0), idleBefore(0, 5*time.Minute), "kernel clock at 0")
	assert.Equal(t, uint64(0), idleBefore(uint64(5*time.Minute), 5*time.Minute), "host up for exactly the timeout")
	assert.Equal(t, uint64(time.Minute), idleBefore(uint64(6*time.Minute), 5*time.Minute))
}

// On a host that booted a minute ago, "idle_timeout ago" is before boot:
// nothing is idle, even a connection stamped at boot, and nothing wraps
// around into an eviction of every connection.
func TestFreshlyBootedHostEvictsNothing(t *testing.T) {
	booted := time.Now().Add(-time.Minute)
	src := newFakeSource()
	atBoot := testKey("198.51.100.2", 40001, 8080, datapath.TCP, 2)
	src.put(atBoot, datapath.FlowValue{Packets: 7, Bytes: 700, FirstSeenNs: 0, LastSeenNs: 0})
	sink := new(consumertest.MetricsSink)
	r := newTestReceiver(t, fastConfig(), sink, src)
	r.measureClock = func() (datapath.ClockOffset, error) { return datapath.NewClockOffset(booted, 0), nil }
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.Eventually(t, func() bool { return len(sink.AllMetrics()) >= 3 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))

	assert.Equal(t, 0, src.evictions)
	for _, md := range sink.AllMetrics() {
		v, points := sumValue(md, metricPackets, 40001)
		assert.Equal(t, 1, points)
		assert.Equal(t, int64(7), v)
	}
}

func TestFactory(t *testing.T) {
	f := NewFactory()
	assert.Equal(t, "xdpflow", f.Type().String())
	assert.NoError(t, componenttest.CheckConfigStruct(f.CreateDefaultConfig()))
	r, err := f.CreateMetrics(context.Background(), receivertest.NewNopSettings(f.Type()), f.CreateDefaultConfig(), consumertest.NewNop())
	require.NoError(t, err)
	require.NoError(t, r.Shutdown(context.Background()))
}

// A refused part ends the snapshot: while the next consumer refuses, one
// part is built and offered per snapshot, not all of them.
func TestRefusedPartEndsTheSnapshot(t *testing.T) {
	src := newFakeSource()
	now := kernelNow()
	const n = 2*maxFlowsPerExport + 100
	for i := range n {
		k := testKey("198.51.100.1", uint16(i), 8080, datapath.UDP, 2)
		k.SrcAddr[15] = byte(i >> 16)
		src.put(k, datapath.FlowValue{Packets: 1, Bytes: 100, FirstSeenNs: now, LastSeenNs: now})
	}
	next := &gatedConsumer{}
	cfg := createDefaultConfig()
	cfg.CollectionInterval = time.Hour // only the snapshots taken below
	r := newTestReceiver(t, cfg, next, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	for range 3 {
		r.takeSnapshot(context.Background(), causeTrigger)
	}
	assert.Equal(t, 3, next.refusals(), "one refused part per snapshot")
	next.setOpen()
	r.takeSnapshot(context.Background(), causeTrigger)
	require.NoError(t, r.Shutdown(context.Background()))
	assert.Len(t, next.AllMetrics(), 6, "every part of the snapshot after the outage, and of the one at shutdown")
}

func TestLargeSnapshotIsExportedInParts(t *testing.T) {
	src := newFakeSource()
	now := kernelNow()
	const n = 2*maxFlowsPerExport + 100
	for i := 0; i < n; i++ {
		k := testKey("198.51.100.1", uint16(i), 8080, datapath.UDP, 2)
		k.SrcAddr[15] = byte(i >> 16)
		src.put(k, datapath.FlowValue{Packets: 1, Bytes: 100, FirstSeenNs: now, LastSeenNs: now})
	}
	sink := new(consumertest.MetricsSink)
	cfg := createDefaultConfig()
	cfg.CollectionInterval = time.Hour // only the final snapshot
	r := newTestReceiver(t, cfg, sink, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, r.Shutdown(context.Background()))

	all := sink.AllMetrics()
	require.Len(t, all, 3)
	var flows, totals int
	for _, md := range all {
		ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
		flows += ms.At(0).Sum().DataPoints().Len()
		require.Equal(t, ms.At(0).Sum().DataPoints().Len(), ms.At(1).Sum().DataPoints().Len())
		if ms.Len() > 2 {
			totals++
		}
	}
	assert.Equal(t, n, flows, "every connection exported once")
	assert.Equal(t, 1, totals, "receiver-wide metrics exported once per snapshot")
}

// Counts made on a deleted interface keep being exported (the deletion is
// logged where it is seen, logInterfaceEvent).
func TestExportsContinueWhileAnInterfaceIsGone(t *testing.T) {
	src := newFakeSource()
	now := kernelNow()
	src.put(testKey("198.51.100.1", 40000, 8080, datapath.TCP, 2), datapath.FlowValue{Packets: 3, Bytes: 300, FirstSeenNs: now, LastSeenNs: now})
	src.gone = []string{"eth0"}
	sink := new(consumertest.MetricsSink)
	r := newTestReceiver(t, fastConfig(), sink, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.Eventually(t, func() bool { return len(sink.AllMetrics()) >= 3 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))

	for i, md := range sink.AllMetrics() {
		v, _ := sumValue(md, metricPackets, 40000)
		assert.Equal(t, int64(3), v, "export %d", i)
	}
}

func TestSelfTelemetry(t *testing.T) {
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	src := newFakeSource()
	set := receivertest.NewNopSettings(NewFactory().Type())
	set.TelemetrySettings = tel.NewTelemetrySettings()
	next := &flakyConsumer{failures: 1}
	r, err := newReceiver(set, fastConfig(), next, func(*Config, *zap.Logger) (flowSource, error) { return src, nil })
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.Eventually(t, func() bool { return len(next.AllMetrics()) >= 2 }, 5*time.Second, 5*time.Millisecond)
	src.events <- datapath.TriggerEvent{NewConnections: 5}
	require.NoError(t, r.Shutdown(context.Background()))

	snapshots, err := tel.GetMetric("otelcol_xdpflow_snapshots")
	require.NoError(t, err)
	byCause := map[string]int64{}
	for _, dp := range snapshots.Data.(metricdata.Sum[int64]).DataPoints {
		cause, _ := dp.Attributes.Value("cause")
		byCause[cause.AsString()] = dp.Value
	}
	assert.GreaterOrEqual(t, byCause[causeInterval], int64(3), "first refused, then two accepted")
	assert.Equal(t, int64(1), byCause[causeShutdown])

	duration, err := tel.GetMetric("otelcol_xdpflow_snapshot_duration")
	require.NoError(t, err)
	var recorded uint64
	for _, dp := range duration.Data.(metricdata.Histogram[float64]).DataPoints {
		recorded += dp.Count
	}
	assert.Equal(t, uint64(byCause[causeInterval]+byCause[causeTrigger]+byCause[causeShutdown]), recorded)

	failures, err := tel.GetMetric("otelcol_xdpflow_export_failures")
	require.NoError(t, err)
	assert.Equal(t, int64(1), failures.Data.(metricdata.Sum[int64]).DataPoints[0].Value)

	phases, err := tel.GetMetric("otelcol_xdpflow_snapshot_phase_duration")
	require.NoError(t, err)
	byPhase := map[string]uint64{}
	for _, dp := range phases.Data.(metricdata.Histogram[float64]).DataPoints {
		phase, _ := dp.Attributes.Value("phase")
		byPhase[phase.AsString()] = dp.Count
	}
	assert.Equal(t, map[string]uint64{phaseRead: recorded, phaseEvict: recorded, phaseBuild: recorded, phaseExport: recorded}, byPhase,
		"every phase of every snapshot")
	for name, want := range map[string]int64{
		"otelcol_xdpflow_flow_table_capacity": int64(fastConfig().MaxConnections),
		"otelcol_xdpflow_flow_table_entries":  int64(len(src.table)),
	} {
		m, err := tel.GetMetric(name)
		require.NoError(t, err)
		assert.Equal(t, want, m.Data.(metricdata.Gauge[int64]).DataPoints[0].Value, name)
	}
}

// Final counts that wait longer than max_connections of them can are
// dropped, and counted.
func TestDroppedFinalCountsAreCounted(t *testing.T) {
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	set := receivertest.NewNopSettings(NewFactory().Type())
	set.TelemetrySettings = tel.NewTelemetrySettings()
	cfg := fastConfig()
	cfg.MaxConnections = 2
	r, err := newReceiver(set, cfg, &gatedConsumer{}, func(*Config, *zap.Logger) (flowSource, error) { return newFakeSource(), nil })
	require.NoError(t, err)
	for i := range 5 {
		r.evicted.Append(testKey("198.51.100.1", uint16(40000+i), 8080, datapath.UDP, 2), datapath.FlowValue{Packets: 1})
	}
	r.boundEvicted(context.Background())
	assert.Equal(t, 2, r.evicted.Len(), "the newest max_connections kept")
	assert.Equal(t, uint16(40003), r.evicted.Keys[0].SrcPort)
	dropped, err := tel.GetMetric("otelcol_xdpflow_evicted_dropped")
	require.NoError(t, err)
	assert.Equal(t, int64(3), dropped.Data.(metricdata.Sum[int64]).DataPoints[0].Value)
}

// Snapshots taken back to back are stamped at least a millisecond apart,
// also after a snapshot that stamped a returning series a millisecond
// late, so that Prometheus never gets two samples of a series within its
// millisecond resolution.
func TestBackToBackSnapshotsAreAMillisecondApart(t *testing.T) {
	src := newFakeSource()
	now := kernelNow()
	src.put(testKey("198.51.100.3", 40002, 8080, datapath.TCP, 2), datapath.FlowValue{Packets: 1, Bytes: 100, FirstSeenNs: now, LastSeenNs: now})
	cfg := createDefaultConfig()
	cfg.CollectionInterval = time.Hour // only the snapshots taken below
	sink := new(consumertest.MetricsSink)
	r := newTestReceiver(t, cfg, sink, src)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	// As after a failed export that left a final count of a connection
	// that came back: its new series is stamped a millisecond late.
	r.evicted.Append(testKey("198.51.100.3", 40002, 8080, datapath.TCP, 2), datapath.FlowValue{Packets: 5, Bytes: 500, FirstSeenNs: now - 1e9, LastSeenNs: now - 1e9})
	for range 3 {
		r.takeSnapshot(context.Background(), causeTrigger)
	}
	require.NoError(t, r.Shutdown(context.Background()))

	var stamps []time.Time
	for _, md := range sink.AllMetrics() {
		for _, p := range pointsOf(md, metricPackets, 40002) {
			stamps = append(stamps, p.Timestamp().AsTime())
		}
	}
	require.Len(t, stamps, 5, "2 series in the first snapshot, 1 in each of the next two and in the one at shutdown")
	assert.Equal(t, time.Millisecond, stamps[1].Sub(stamps[0]), "the returning series, a millisecond after the ended one")
	for i := 2; i < len(stamps); i++ {
		assert.GreaterOrEqual(t, stamps[i].Sub(stamps[i-1]), time.Millisecond, "snapshot %d", i-1)
	}
}
