//go:build linux

package e2e

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// The grouping test: collector A drops source.port and aggregates source
// addresses into prefixes in the kernel (attributes, source_address), and
// what reaches a backend over OTLP/HTTP and Prometheus over remote write
// must equal tcpdump's capture aggregated the same way.

const (
	// groupingOTLPAddr is where the test's OTLP/HTTP backend listens, on
	// loopback in the receiver namespace.
	groupingOTLPAddr = "127.0.0.1:14319"
	// groupingIPv4Prefix and groupingIPv6Prefix are the prefix lengths
	// source addresses are aggregated to. The IPv6 one is longer than the
	// test network's /64 so that its sources fall into two prefixes.
	groupingIPv4Prefix = 24
	groupingIPv6Prefix = 120
	// groupingUDPPorts is the number of UDP sockets (source ports) per
	// source address, groupingDatagrams the datagrams each sends.
	groupingUDPPorts  = 3
	groupingDatagrams = 30
	// groupingFirstPort is the first UDP source port.
	groupingFirstPort = 41000
)

// groupingSources are the source addresses of the traffic, the sender
// veth's own first: all of 198.51.100.0/24 is one IPv4 series per
// transport; fd00:db8::/120 and fd00:db8::1:0/120 are two IPv6 series per
// transport.
var groupingSources = []netip.Addr{
	netnstest.SenderIPv4,
	netip.MustParseAddr("198.51.100.11"),
	netip.MustParseAddr("198.51.100.12"),
	netip.MustParseAddr("198.51.100.200"),
	netnstest.SenderIPv6,
	netip.MustParseAddr("fd00:db8::11"),
	netip.MustParseAddr("fd00:db8::1:11"),
	netip.MustParseAddr("fd00:db8::1:12"),
}

// groupingAttributes are the attributes of every exported series:
// those configured, network.type, network.io.direction and the source
// prefix.
var groupingAttributes = []string{
	"source.address", "xdpflow.source.cidr", "destination.port",
	"network.transport", "network.type", "network.interface.name", "network.io.direction",
}

// groupedAgentConfig is collector A: the xdpflow receiver on the receiver
// veth, in native mode, counting port 8080 with groupingSettings,
// exporting every second to the test's OTLP/HTTP backend and to
// Prometheus.
func groupedAgentConfig() string {
	return collectorConfig{
		Receivers: []component{xdpflowReceiver(xdpflowSettings{
			Ports: []int{port}, CollectionInterval: time.Second, MinSnapshotInterval: time.Second,
			NewConnectionsPerEvent: 5, More: groupingSettings(),
		})},
		Processors: []component{batchProcessor},
		Exporters:  []component{otlpHTTPExporter(groupingOTLPAddr), promRemoteWriteExporter},
	}.String()
}

// groupingSettings are the xdpflow receiver's settings that group
// connections: attributes without source ports, and source addresses
// truncated to groupingIPv4Prefix and groupingIPv6Prefix.
func groupingSettings() string {
	return fmt.Sprintf(`attributes: [source.address, destination.port, network.transport, network.interface.name]
source_address:
  ipv4_prefix_length: %d
  ipv6_prefix_length: %d
`, groupingIPv4Prefix, groupingIPv6Prefix)
}

// seriesKey identifies a grouped series the way its attributes do (the
// interface is always netnstest.ReceiverIface).
type seriesKey struct {
	Transport string
	Source    netip.Prefix
	DstPort   uint16
}

func (k seriesKey) noun() string { return "series" }

func (k seriesKey) String() string {
	return fmt.Sprintf("%s %s -> :%d", k.Transport, k.Source, k.DstPort)
}

// groupOf returns the series connection c belongs to.
func groupOf(c conn) seriesKey {
	bits := groupingIPv4Prefix
	if c.Src.Is6() {
		bits = groupingIPv6Prefix
	}
	return seriesKey{Transport: c.Transport, Source: netip.PrefixFrom(c.Src, bits).Masked(), DstPort: c.DstPort}
}

// groupCounts sums per-connection counts into their series, and counts
// the connections of each series.
func groupCounts(m map[conn]counts) (map[seriesKey]counts, map[seriesKey]int) {
	sums, conns := map[seriesKey]counts{}, map[seriesKey]int{}
	for c, v := range m {
		k := groupOf(c)
		sums[k] = sums[k].plus(v)
		conns[k]++
	}
	return sums, conns
}

// latestSeries reduces points to the latest value of every grouped
// series of xdpflow.packets and xdpflow.bytes, and of
// xdpflow.overflow.packets. name maps an OTLP attribute name to the key
// it is stored under.
func latestSeries(pts []point, name func(string) string) groupedMetrics {
	return foldLatest(pts, func(attrs map[string]string) (seriesKey, error) { return seriesFromAttrs(attrs, name) })
}

// seriesFromAttrs reads a grouped series from its attributes, which must
// be exactly groupingAttributes: no source port. source.address must be
// the network address of the prefix xdpflow.source.cidr, whose length
// the configuration sets for the family.
func seriesFromAttrs(attrs map[string]string, name func(string) string) (seriesKey, error) {
	var k seriesKey
	var want []string
	for _, a := range groupingAttributes {
		want = append(want, name(a))
	}
	if got := slices.Sorted(maps.Keys(attrs)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		return k, fmt.Errorf("attributes %v, want %v", got, want)
	}
	prefix, err := netip.ParsePrefix(attrs[name("xdpflow.source.cidr")])
	if err != nil {
		return k, fmt.Errorf("xdpflow.source.cidr: %w", err)
	}
	wantBits, family := groupingIPv4Prefix, "ipv4"
	if prefix.Addr().Is6() {
		wantBits, family = groupingIPv6Prefix, "ipv6"
	}
	switch {
	case prefix.Bits() != wantBits || prefix != prefix.Masked():
		return k, fmt.Errorf("xdpflow.source.cidr %s: want the /%d prefix, its network address first", prefix, wantBits)
	case attrs[name("source.address")] != prefix.Addr().String():
		return k, fmt.Errorf("source.address %q: want %s, the prefix's network address", attrs[name("source.address")], prefix.Addr())
	case attrs[name("network.type")] != family:
		return k, fmt.Errorf("network.type %q for prefix %s", attrs[name("network.type")], prefix)
	case attrs[name("network.interface.name")] != netnstest.ReceiverIface:
		return k, fmt.Errorf("network.interface.name %q, want %q", attrs[name("network.interface.name")], netnstest.ReceiverIface)
	}
	dport, err := strconv.ParseUint(attrs[name("destination.port")], 10, 16)
	if err != nil {
		return k, fmt.Errorf("destination.port: %w", err)
	}
	k = seriesKey{Transport: attrs[name("network.transport")], Source: prefix, DstPort: uint16(dport)}
	if k.Transport != "tcp" && k.Transport != "udp" {
		return k, fmt.Errorf("network.transport %q", k.Transport)
	}
	return k, nil
}

// addSourceAddresses gives the sender veth the addresses of groupingSources
// it lacks (IPv6 without duplicate address detection, so they can be used
// at once), and the receiver a permanent neighbour entry for each, as
// netnstest does for the sender's own addresses. They go away with the
// namespaces.
func addSourceAddresses(t *testing.T, pair *netnstest.Pair) {
	t.Helper()
	mac := netnstest.SenderMAC.String()
	for _, a := range groupingSources {
		if a == netnstest.SenderIPv4 || a == netnstest.SenderIPv6 {
			continue
		}
		add := []string{"addr", "add", netip.PrefixFrom(a, a.BitLen()).String(), "dev", netnstest.SenderIface}
		if a.Is6() {
			add = append(add, "nodad")
		}
		if _, err := netnsRun(pair.Sender, "ip", add...); err != nil {
			t.Fatal(err)
		}
		if _, err := netnsRun(pair.Receiver, "ip", "neigh", "replace", a.String(), "lladdr", mac,
			"dev", netnstest.ReceiverIface, "nud", "permanent"); err != nil {
			t.Fatal(err)
		}
	}
}

// sendGroupedTraffic sends, from every address of groupingSources to port
// 8080 of the receiver: UDP from groupingUDPPorts source ports, their
// datagrams interleaved, then a TCP conversation. It returns the
// connections and the sender's counts of the UDP ones.
func sendGroupedTraffic(t *testing.T, pair *netnstest.Pair) *traffic {
	t.Helper()
	tr := &traffic{sent: map[conn]counts{}}
	for _, dst := range []netip.Addr{netnstest.ReceiverIPv4, netnstest.ReceiverIPv6} {
		to := netip.AddrPortFrom(dst, port)
		server := netnstest.ListenUDP(t, pair.Receiver, to)
		var clients []*net.UDPConn
		for _, src := range groupingSources {
			if src.Is4() != dst.Is4() {
				continue
			}
			for j := range groupingUDPPorts {
				sport := uint16(groupingFirstPort + j)
				clients = append(clients, netnstest.ListenUDP(t, pair.Sender, netip.AddrPortFrom(src, sport)))
				c := conn{Transport: "udp", Src: src, SrcPort: sport, DstPort: port}
				tr.conns = append(tr.conns, c)
				tr.sent[c] = counts{}
			}
		}
		sizes := netnstest.UDPSizes(groupingDatagrams*len(clients), netnstest.MaxUDPPayload(dst))
		dgrams := make([]netnstest.Datagram, len(sizes))
		var total uint64
		for i, size := range sizes {
			from := clients[i%len(clients)]
			dgrams[i] = netnstest.Datagram{From: from, Size: size}
			local := from.LocalAddr().(*net.UDPAddr).AddrPort()
			c := conn{Transport: "udp", Src: local.Addr().Unmap(), SrcPort: local.Port(), DstPort: port}
			s := tr.sent[c]
			b := netnstest.UDPFrameBytes(dst, size)
			tr.sent[c] = counts{Packets: s.Packets + 1, Bytes: s.Bytes + b}
			total += b
		}
		got := netnstest.SendUDP(t, server, to, dgrams, netnstest.UDPPacing{Batch: 32, Timeout: ioTimeout, InOrder: true})
		if got != total {
			t.Fatalf("to %s: SendUDP counted %d frame bytes, the test %d", to, got, total)
		}
	}
	for _, src := range groupingSources {
		dst := netnstest.ReceiverIPv4
		if src.Is6() {
			dst = netnstest.ReceiverIPv6
		}
		local := netnstest.TCPConversation{Rounds: 10, Bulk: 32 << 10, Timeout: ioTimeout}.
			Converse(t, pair, src, netip.AddrPortFrom(dst, port))
		tr.conns = append(tr.conns, conn{Transport: "tcp", Src: local.Addr(), SrcPort: local.Port(), DstPort: port})
	}
	return tr
}

// groupedSeries returns the latest values of the receiver's series the
// backend received, reduced by latestSeries.
func (b *otlpHTTPBackend) groupedSeries() (groupedMetrics, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return latestSeries(slices.Collect(maps.Values(b.latest)), otlpAttr), nil
}

// groupedSeries returns the latest values of the receiver's series in
// Prometheus, reduced by latestSeries.
func (p *prometheus) groupedSeries() (groupedMetrics, error) {
	pts, err := p.points()
	if err != nil {
		return groupedMetrics{}, err
	}
	return latestSeries(pts, promLabel), nil
}

// receiverScope is the instrumentation scope of the receiver's metrics.
const receiverScope = "github.com/xdpflow/xdpflowreceiver"

// seriesTable formats the counts of every series, one line each, for the
// test log.
func seriesTable(conns map[seriesKey]int, cols []string, values ...map[seriesKey]counts) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-36s | %-11s", "series", "connections")
	for _, c := range cols {
		fmt.Fprintf(&b, " | %-28s", c)
	}
	b.WriteString("\n")
	keys := slices.SortedFunc(maps.Keys(conns), func(a, b seriesKey) int { return strings.Compare(a.String(), b.String()) })
	for _, k := range keys {
		fmt.Fprintf(&b, "%-36s | %-11d", k, conns[k])
		for _, v := range values {
			s := "-"
			if x, ok := v[k]; ok {
				s = x.String()
			}
			fmt.Fprintf(&b, " | %-28s", s)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestGroupedSeriesEqualCapture runs Prometheus, an OTLP/HTTP backend and
// collector A with attributes without source.port and source addresses
// aggregated to /24 (IPv4) and /120 (IPv6) prefixes, exporting to both.
// Eight source addresses send UDP from three ports each and one TCP
// conversation each: 32 connections, six series. The final values of both
// backends must equal tcpdump's capture summed by series (and, for UDP, the
// sender's counts summed likewise), and the flow table must hold one entry
// per series.
func TestGroupedSeriesEqualCapture(t *testing.T) {
	bin := requireCollector(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("the grouping test needs Prometheus: apt-get install prometheus (%v)", err)
	}
	began := time.Now()
	pair := netnstest.New(t)
	addSourceAddresses(t, pair)
	prom := startPrometheus(t, promBin, pair.Receiver)
	backend := startOTLPHTTPBackend(t, pair.Receiver, groupingOTLPAddr)
	a := startCollector(t, bin, "A", pair.Receiver, groupedAgentConfig())
	requireNativeAttach(t, a)

	capture := capturePort(t, pair)
	tr := sendGroupedTraffic(t, pair)
	capturedConns := stopCapture(t, capture, tr)
	captured, conns := groupCounts(capturedConns)
	sent, _ := groupCounts(tr.sent)
	if len(captured) != 6 {
		t.Fatalf("the traffic makes %d series, want 6:\n%s", len(captured), seriesTable(conns, nil))
	}
	for k, n := range conns {
		if n < 2 {
			t.Errorf("series %s holds %d connections; the test means to merge several", k, n)
		}
	}

	otlp := waitLatest(t, backend.groupedSeries, captured, valuesTimeout)
	checkLatest(t, "OTLP/HTTP backend", otlp, captured, sent)
	if entries, ok := backend.latestValue("xdpflow.connections"); !ok || entries != int64(len(captured)) {
		t.Errorf("xdpflow.connections = %d (received: %v), want %d: one flow-table entry per series", entries, ok, len(captured))
	}
	pm := waitLatest(t, prom.groupedSeries, captured, valuesTimeout)
	checkLatest(t, "Prometheus", pm, captured, sent)

	var packets, bytes uint64
	for _, v := range captured {
		packets += v.Packets
		bytes += v.Bytes
	}
	t.Logf("%d connections from %d source addresses in %d series: %d packets, %d bytes; OTLP/HTTP backend: %s; %v from the namespaces' creation",
		len(tr.conns), len(groupingSources), len(captured), packets, bytes, backend, time.Since(began).Round(time.Millisecond))
	t.Logf("latest values:\n%s", seriesTable(conns, []string{"sender (UDP)", "tcpdump", "OTLP/HTTP backend", "Prometheus"},
		sent, captured, otlp.values, pm.values))
}
