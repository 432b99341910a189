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
