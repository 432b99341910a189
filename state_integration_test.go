//go:build linux

package xdpflowreceiver

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestIntegrationReceiverStateSurvivesRestart runs a receiver with a state
// directory on the veth, shuts it down, sends traffic while none runs, and
// starts another: its exports carry everything sent, in one series with the
// first receiver's start time. A third with another grouping starts a new
// table and warns. With export_changed_only too: the second receiver's
// first snapshot reads the whole table, its next ones what packets listed.
func TestIntegrationReceiverStateSurvivesRestart(t *testing.T) {
	privtest.RequireRoot(t)
	t.Run("every-series", func(t *testing.T) { testStateSurvivesRestart(t, false) })
	t.Run("export-changed-only", func(t *testing.T) { testStateSurvivesRestart(t, true) })
}

func testStateSurvivesRestart(t *testing.T, changedOnly bool) {
	pair := netnstest.New(t)
	cfg := ritConfig("native")
	cfg.ExportChangedOnly = changedOnly
	cfg.StateDirectory = filepath.Join(privtest.MountBPFFS(t), "xdpflow")
	conn := iftNewUDP(t, pair, netnstest.SenderIPv4, netnstest.ReceiverIPv4, 40950, netnstest.ReceiverIface)

	first := new(consumertest.MetricsSink)
	r, logs := iftNewObserved(t, cfg, first, nil)
	require.NoError(t, ritStart(pair, r))
	conn.send(t, 16)
	iftWaitExport(t, first, conn)
	require.NoError(t, r.Shutdown(t.Context()))
	startOf := func(sink *consumertest.MetricsSink) time.Time { // in the latest export that has it
		all := sink.AllMetrics()
		for i := len(all) - 1; i >= 0; i-- {
			if points := pointsOf(all[i], metricPackets, int64(conn.conn.sport)); len(points) > 0 {
				require.Len(t, points, 1)
				return points[0].StartTimestamp().AsTime()
			}
		}
		t.Fatal("no export has the connection")
		return time.Time{}
	}
	started := startOf(first)
	xdp, attached := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface)
	require.True(t, attached, "the program stays attached between collectors")

	conn.send(t, 24) // counted while no receiver runs

	second := new(consumertest.MetricsSink)
	r2, logs2 := iftNewObserved(t, cfg, second, nil)
	require.NoError(t, ritStart(pair, r2))
	assert.Equal(t, 1, logs2.FilterMessageSnippet("Flow table taken over").Len())
	conn.send(t, 8)
	iftWaitExport(t, second, conn)
	assert.Equal(t, started, startOf(second), "the series keeps its start time")
	now, _ := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface)
	assert.NotEqual(t, xdp.ProgID, now.ProgID, "the second collector's program runs on the taken-over link")
	require.NoError(t, r2.Shutdown(t.Context()))

	cfg.Attributes = []string{attrSourceAddress}
	third := new(consumertest.MetricsSink)
	r3, logs3 := iftNewObserved(t, cfg, third, nil)
	require.NoError(t, ritStart(pair, r3))
	assert.Equal(t, 1, logs3.FilterMessageSnippet("Starting a new flow table").Len(), "another grouping: a new table, and a warning")
	require.NoError(t, r3.Shutdown(t.Context()))
	assert.Equal(t, 1, logs.FilterMessageSnippet("Flow table pinned").Len())
	t.Logf("%d packets %d bytes in one series across two collectors, started %v", conn.packets, conn.bytes, started)
}
