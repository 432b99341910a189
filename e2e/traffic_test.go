//go:build linux

package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// ioTimeout bounds every socket operation of the traffic helpers.
const ioTimeout = 10 * time.Second

// port is the destination port the collectors count.
const port = 8080

// conn identifies a counted connection the way the receiver's attributes
// do (the interface is always netnstest.ReceiverIface).
type conn struct {
	Transport string // tcp or udp
	Src       netip.Addr
	SrcPort   uint16
	DstPort   uint16
}

func (c conn) networkType() string {
	if c.Src.Is4() {
		return "ipv4"
	}
	return "ipv6"
}

func (c conn) noun() string { return "connection" }

func (c conn) String() string {
	return fmt.Sprintf("%s %s -> :%d", c.Transport, netip.AddrPortFrom(c.Src, c.SrcPort), c.DstPort)
}

// counts are a connection's packets and bytes (whole Ethernet frames).
type counts struct{ Packets, Bytes uint64 }

func (c counts) String() string { return fmt.Sprintf("%d packets %d bytes", c.Packets, c.Bytes) }

// plus returns the sum of c and d.
func (c counts) plus(d counts) counts {
	return counts{Packets: c.Packets + d.Packets, Bytes: c.Bytes + d.Bytes}
}

// traffic is what sendTraffic sent.
type traffic struct {
	// conns are the connections, in the order they were made.
	conns []conn
	// sent holds the sender's own counts where it knows them exactly:
	// UDP datagrams and their frame bytes.
	sent map[conn]counts
}

// sendTraffic sends, from the sender namespace to port 8080 in the
// receiver namespace: 150 UDP datagrams of sizes from 0 to the MTU over
// IPv4 and over IPv6, and a TCP conversation over each.
func sendTraffic(t *testing.T, pair *netnstest.Pair) *traffic {
	t.Helper()
	conns, sent := sendUDPBothFamilies(t, pair, 40004, 40006, 150)
	tr := &traffic{conns: conns, sent: sent}
	for _, x := range []struct{ src, dst netip.Addr }{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6},
	} {
		tr.conns = append(tr.conns, tcpConversation(t, pair, x.src, netip.AddrPortFrom(x.dst, port), 100<<10))
	}
	return tr
}

// sendUDPBothFamilies sends n datagrams of sizes from 0 to the MTU, as
// sendUDP does, to port 8080 of the receiver: over IPv4 from source port
// sport4, over IPv6 from sport6. It returns the two connections, IPv4
// first, and the sender's counts.
func sendUDPBothFamilies(t *testing.T, pair *netnstest.Pair, sport4, sport6 uint16, n int) ([]conn, map[conn]counts) {
	t.Helper()
	var conns []conn
	sent := map[conn]counts{}
	for _, u := range []struct {
		src, dst netip.Addr
		sport    uint16
	}{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4, sport4},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6, sport6},
	} {
		c := conn{Transport: "udp", Src: u.src, SrcPort: u.sport, DstPort: port}
		sent[c] = sendUDP(t, pair, u.src, u.sport, u.dst, port, netnstest.UDPSizes(n, netnstest.MaxUDPPayload(u.src)))
		conns = append(conns, c)
	}
	return conns, sent
}

// sendUDP sends one datagram per payload size from src:sport in the sender
// namespace to dst:dport in the receiver namespace, where a socket reads
// them, checking that they arrive in order, and waiting for them every 32
// datagrams so none is dropped in a queue (see netnstest.SendUDP). It
// returns the datagrams' count and their frame bytes: Ethernet, IP and UDP
// headers and payload.
func sendUDP(t *testing.T, pair *netnstest.Pair, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, sizes []int) counts {
	t.Helper()
	b := netnstest.SendUDPFlow(t, pair, netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport), sizes,
		netnstest.UDPPacing{Batch: 32, Timeout: ioTimeout, InOrder: true})
	return counts{Packets: uint64(len(sizes)), Bytes: b}
}

// tcpConversation runs a TCP conversation from src in the sender namespace
// to to in the receiver namespace: 30 request/response round trips, then a
// bulk write of bulk bytes from the client. When it returns every packet of
// the client has arrived (see netnstest.TCPConversation).
func tcpConversation(t *testing.T, pair *netnstest.Pair, src netip.Addr, to netip.AddrPort, bulk int) conn {
	t.Helper()
	local := netnstest.TCPConversation{Rounds: 30, Bulk: bulk, Timeout: ioTimeout}.Converse(t, pair, src, to)
	return conn{Transport: "tcp", Src: local.Addr(), SrcPort: local.Port(), DstPort: to.Port()}
}

// captureCounts returns, per TCP or UDP connection, the packets and frame
// bytes of a capture of received packets: each connection named by the
// packets' source and destination port.
func captureCounts(t *testing.T, res tcpdumpResult) map[conn]counts {
	t.Helper()
	return countCaptured(t, res, func(f netnstest.Frame, transport string) conn {
		return conn{Transport: transport, Src: f.Src, SrcPort: f.SrcPort, DstPort: f.DstPort}
	})
}

// countCaptured returns, per TCP or UDP connection as name names it, the
// packets and frame bytes of a capture, each checked to fit the MTU (no
// offload merged it).
func countCaptured(t *testing.T, res tcpdumpResult, name func(f netnstest.Frame, transport string) conn) map[conn]counts {
	t.Helper()
	m := map[conn]counts{}
	for i, pkt := range res.Pcap.Packets {
		f, err := netnstest.DecodeEthernet(pkt.Data)
		if err != nil {
			t.Errorf("captured packet %d: %v", i, err)
			continue
		}
		if pkt.OrigLen > 1514 {
			t.Errorf("captured packet %d has %d bytes, more than the MTU: offloads are on", i, pkt.OrigLen)
		}
		transport := map[uint8]string{6: "tcp", 17: "udp"}[f.Proto]
		if transport == "" {
			continue
		}
		c := name(f, transport)
		v := m[c]
		v.Packets++
		v.Bytes += uint64(pkt.OrigLen)
		m[c] = v
	}
	return m
}

// capturePort captures the receiver veth's inbound packets to port 8080.
func capturePort(t *testing.T, pair *netnstest.Pair) *tcpdump {
	t.Helper()
	return startTcpdump(t, pair.Receiver, netnstest.ReceiverIface, fmt.Sprintf("dst port %d", port))
}

// stopCapture stops capture and checks it against the sender's traffic
// tr: exactly its connections, UDP with the sender's counts. It returns
// the capture's counts per connection.
func stopCapture(t *testing.T, capture *tcpdump, tr *traffic) map[conn]counts {
	t.Helper()
	res, err := capture.stop()
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	captured := captureCounts(t, res)
	if got, want := sortedConns(captured), slices.SortedFunc(slices.Values(tr.conns), compareConns); !slices.Equal(got, want) {
		t.Fatalf("capture holds connections %v, sent %v", got, want)
	}
	for c, sent := range tr.sent {
		if captured[c] != sent {
			t.Errorf("%s: sender counted %s, tcpdump %s", c, sent, captured[c])
		}
	}
	return captured
}

// table formats the counts of conns from each source, one line per
// connection, for the test log.
func table(conns []conn, cols []string, values ...map[conn]counts) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-40s", "connection")
	for _, c := range cols {
		fmt.Fprintf(&b, " | %-28s", c)
	}
	b.WriteString("\n")
	for _, c := range conns {
		fmt.Fprintf(&b, "%-40s", c)
		for _, v := range values {
			s := "-"
			if x, ok := v[c]; ok {
				s = x.String()
			}
			fmt.Fprintf(&b, " | %-28s", s)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// sortedConns returns the keys of m in a stable order.
func sortedConns(m map[conn]counts) []conn {
	cs := make([]conn, 0, len(m))
	for c := range m {
		cs = append(cs, c)
	}
	slices.SortFunc(cs, compareConns)
	return cs
}

// compareConns orders connections by their String.
func compareConns(a, b conn) int { return strings.Compare(a.String(), b.String()) }
