package xdpflowreceiver

import (
	"context"
	"runtime"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"

	"github.com/xdpflow/xdpflowreceiver/internal/metadata"
)

// NewFactory returns the factory of the xdpflow receiver, for the
// collector's components list (ocb does this from builder-config.yaml).
func NewFactory() receiver.Factory {
	return receiver.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		receiver.WithMetrics(createMetrics, metadata.MetricsStability),
	)
}

func createMetrics(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
	if err := platformError(runtime.GOOS, runtime.GOARCH); err != nil {
		return nil, err
	}
	return newReceiver(set, cfg.(*Config), next, openDatapath)
}
