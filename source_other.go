//go:build !linux

package xdpflowreceiver

import (
	"runtime"

	"go.uber.org/zap"
)

// openDatapath is never reached off Linux (the factory refuses to create
// the receiver); it fails like the factory for safety.
func openDatapath(*Config, *zap.Logger) (flowSource, error) {
	return nil, platformError(runtime.GOOS, runtime.GOARCH)
}
