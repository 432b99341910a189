package xdpflowreceiver

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/xdpflow/xdpflowreceiver/internal/metadata"
)

// Causes of a snapshot, recorded as the "cause" attribute of
// otelcol_xdpflow_snapshots; metadata.yaml lists them.
var (
	causeInterval = metadata.AttributeCauseInterval.String()
	causeTrigger  = metadata.AttributeCauseTrigger.String()
	causeShutdown = metadata.AttributeCauseShutdown.String()
)

// Phases of a snapshot, recorded as the "phase" attribute of
// otelcol_xdpflow_snapshot_phase_duration.
var (
	phaseRead   = metadata.AttributePhaseRead.String()
	phaseEvict  = metadata.AttributePhaseEvict.String()
	phaseBuild  = metadata.AttributePhaseBuild.String()
	phaseExport = metadata.AttributePhaseExport.String()
)

// selfTelemetry is the receiver's own telemetry, reported through the
// collector's TelemetrySettings (e.g. its Prometheus endpoint on :8888).
// metadata.yaml defines its instruments.
type selfTelemetry struct {
	*metadata.TelemetryBuilder
}

func (t selfTelemetry) recordSnapshot(cause string, took time.Duration) {
	ctx := context.Background()
	attrs := metric.WithAttributes(attribute.String("cause", cause))
	t.XdpflowSnapshots.Add(ctx, 1, attrs)
	t.XdpflowSnapshotDuration.Record(ctx, took.Seconds(), attrs)
}

func (t selfTelemetry) recordPhase(ctx context.Context, phase string, took time.Duration) {
	t.XdpflowSnapshotPhaseDuration.Record(ctx, took.Seconds(), metric.WithAttributes(attribute.String("phase", phase)))
}

// recordTable records the flow table's capacity and the entries left in
// it after a snapshot's evictions.
func (t selfTelemetry) recordTable(ctx context.Context, capacity, entries int) {
	t.XdpflowFlowTableCapacity.Record(ctx, int64(capacity))
	t.XdpflowFlowTableEntries.Record(ctx, int64(entries))
}
