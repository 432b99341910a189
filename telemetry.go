package xdpflowreceiver

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Causes of a snapshot, recorded as the "cause" attribute of
// otelcol_xdpflow_snapshots.
const (
	causeInterval = "interval"
	causeTrigger  = "trigger"
	causeShutdown = "shutdown"
)

// selfTelemetry is the receiver's own telemetry, reported through the
// collector's TelemetrySettings (e.g. its Prometheus endpoint on :8888).
type selfTelemetry struct {
	snapshots      metric.Int64Counter
	duration       metric.Float64Histogram
	exportFailures metric.Int64Counter
	readFailures   metric.Int64Counter
}

func newSelfTelemetry(set component.TelemetrySettings) (*selfTelemetry, error) {
	meter := set.MeterProvider.Meter(scopeName)
	var t selfTelemetry
	var errs [4]error
	t.snapshots, errs[0] = meter.Int64Counter("otelcol_xdpflow_snapshots",
		metric.WithDescription("Snapshots of the kernel flow table, by cause (interval, trigger, shutdown)."),
		metric.WithUnit("{snapshot}"))
	t.duration, errs[1] = meter.Float64Histogram("otelcol_xdpflow_snapshot_duration",
		metric.WithDescription("Time to read the flow table, evict idle connections and build the metrics."),
		metric.WithUnit("s"))
	t.exportFailures, errs[2] = meter.Int64Counter("otelcol_xdpflow_export_failures",
		metric.WithDescription("Snapshots the next consumer refused; their values are sent again with the next snapshot."),
		metric.WithUnit("{snapshot}"))
	t.readFailures, errs[3] = meter.Int64Counter("otelcol_xdpflow_read_failures",
		metric.WithDescription("Snapshots that failed to read the kernel flow table."),
		metric.WithUnit("{snapshot}"))
	return &t, errors.Join(errs[:]...)
}

func (t *selfTelemetry) recordSnapshot(cause string, took time.Duration) {
	ctx := context.Background()
	attrs := metric.WithAttributes(attribute.String("cause", cause))
	t.snapshots.Add(ctx, 1, attrs)
	t.duration.Record(ctx, took.Seconds(), attrs)
}
