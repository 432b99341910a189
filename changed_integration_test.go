//go:build linux

package xdpflowreceiver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestIntegrationReceiverExportsChangedOnly runs the real receiver with
// export_changed_only on the veth: packets list the entries they change,
// so a connection with packets is in every export and an idle one only
// once in every unchanged_export_interval (10 snapshots here), with its
// exact cumulative counts, taken from the receiver's memory.
func TestIntegrationReceiverExportsChangedOnly(t *testing.T) {
	privtest.RequireRoot(t)
	pair := netnstest.New(t)
	cfg := ritConfig("native")
	cfg.CollectionInterval = minInterval
	cfg.MinSnapshotInterval = minInterval
	cfg.ExportChangedOnly = true
	cfg.UnchangedExportInterval = 10 * minInterval
	sink := new(consumertest.MetricsSink)
	r := ritNew(t, cfg, sink, nil)
	require.NoError(t, ritStart(pair, r))

	busy := iftNewUDP(t, pair, netnstest.SenderIPv4, netnstest.ReceiverIPv4, 40960, netnstest.ReceiverIface)
	quiet := iftNewUDP(t, pair, netnstest.SenderIPv6, netnstest.ReceiverIPv6, 40961, netnstest.ReceiverIface)
	quiet.send(t, 5)
	busy.send(t, 2)
	first := iftWaitExport(t, sink, busy, quiet)
	deadline := time.Now().Add(10 * time.Second)
	for len(sink.AllMetrics()) < first+25 && time.Now().Before(deadline) {
		busy.send(t, 2)
		time.Sleep(minInterval / 4)
	}
	require.NoError(t, r.Shutdown(t.Context()))

	all := sink.AllMetrics()
	var withBusy, withQuiet, gap, maxGap int
	for _, md := range all[first:] {
		if len(pointsOf(md, metricPackets, int64(busy.conn.sport))) > 0 {
			withBusy++
		}
		if points := pointsOf(md, metricPackets, int64(quiet.conn.sport)); len(points) > 0 {
			withQuiet++
			assert.Equal(t, quiet.packets, points[0].IntValue(), "the idle connection's cumulative count")
			gap = 0
		} else {
			gap++
			maxGap = max(maxGap, gap)
		}
	}
	exports := len(all) - first
	assert.Greater(t, withBusy, exports/2, "the busy connection is in the exports that follow its packets")
	assert.Less(t, withQuiet, exports/2, "the idle connection is left out of most exports")
	assert.Greater(t, withQuiet, 0)
	assert.LessOrEqual(t, maxGap, 10, "the idle connection is exported at least once in 10 snapshots")
	t.Logf("%d exports after the first: busy in %d, idle in %d (longest gap %d)", exports, withBusy, withQuiet, maxGap)
}
