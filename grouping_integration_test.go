//go:build linux

package xdpflowreceiver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestIntegrationReceiverGroupsInTheKernel runs the real receiver on the
// veth with series of source /24 (a named CIDR for IPv6), destination
// address and port: UDP from several source ports of both families is
// exported as one series per family, each the exact sum of what its
// connections sent, and the receiver counts as many kernel entries.
func TestIntegrationReceiverGroupsInTheKernel(t *testing.T) {
	privtest.RequireRoot(t)
	pair := netnstest.New(t)
	cfg := ritConfig("native")
	cfg.Attributes = []string{attrSourceAddress, attrDestinationAddress, attrDestinationPort}
	cfg.SourceAddress = AddressGrouping{IPv4PrefixLength: 24, MatchCIDRs: true}
	cfg.CIDRs = []NamedCIDR{{CIDR: "fd00:db8::/64", Name: "test-net"}}
	sink := new(consumertest.MetricsSink)
	r := ritNew(t, cfg, sink, nil)
	require.NoError(t, ritStart(pair, r))

	server4 := ritListenUDP(t, pair.Receiver, netnstest.ReceiverIPv4, ritPort)[0]
	server6 := ritListenUDP(t, pair.Receiver, netnstest.ReceiverIPv6, ritPort)[0]
	udpFrom := func(src, dst netip.Addr, server *net.UDPConn, sport uint16) *iftUDP {
		return &iftUDP{
			server:   server,
			client:   ritListenUDP(t, pair.Sender, src, sport)[0],
			to:       netip.AddrPortFrom(dst, ritPort),
			maxBytes: netnstest.MaxUDPPayload(src),
		}
	}
	var conns []*iftUDP
	for i := range 4 {
		conns = append(conns,
			udpFrom(netnstest.SenderIPv4, netnstest.ReceiverIPv4, server4, uint16(40700+i)),
			udpFrom(netnstest.SenderIPv6, netnstest.ReceiverIPv6, server6, uint16(40800+i)))
	}
	var want4, want6 [2]int64 // packets, bytes
	for i, c := range conns {
		c.send(t, 8+i)
		w := &want4
		if i%2 == 1 {
			w = &want6
		}
		w[0] += c.packets
		w[1] += c.bytes
	}

	series4 := map[string]any{
		attrSourceAddress: "198.51.100.0", attrSourceCIDR: "198.51.100.0/24",
		attrDestinationAddress: netnstest.ReceiverIPv4.String(), attrDestinationPort: int64(ritPort), attrNetworkType: "ipv4",
		attrNetworkIODirection: directionReceive,
	}
	series6 := map[string]any{
		attrSourceAddress: "fd00:db8::", attrSourceCIDR: "fd00:db8::/64", attrSourceCIDRName: "test-net",
		attrDestinationAddress: netnstest.ReceiverIPv6.String(), attrDestinationPort: int64(ritPort), attrNetworkType: "ipv6",
		attrNetworkIODirection: directionReceive,
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := lastGroupedExport(sink.AllMetrics())
		if len(got) == 2 && got[0] == want4 && got[1] == want6 ||
			time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, r.Shutdown(t.Context()))
	all := sink.AllMetrics()
	last := all[len(all)-1].ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	packets, bytes := last.At(0).Sum().DataPoints(), last.At(1).Sum().DataPoints()
	require.Equal(t, 2, packets.Len(), "one series per family")
	for i := range packets.Len() {
		attrs := packets.At(i).Attributes().AsRaw()
		want, w := series4, want4
		if attrs[attrNetworkType] == "ipv6" {
			want, w = series6, want6
		}
		assert.Equal(t, want, attrs)
		assert.Equal(t, w[0], packets.At(i).IntValue(), "packets of %v", attrs)
		assert.Equal(t, w[1], bytes.At(i).IntValue(), "bytes of %v", attrs)
	}
	t.Logf("IPv4: %d packets %d bytes, IPv6: %d packets %d bytes, in one series each", want4[0], want4[1], want6[0], want6[1])
}

// lastGroupedExport returns the packets and bytes of the last export's
// series, by family (IPv4 first) when there are exactly two.
func lastGroupedExport(all []pmetric.Metrics) [][2]int64 {
	if len(all) == 0 {
		return nil
	}
	ms := all[len(all)-1].ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	packets, bytes := ms.At(0).Sum().DataPoints(), ms.At(1).Sum().DataPoints()
	if packets.Len() != 2 {
		return nil
	}
	out := make([][2]int64, 2)
	for i := range 2 {
		fam := 0
		if v, _ := packets.At(i).Attributes().Get(attrNetworkType); v.Str() == "ipv6" {
			fam = 1
		}
		out[fam] = [2]int64{packets.At(i).IntValue(), bytes.At(i).IntValue()}
	}
	return out
}
