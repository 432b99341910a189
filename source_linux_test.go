package xdpflowreceiver

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

func TestLogInterfaceEvent(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.Interfaces = []string{"eth0", "veth*"}
	for _, tt := range []struct {
		name  string
		ev    datapath.InterfaceEvent
		level zapcore.Level
		msg   string
	}{
		{"attached", datapath.InterfaceEvent{Interface: "veth1", Attached: true, Mode: datapath.AttachNative}, zapcore.InfoLevel, "XDP program attached"},
		{"named deleted", datapath.InterfaceEvent{Interface: "eth0"}, zapcore.WarnLevel, "Interface deleted: its XDP program is gone; counts already made on it are still exported, and the program is attached again when the interface comes back"},
		{"matched deleted", datapath.InterfaceEvent{Interface: "veth1"}, zapcore.InfoLevel, "Interface deleted: its XDP program is gone; counts already made on it are still exported"},
		{"attach failed", datapath.InterfaceEvent{Interface: "veth2", Err: errors.New("busy")}, zapcore.ErrorLevel, "Failed to attach the XDP program to an interface; its traffic is not counted"},
		{"watch failed", datapath.InterfaceEvent{Err: errors.New("ENOBUFS")}, zapcore.WarnLevel, "Watching interfaces failed; subscribing again"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			logInterfaceEvent(zap.New(core), cfg, datapath.AttachAuto, tt.ev)
			require.Equal(t, 1, logs.Len())
			e := logs.All()[0]
			assert.Equal(t, tt.level, e.Level)
			assert.Equal(t, tt.msg, e.Message)
			if tt.ev.Interface != "" {
				assert.Equal(t, tt.ev.Interface, e.ContextMap()["interface"])
			}
		})
	}
}
