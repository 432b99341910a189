package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
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

func (c conn) String() string {
	return fmt.Sprintf("%s %s -> :%d", c.Transport, netip.AddrPortFrom(c.Src, c.SrcPort), c.DstPort)
}

// counts are a connection's packets and bytes (whole Ethernet frames).
type counts struct{ Packets, Bytes uint64 }

func (c counts) String() string { return fmt.Sprintf("%d packets %d bytes", c.Packets, c.Bytes) }

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
	tr := &traffic{sent: map[conn]counts{}}
	for _, u := range []struct {
		src, dst netip.Addr
		sport    uint16
	}{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4, 40004},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6, 40006},
	} {
		maxPayload := 1500 - 20 - 8
		if u.src.Is6() {
			maxPayload = 1500 - 40 - 8
		}
		c := conn{Transport: "udp", Src: u.src, SrcPort: u.sport, DstPort: port}
		tr.sent[c] = sendUDP(t, pair, u.src, u.sport, u.dst, port, udpSizes(150, maxPayload))
		tr.conns = append(tr.conns, c)
	}
	for _, x := range []struct{ src, dst netip.Addr }{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6},
	} {
		tr.conns = append(tr.conns, tcpConversation(t, pair, x.src, netip.AddrPortFrom(x.dst, port), 100<<10))
	}
	return tr
}

// udpSizes returns k payload sizes from 0 to maxSize, both included.
func udpSizes(k, maxSize int) []int {
	sizes := make([]int, k)
	for i := range sizes {
		sizes[i] = (i * 211) % (maxSize + 1)
	}
	sizes[1] = maxSize
	return sizes
}

func listenUDP(t *testing.T, ns string, a netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := netnstest.Do(ns, func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
		return err
	})
	if err != nil {
		t.Fatalf("listen udp %s in %s: %v", a, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendUDP sends one datagram per payload size from src:sport in the sender
// namespace to dst:dport in the receiver namespace, where a socket reads
// them. Every 32 datagrams it waits until all have arrived, so none is
// dropped in a queue. It returns the datagrams' count and their frame
// bytes: Ethernet, IP and UDP headers and payload.
func sendUDP(t *testing.T, pair *netnstest.Pair, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, sizes []int) counts {
	t.Helper()
	server := listenUDP(t, pair.Receiver, netip.AddrPortFrom(dst, dport))
	client := listenUDP(t, pair.Sender, netip.AddrPortFrom(src, sport))
	ipHdr := 20
	if dst.Is6() {
		ipHdr = 40
	}
	to := netip.AddrPortFrom(dst, dport)
	buf := make([]byte, 65536)
	var sent counts
	received := 0
	for i, size := range sizes {
		if _, err := client.WriteToUDPAddrPort(bytes.Repeat([]byte{byte(i)}, size), to); err != nil {
			t.Fatalf("send datagram %d (%d bytes) to %s: %v", i, size, to, err)
		}
		sent.Packets++
		sent.Bytes += uint64(14 + ipHdr + 8 + size)
		if (i+1)%32 != 0 && i != len(sizes)-1 {
			continue
		}
		server.SetReadDeadline(time.Now().Add(ioTimeout))
		for received < i+1 {
			n, from, err := server.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("received %d of %d datagrams sent to %s: %v", received, i+1, to, err)
			}
			if from != netip.AddrPortFrom(src, sport) || n != sizes[received] {
				t.Fatalf("datagram %d: %d bytes from %s, want %d from %s", received, n, from, sizes[received], netip.AddrPortFrom(src, sport))
			}
			received++
		}
	}
	return sent
}

// tcpConversation serves one connection on to in the receiver namespace
// and connects to it from src in the sender namespace: 30 request/response
// round trips, then a bulk write of bulk bytes from the client. The server
// then shuts down its sending side; the client reads EOF and closes; the
// server reads the client's FIN and closes, so when this returns every
// packet of the client has arrived.
func tcpConversation(t *testing.T, pair *netnstest.Pair, src netip.Addr, to netip.AddrPort, bulk int) conn {
	t.Helper()
	var ln *net.TCPListener
	err := pair.Do(pair.Receiver, func() error {
		var err error
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(to))
		return err
	})
	if err != nil {
		t.Fatalf("listen %s: %v", to, err)
	}
	defer ln.Close()
	const rounds, reqSize, respSize = 30, 100, 300
	serverErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		serverErr <- func() error {
			ln.SetDeadline(time.Now().Add(ioTimeout))
			c, err := ln.AcceptTCP()
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioTimeout))
			req := make([]byte, reqSize)
			resp := bytes.Repeat([]byte("r"), respSize)
			for i := range rounds {
				if _, err := io.ReadFull(c, req); err != nil {
					return fmt.Errorf("request %d: %w", i, err)
				}
				if _, err := c.Write(resp); err != nil {
					return fmt.Errorf("response %d: %w", i, err)
				}
			}
			n, err := io.Copy(io.Discard, io.LimitReader(c, int64(bulk)))
			if err != nil || n != int64(bulk) {
				return fmt.Errorf("bulk: read %d of %d bytes: %v", n, bulk, err)
			}
			if err := c.CloseWrite(); err != nil {
				return err
			}
			if n, err := c.Read(req); err != io.EOF {
				return fmt.Errorf("after bulk: read %d bytes, %v; want EOF", n, err)
			}
			return nil
		}()
	}()

	var c *net.TCPConn
	err = pair.Do(pair.Sender, func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: ioTimeout}
		nc, err := d.Dial("tcp", to.String())
		if err != nil {
			return err
		}
		c = nc.(*net.TCPConn)
		return nil
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", to, src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	req := bytes.Repeat([]byte("q"), reqSize)
	resp := make([]byte, respSize)
	for i := range rounds {
		if _, err := c.Write(req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
	}
	if _, err := c.Write(bytes.Repeat([]byte("b"), bulk)); err != nil {
		t.Fatalf("bulk write: %v", err)
	}
	if n, err := c.Read(resp); err != io.EOF {
		t.Fatalf("after bulk: read %d bytes, %v; want EOF", n, err)
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := <-serverErr; err != nil {
		t.Fatalf("server: %v", err)
	}
	return conn{Transport: "tcp", Src: local.Addr().Unmap(), SrcPort: local.Port(), DstPort: to.Port()}
}

// captureCounts returns, per TCP or UDP connection, the packets and frame
// bytes of a capture.
func captureCounts(t *testing.T, res netnstest.CaptureResult) map[conn]counts {
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
		var tr string
		switch f.Proto {
		case 6:
			tr = "tcp"
		case 17:
			tr = "udp"
		default:
			continue
		}
		c := conn{Transport: tr, Src: f.Src, SrcPort: f.SrcPort, DstPort: f.DstPort}
		v := m[c]
		v.Packets++
		v.Bytes += uint64(pkt.OrigLen)
		m[c] = v
	}
	return m
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
	slices.SortFunc(cs, func(a, b conn) int { return strings.Compare(a.String(), b.String()) })
	return cs
}
