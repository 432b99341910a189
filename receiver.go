package xdpflowreceiver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receiverhelper"
	"go.uber.org/zap"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
	"github.com/xdpflow/xdpflowreceiver/internal/metadata"
)

// clockStepThreshold is how far the wall clock must move against boot
// time before start timestamps follow it. Below it the offset stays fixed,
// so every export of a series carries the same start timestamp.
const clockStepThreshold = time.Second

// xdpflowReceiver owns the datapath and exports its snapshots.
type xdpflowReceiver struct {
	cfg       *Config
	set       receiver.Settings
	next      consumer.Metrics
	open      openFunc
	obsrecv   *receiverhelper.ObsReport
	telemetry selfTelemetry
	// measureClock pairs the kernel clock with the wall clock; tests
	// replace it with a fixed pairing, so that they never depend on uptime.
	measureClock func() (datapath.ClockOffset, error)

	// mu guards the lifecycle fields below.
	mu       sync.Mutex
	src      flowSource
	cancel   context.CancelFunc
	loopDone chan struct{}
	stopped  bool

	// Owned by the event loop until it ends, then by Shutdown.
	builder   metricsBuilder
	flows     datapath.FlowTable
	evicted   datapath.FlowTable // exported for the last time, until accepted
	idleKeys  []datapath.FlowKey
	lastTaken time.Time
	// lastStamp is the latest Timestamp the previous snapshot used.
	lastStamp time.Time
	health    healthReporter
	// changed is nil unless export_changed_only.
	changed *changedTracker
}

func newReceiver(set receiver.Settings, cfg *Config, next consumer.Metrics, open openFunc) (*xdpflowReceiver, error) {
	cfg = cfg.forInstance(set.ID)
	obsrecv, err := receiverhelper.NewObsReport(receiverhelper.ObsReportSettings{
		ReceiverID:             set.ID,
		Transport:              "xdp",
		ReceiverCreateSettings: set,
	})
	if err != nil {
		return nil, fmt.Errorf("create obsreport: %w", err)
	}
	tel, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, fmt.Errorf("create self-telemetry: %w", err)
	}
	return &xdpflowReceiver{
		cfg: cfg, set: set, next: next, open: open,
		obsrecv: obsrecv, telemetry: selfTelemetry{tel}, measureClock: datapath.MeasureClockOffset,
		changed: newChangedTracker(cfg),
		builder: newMetricsBuilder(cfg, set.BuildInfo.Version),
	}, nil
}

// Start loads the XDP program, attaches it to every configured interface
// and starts the snapshot loop. If any step fails, what was done is undone.
func (r *xdpflowReceiver) Start(_ context.Context, host component.Host) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.src != nil || r.stopped {
		return errors.New("xdpflow receiver: Start called twice or after Shutdown")
	}
	src, err := r.open(r.cfg, r.set.Logger)
	if err != nil {
		return fmt.Errorf("xdpflow receiver: %w", err)
	}
	clock, err := r.measureClock()
	if err != nil {
		return errors.Join(fmt.Errorf("xdpflow receiver: %w", err), src.Close())
	}
	r.src = src
	r.health.host = host
	r.builder.begin(clock, src.State())

	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.loopDone = make(chan struct{})
	go r.loop(ctx)
	return nil
}

// Shutdown stops the loop, detaches the program so counts stop moving,
// exports a final snapshot and releases the datapath. It is safe without
// Start and when called twice.
func (r *xdpflowReceiver) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil
	}
	r.stopped = true
	defer r.telemetry.Shutdown()
	if r.src == nil {
		return nil
	}
	r.cancel()
	<-r.loopDone
	err := r.src.DetachAll()
	r.takeSnapshot(ctx, causeShutdown)
	r.flows = datapath.FlowTable{} // may be the tracker's memory
	r.changed.free()
	err = errors.Join(err, r.src.Close())
	// Drop the datapath: its memory-mapped global variables are released
	// by the garbage collector, and with them their kernel maps.
	r.src = nil
	return err
}

// loop takes a snapshot every collection_interval and on trigger events,
// at most one trigger snapshot per min_snapshot_interval: a trigger that
// arrives sooner is served when the interval ends, unless a snapshot was
// taken meanwhile.
func (r *xdpflowReceiver) loop(ctx context.Context) {
	defer close(r.loopDone)
	ticker := time.NewTicker(r.cfg.CollectionInterval)
	defer ticker.Stop()
	deferred := time.NewTimer(0)
	<-deferred.C
	defer deferred.Stop()
	var pendingSince time.Time // zero when no trigger waits
	events := r.src.Events()

	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			r.takeSnapshot(ctx, causeInterval)
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if !pendingSince.IsZero() {
				continue // already scheduled
			}
			if wait := r.cfg.MinSnapshotInterval - time.Since(r.lastTaken); wait > 0 {
				pendingSince = time.Now()
				deferred.Reset(wait)
				continue
			}
			r.takeSnapshot(ctx, causeTrigger)
		case <-deferred.C:
			if r.lastTaken.Before(pendingSince) {
				r.takeSnapshot(ctx, causeTrigger)
			}
			pendingSince = time.Time{}
		}
	}
}

// takeSnapshot reads the flow table, evicts idle connections and exports
// everything, at most maxFlowsPerExport connections per export. Errors are
// logged and counted; they never stop the receiver.
func (r *xdpflowReceiver) takeSnapshot(ctx context.Context, cause string) {
	began := time.Now()
	r.lastTaken = began
	s, err := r.collect(ctx)
	if cause != causeShutdown {
		r.health.report(snapshotHealth(err, r.missingInterfaces(ctx)))
	}
	if err != nil {
		r.telemetry.XdpflowReadFailures.Add(ctx, 1)
		r.set.Logger.Error("Failed to read the XDP flow table", zap.String("cause", cause), zap.Error(err))
		return
	}
	var failed error
	total := s.flowCount()
	// After a refused part the rest of the snapshot is not built: the
	// next snapshot carries every value again, so nothing is lost and
	// memory is not spent on parts that would be refused too.
	var building, exporting time.Duration
	for from := 0; failed == nil && (from == 0 || from < total); from += maxFlowsPerExport {
		built := time.Now()
		md := r.builder.build(&s, from, min(from+maxFlowsPerExport, total))
		exported := time.Now()
		failed = r.export(ctx, md)
		building += exported.Sub(built)
		exporting += time.Since(exported)
	}
	r.telemetry.recordPhase(ctx, phaseBuild, building)
	r.telemetry.recordPhase(ctx, phaseExport, exporting)
	r.telemetry.recordTable(ctx, r.cfg.MaxConnections, s.connections)
	r.telemetry.recordSnapshot(cause, time.Since(began))
	if failed != nil {
		r.telemetry.XdpflowExportFailures.Add(ctx, 1)
		r.set.Logger.Warn("Next consumer refused (part of) the snapshot; evicted connections are sent again with the next one",
			zap.String("cause", cause), zap.Int("connections", total), zap.Error(failed))
		r.boundEvicted(ctx)
		r.changed.refused(&r.flows)
		return
	}
	r.evicted.Reset()
	r.changed.accept()
}

// export hands md to the next consumer, recording the outcome.
func (r *xdpflowReceiver) export(ctx context.Context, md pmetric.Metrics) error {
	points := md.DataPointCount()
	obsCtx := r.obsrecv.StartMetricsOp(ctx)
	err := r.next.ConsumeMetrics(obsCtx, md)
	r.obsrecv.EndMetricsOp(obsCtx, metadata.Type.String(), points, err)
	return err
}

// collect reads the kernel table and moves idle connections out of it.
//
// Eviction loses no count: the final values Datapath.Evict returns, not
// the ones read before, are exported ("Lossless eviction" in bpf/xdpflow.c
// says why). Final values stay in r.evicted until the next consumer accepts
// them, so a failing export does not lose them either.
func (r *xdpflowReceiver) collect(ctx context.Context) (snapshot, error) {
	r.waitForNextStamp()
	r.learnInterfaceNames()
	clock, err := r.measureClock()
	if err != nil {
		return snapshot{}, err
	}
	if d := clock.Sub(r.builder.clock); d > clockStepThreshold || d < -clockStepThreshold {
		r.set.Logger.Warn("Wall clock stepped; start timestamps follow it", zap.Duration("step", d))
		r.builder.clock = clock
	}
	read := time.Now()
	readNs := clock.KernelNs(read)
	idle := idleBefore(readNs, r.cfg.IdleTimeout)
	entries, err := r.readTable(idle)
	if err != nil {
		return snapshot{}, err
	}
	now := time.Now()
	r.telemetry.recordPhase(ctx, phaseRead, now.Sub(read))
	carried := r.evicted.Len() // final counts a failed export left
	if err := r.src.Evict(r.idleKeys, &r.evicted); err != nil {
		r.set.Logger.Warn("Failed to evict idle connections; they stay in the flow table", zap.Error(err))
	}
	if r.changed != nil {
		r.changed.evicted(r.evicted.Keys[carried:])
	}
	r.telemetry.recordPhase(ctx, phaseEvict, time.Since(now))
	stats, err := r.src.Stats()
	if err != nil {
		return snapshot{}, err
	}
	connections := entries - len(r.idleKeys)
	s := snapshot{time: now, flows: &r.flows, evicted: &r.evicted, stats: stats, connections: connections}
	s.later = laterSeries(&s, carried)
	r.lastStamp = now
	for _, n := range s.later {
		r.lastStamp = latest(r.lastStamp, now.Add(time.Duration(n)*seriesStep))
	}
	return s, nil
}

// readTable puts the connections to export in r.flows and the idle ones
// (last seen before idleBefore), to evict, in r.idleKeys: with
// export_changed_only, those the tracker selects after reading the
// changed entries; else every entry of the kernel table. It returns how
// many entries the table holds.
func (r *xdpflowReceiver) readTable(idleBefore uint64) (entries int, err error) {
	if r.changed != nil {
		err = r.changed.collect(r.src, idleBefore, &r.flows, &r.idleKeys)
		return r.changed.len(), err
	}
	if err := r.src.ReadFlows(&r.flows); err != nil {
		return 0, err
	}
	entries = r.flows.Len()
	r.moveIdle(idleBefore)
	return entries, nil
}

// waitForNextStamp returns once the previous snapshot's latest timestamp
// is seriesStep ago (at once, unless snapshots follow each other within a
// few ms, e.g. an interval tick right after a trigger snapshot), so that
// no series gets two samples within one millisecond, Prometheus's
// resolution: it would reject the second as a duplicate.
func (r *xdpflowReceiver) waitForNextStamp() {
	if wait := time.Until(r.lastStamp.Add(seriesStep)); wait > 0 {
		time.Sleep(wait)
	}
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// learnInterfaceNames adds the interfaces attached since the last
// snapshot to the names flows are exported with.
func (r *xdpflowReceiver) learnInterfaceNames() {
	for idx, name := range r.src.InterfaceNames() {
		r.builder.ifnames[uint32(idx)] = name
	}
}

// missingInterfaces records how many interfaces the program is attached
// to, and returns the named interfaces it is not attached to.
func (r *xdpflowReceiver) missingInterfaces(ctx context.Context) []string {
	attached, gone := r.src.Attached(), r.src.Gone()
	r.telemetry.XdpflowInterfacesAttached.Record(ctx, int64(len(attached)-len(gone)))
	return r.cfg.missingInterfaces(attached, gone)
}

// idleBefore returns the kernel time before which a connection's last
// packet makes it idle; 0 (nothing idle) while the host has been up for
// less than the timeout.
func idleBefore(kernelNow uint64, timeout time.Duration) uint64 {
	if kernelNow < uint64(timeout) {
		return 0
	}
	return kernelNow - uint64(timeout)
}

// moveIdle moves the keys of flows last seen before idleBefore (kernel
// ns) from r.flows to r.idleKeys.
func (r *xdpflowReceiver) moveIdle(idleBefore uint64) {
	r.idleKeys = r.idleKeys[:0]
	kept := 0
	for i := range r.flows.Keys {
		if r.flows.Values[i].LastSeenNs < idleBefore {
			r.idleKeys = append(r.idleKeys, r.flows.Keys[i])
			continue
		}
		r.flows.Keys[kept] = r.flows.Keys[i]
		r.flows.Values[kept] = r.flows.Values[i]
		kept++
	}
	r.flows.Keys = r.flows.Keys[:kept]
	r.flows.Values = r.flows.Values[:kept]
}

// boundEvicted keeps at most max_connections evicted flows waiting for a
// successful export, dropping the oldest, so a consumer that fails for
// long cannot grow memory without bound.
func (r *xdpflowReceiver) boundEvicted(ctx context.Context) {
	excess := r.evicted.Len() - r.cfg.MaxConnections
	if excess <= 0 {
		return
	}
	r.telemetry.XdpflowEvictedDropped.Add(ctx, int64(excess))
	r.set.Logger.Error("Dropping final counts of evicted connections: the next consumer has refused them for too long",
		zap.Int("dropped_connections", excess))
	r.evicted.Keys = append(r.evicted.Keys[:0], r.evicted.Keys[excess:]...)
	r.evicted.Values = append(r.evicted.Values[:0], r.evicted.Values[excess:]...)
}
