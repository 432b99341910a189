//go:build linux

package e2e

// Both directions end to end: the built collector with directions
// [receive, transmit] against tcpdump on both ends of the veth.

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// directionsOTLPAddr is where TestBothDirectionsEqualTcpdump's OTLP/HTTP
// backend listens, on loopback in the receiver namespace.
const directionsOTLPAddr = "127.0.0.1:14321"

// dirConn is one direction of a connection: the series of one
// network.io.direction, receive or transmit.
type dirConn struct {
	conn
	Direction string
}

func (d dirConn) String() string { return d.conn.String() + " " + d.Direction }

// TestBothDirectionsEqualTcpdump runs the built collector with directions
// [receive, transmit], exporting over OTLP/HTTP, while UDP echoes (one
// datagram of each size each way, sizes from 0 to the MTU) and TCP
// conversations (round trips, then a bulk write) cross the veth over IPv4
// and IPv6. tcpdump captures what the receiver's veth receives and, on
// the far side, what the sender's veth receives from it (the receiver's
// transmit): per connection and direction, the final exported values must
// equal those captures, and for UDP the datagrams sent.
func TestBothDirectionsEqualTcpdump(t *testing.T) {
	bin := requireCollector(t)
	pair := netnstest.New(t)
	backend := startOTLPHTTPBackend(t, pair.Receiver, directionsOTLPAddr)
	a := startCollector(t, bin, "A", pair.Receiver, agentConfig(xdpflowSettings{
		CollectionInterval: time.Second, MinSnapshotInterval: time.Second, NewConnectionsPerEvent: 5,
		More: "directions: [receive, transmit]\n",
	}, otlpHTTPExporter(directionsOTLPAddr)))
	requireNativeAttach(t, a)

	received := capturePort(t, pair)
	sent := startTcpdump(t, pair.Sender, netnstest.SenderIface, fmt.Sprintf("src port %d", port))
	var conns []conn
	want := map[dirConn]counts{} // the senders' own counts, UDP only
	for _, x := range []struct {
		src, dst netip.Addr
		sport    uint16
	}{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4, 40014},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6, 40016},
	} {
		c, echoed := udpEcho(t, pair, netip.AddrPortFrom(x.src, x.sport), netip.AddrPortFrom(x.dst, port), 100)
		conns = append(conns, c)
		want[dirConn{c, "receive"}], want[dirConn{c, "transmit"}] = echoed, echoed
		conns = append(conns, tcpConversation(t, pair, x.src, netip.AddrPortFrom(x.dst, port), 100<<10))
	}
	time.Sleep(100 * time.Millisecond) // the server's last ACK may still be crossing
	captured := map[dirConn]counts{}
	for _, c := range []struct {
		capture   *tcpdump
		direction string
	}{{received, "receive"}, {sent, "transmit"}} {
		res, err := c.capture.stop()
		if err != nil {
			t.Fatalf("%s capture: %v", c.direction, err)
		}
		byConn := captureCounts(t, res)
		if c.direction == "transmit" {
			byConn = transmitCounts(t, res)
		}
		if len(byConn) != len(conns) {
			t.Errorf("the %s capture holds %d connections %v, want %d", c.direction, len(byConn), sortedConns(byConn), len(conns))
		}
		for _, k := range conns {
			if byConn[k].Packets == 0 {
				t.Errorf("the %s capture has nothing of %s", c.direction, k)
			}
			captured[dirConn{k, c.direction}] = byConn[k]
		}
	}

	read := func() (latest[dirConn], error) {
		return foldLatest(backend.points(), func(attrs map[string]string) (dirConn, error) {
			c, err := connFromAttrs(attrs, otlpAttr)
			d := dirConn{c, attrs["network.io.direction"]}
			switch {
			case err != nil:
			case attrs["network.interface.name"] != netnstest.ReceiverIface:
				err = fmt.Errorf("network.interface.name %q, want %q", attrs["network.interface.name"], netnstest.ReceiverIface)
			case d.Direction != "receive" && d.Direction != "transmit":
				err = fmt.Errorf("network.io.direction %q", d.Direction)
			}
			return d, err
		}), nil
	}
	l := waitLatest(t, read, captured, valuesTimeout)
	checkLatest(t, "OTLP", l, captured, want)
	exported := map[string]map[conn]counts{"receive": {}, "transmit": {}}
	tcpdumped := map[string]map[conn]counts{"receive": {}, "transmit": {}}
	for k, v := range l.values {
		exported[k.Direction][k.conn] = v
	}
	for k, v := range captured {
		tcpdumped[k.Direction][k.conn] = v
	}
	t.Logf("final values:\n%s", table(conns, []string{"tcpdump receive", "OTLP receive", "tcpdump transmit", "OTLP transmit"},
		tcpdumped["receive"], exported["receive"], tcpdumped["transmit"], exported["transmit"]))
}

// transmitCounts returns, per connection, the packets and frame bytes of
// a capture of the receiver's transmitted packets, each connection named
// as the receiver names it: the remote side (the packet's destination) as
// the source, the local port as the destination port.
func transmitCounts(t *testing.T, res tcpdumpResult) map[conn]counts {
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
		c := conn{Transport: transport, Src: f.Dst, SrcPort: f.DstPort, DstPort: f.SrcPort}
		v := m[c]
		v.Packets++
		v.Bytes += uint64(pkt.OrigLen)
		m[c] = v
	}
	return m
}

// udpEcho sends, from client in the sender namespace to server in the
// receiver namespace, n datagrams of sizes from 0 to the MTU, one at a
// time; a socket on server echoes each back. It returns the connection
// and the datagrams' count and frame bytes in each direction.
func udpEcho(t *testing.T, pair *netnstest.Pair, client, server netip.AddrPort, n int) (conn, counts) {
	t.Helper()
	srv := netnstest.ListenUDP(t, pair.Receiver, server)
	cl := netnstest.ListenUDP(t, pair.Sender, client)
	buf := make([]byte, 65536)
	var c counts
	for i, size := range netnstest.UDPSizes(n, netnstest.MaxUDPPayload(client.Addr())) {
		if _, err := cl.WriteToUDPAddrPort(make([]byte, size), server); err != nil {
			t.Fatalf("send datagram %d: %v", i, err)
		}
		_ = srv.SetReadDeadline(time.Now().Add(ioTimeout))
		got, from, err := srv.ReadFromUDPAddrPort(buf)
		if err != nil || got != size {
			t.Fatalf("server: datagram %d: %d bytes, %v; want %d", i, got, err, size)
		}
		if _, err := srv.WriteToUDPAddrPort(buf[:got], from); err != nil {
			t.Fatalf("server: echo %d: %v", i, err)
		}
		_ = cl.SetReadDeadline(time.Now().Add(ioTimeout))
		if got, _, err := cl.ReadFromUDPAddrPort(buf); err != nil || got != size {
			t.Fatalf("client: echo %d: %d bytes, %v; want %d", i, got, err, size)
		}
		c.Packets++
		c.Bytes += netnstest.UDPFrameBytes(client.Addr(), size)
	}
	srv.Close()
	cl.Close()
	return conn{Transport: "udp", Src: client.Addr(), SrcPort: client.Port(), DstPort: server.Port()}, c
}
