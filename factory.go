package xdpflowreceiver

import (
	"context"
	"runtime"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"
)

// typeStr is the name of the receiver in collector configurations.
const typeStr = "xdpflow"

// stability is the maturity of the metrics signal of this receiver.
const stability = component.StabilityLevelAlpha

// NewFactory returns the factory of the xdpflow receiver, for the
// collector's components list (ocb does this from builder-config.yaml).
func NewFactory() receiver.Factory {
	return receiver.NewFactory(
		component.MustNewType(typeStr),
		func() component.Config { return createDefaultConfig() },
		receiver.WithMetrics(createMetrics, stability),
	)
}

func createMetrics(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
	if err := platformError(runtime.GOOS, runtime.GOARCH); err != nil {
		return nil, err
	}
	return newReceiver(set, cfg.(*Config), next, openDatapath)
}
