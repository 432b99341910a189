//go:build !linux

package xdpflowreceiver

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"
)

func TestCreateMetricsFailsOffLinux(t *testing.T) {
	f := NewFactory()
	_, err := f.CreateMetrics(context.Background(), receivertest.NewNopSettings(f.Type()), f.CreateDefaultConfig(), consumertest.NewNop())
	require.ErrorContains(t, err, "the xdpflow receiver needs Linux 6.1+")
}
