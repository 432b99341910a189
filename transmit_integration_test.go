//go:build linux

package xdpflowreceiver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestIntegrationReceiverTransmit runs a receiver with directions
// [receive, transmit] on the receiver veth and TCP conversations over
// IPv4 and IPv6 from the sender, and checks that each connection is
// exported twice, receive and transmit, with the same attributes but
// network.io.direction, each equal to an AF_PACKET capture: what arrived
// at the receiver veth, and what arrived at the sender veth (what the
// receiver sent). Offloads are off on the veth (netnstest): one frame is
// one packet on both sides.
func TestIntegrationReceiverTransmit(t *testing.T) {
	privtest.RequireRoot(t)
	pair := netnstest.New(t)
	sink := new(consumertest.MetricsSink)
	cfg := ritConfig("native")
	cfg.Directions = []string{directionReceive, directionTransmit}
	require.NoError(t, cfg.Validate())
	tel := ritTelemetry(t)
	r := ritNew(t, cfg, sink, tel)
	require.NoError(t, ritStart(pair, r))
	received := netnstest.StartCapture(t, pair.Receiver, netnstest.ReceiverIface, netnstest.ToPort(6, ritPort))
	sent := netnstest.StartCapture(t, pair.Sender, netnstest.SenderIface, func(f netnstest.Frame) bool {
		return f.Proto == 6 && f.SrcPort == ritPort
	})

	var clients []netip.AddrPort
	for _, fam := range []struct{ src, dst netip.Addr }{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6},
	} {
		client, _ := ritTCPConversation(t, pair, fam.src, netip.AddrPortFrom(fam.dst, ritPort), 100<<10)
		clients = append(clients, client)
	}
	// The server's last packets may still be crossing the veth.
	time.Sleep(100 * time.Millisecond)
	rx, err := received.Stop()
	require.NoError(t, err, "capture on the receiver")
	tx, err := sent.Stop()
	require.NoError(t, err, "capture on the sender")
	ritShutdown(t, r, sink, tel)

	exports := ritDecode(t, sink.AllMetrics())
	require.NotEmpty(t, exports)
	final := exports[len(exports)-1]
	for _, client := range clients {
		conn := ritConnOf("tcp", client.Addr(), client.Port())
		for _, c := range []struct {
			direction string
			res       netnstest.CaptureResult
			match     func(netnstest.Frame) bool
		}{
			{directionReceive, rx, func(f netnstest.Frame) bool { return f.Src == client.Addr() && f.SrcPort == client.Port() }},
			{directionTransmit, tx, func(f netnstest.Frame) bool { return f.Dst == client.Addr() && f.DstPort == client.Port() }},
		} {
			conn.direction = c.direction
			packets, bytes := c.res.Pcap.Count(c.match)
			p, ok := final.conns[conn]
			if !ok {
				t.Errorf("%s not in the final export; it has %v", conn, ritKeys(final))
				continue
			}
			assert.Equal(t, int64(packets), p.packets, "%s packets vs the capture", conn)
			assert.Equal(t, int64(bytes), p.bytes, "%s bytes vs the capture", conn)
			t.Logf("%s: exported %d packets %d bytes; capture %d packets %d bytes", conn, p.packets, p.bytes, packets, bytes)
		}
	}
	assert.Len(t, final.conns, 4, "series in the final export: %v", ritKeys(final))
	assert.Zero(t, final.overflowPackets, "xdpflow.overflow.packets")
}
