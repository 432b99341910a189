//go:build linux

package e2e

// Steady traffic: connections that keep sending while a test does
// something else (kills and restarts a collector), until it stops them.
// Unlike sendTraffic, its goroutines report errors instead of failing the
// test, and the test collects them at the end.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// steadyOptions says what steady traffic sends to port 8080, per address
// family (IPv4 and IPv6).
type steadyOptions struct {
	// UDPFlows datagrams flows from fixed source ports (from
	// steadyFirstPort on), a datagram every UDPGap each, sizes from 0 to
	// the MTU.
	UDPFlows int
	UDPGap   time.Duration
	// LongTCP connections run request/response rounds, one every TCPGap,
	// from start to stop.
	LongTCP int
	TCPGap  time.Duration
	// A new short TCP connection of ShortRounds rounds starts every
	// ShortEvery.
	ShortEvery  time.Duration
	ShortRounds int
	// Limit stops the traffic even if the test does not.
	Limit time.Duration
}

// steadyFirstPort is the first UDP source port of steady traffic,
// steadyFirstTCPPort the first TCP one: the client binds its port, below
// the kernel's ephemeral range, so that no connection reuses the port of
// an earlier one (whose series it would continue).
const (
	steadyFirstPort    = 42000
	steadyFirstTCPPort = 20000
)

// steadyTraffic is traffic started by startSteadyTraffic.
type steadyTraffic struct {
	pair        *netnstest.Pair
	o           steadyOptions
	stopc       chan struct{}
	once        sync.Once
	clients     sync.WaitGroup // senders
	servers     sync.WaitGroup // receivers, ended after the senders
	clientsDone chan struct{}
	listeners   []*net.TCPListener
	tcpPorts    atomic.Uint32 // TCP source ports taken

	mu    sync.Mutex
	conns []conn          // in the order they started
	long  []conn          // the UDP flows and long TCP connections
	sent  map[conn]counts // UDP: datagrams and frame bytes
	recvd map[conn]counts // UDP: what the receiving socket got
	errs  []error
}

// startSteadyTraffic starts the traffic of o from the sender namespace of
// pair to port 8080 in its receiver namespace. It runs until stop, or o.Limit.
func startSteadyTraffic(t *testing.T, pair *netnstest.Pair, o steadyOptions) *steadyTraffic {
	t.Helper()
	s := &steadyTraffic{pair: pair, o: o, stopc: make(chan struct{}), clientsDone: make(chan struct{}),
		sent: map[conn]counts{}, recvd: map[conn]counts{}}
	t.Cleanup(func() { s.wait() })
	for _, fam := range []struct{ src, dst netip.Addr }{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6},
	} {
		to := netip.AddrPortFrom(fam.dst, port)
		server := netnstest.ListenUDP(t, pair.Receiver, to)
		s.server(func() error { return s.receiveUDP(server) })
		for i := range o.UDPFlows {
			from := netip.AddrPortFrom(fam.src, uint16(steadyFirstPort+i))
			client := netnstest.ListenUDP(t, pair.Sender, from)
			s.client(func() error { return s.sendUDP(client, from, to) })
		}
		ln := netnstest.ListenTCP(t, pair.Receiver, to)
		s.listeners = append(s.listeners, ln)
		s.server(func() error { return s.serveTCP(ln) })
		for range o.LongTCP {
			s.client(func() error { return s.converse(fam.src, to, -1) })
		}
		s.client(func() error { return s.startShortConns(fam.src, to) })
	}
	go func() {
		select {
		case <-time.After(o.Limit):
			s.stop()
		case <-s.stopc:
		}
	}()
	return s
}

// client runs the sender fn on a goroutine and keeps its error.
func (s *steadyTraffic) client(fn func() error) { s.goKeep(&s.clients, fn) }

// server runs the receiver fn on a goroutine and keeps its error.
func (s *steadyTraffic) server(fn func() error) { s.goKeep(&s.servers, fn) }

func (s *steadyTraffic) goKeep(wg *sync.WaitGroup, fn func() error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := fn(); err != nil {
			s.fail(err)
		}
	}()
}

func (s *steadyTraffic) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err)
}

func (s *steadyTraffic) stopped() bool {
	select {
	case <-s.stopc:
		return true
	default:
		return false
	}
}

func (s *steadyTraffic) stop() { s.once.Do(func() { close(s.stopc) }) }

// wait stops the traffic and waits until the senders have ended, then the
// receivers: the UDP sockets once they have read every datagram, the TCP
// servers once they have read each client's FIN. A second call returns at
// once.
func (s *steadyTraffic) wait() {
	s.stop()
	s.clients.Wait()
	select {
	case <-s.clientsDone:
		return
	default:
	}
	close(s.clientsDone)
	for _, ln := range s.listeners {
		ln.Close()
	}
	s.servers.Wait()
}

// longLived returns the UDP flows and long TCP connections started so far.
func (s *steadyTraffic) longLived() []conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.long)
}

// finish stops the traffic, waits until every connection has ended (the
// receiver has every packet their clients sent) and returns the
// connections and the sender's UDP counts. It fails the test if a
// connection failed or a UDP socket received other than what was sent.
func (s *steadyTraffic) finish(t *testing.T) *traffic {
	t.Helper()
	s.wait()
	if err := errors.Join(s.errs...); err != nil {
		t.Fatalf("steady traffic: %v", err)
	}
	for c, sent := range s.sent {
		if s.recvd[c] != sent {
			t.Errorf("%s: sent %s, the receiving socket got %s", c, sent, s.recvd[c])
		}
	}
	return &traffic{conns: s.conns, sent: s.sent}
}

// sendUDP sends a datagram every UDPGap from client (bound to from) to
// to until stopped.
func (s *steadyTraffic) sendUDP(client *net.UDPConn, from, to netip.AddrPort) error {
	c := conn{Transport: "udp", Src: from.Addr(), SrcPort: from.Port(), DstPort: to.Port()}
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.long = append(s.long, c)
	s.mu.Unlock()
	sizes := netnstest.UDPSizes(97, netnstest.MaxUDPPayload(to.Addr()))
	tick := time.NewTicker(s.o.UDPGap)
	defer tick.Stop()
	for i := 0; !s.stopped(); i++ {
		size := sizes[i%len(sizes)]
		if _, err := client.WriteToUDPAddrPort(make([]byte, size), to); err != nil {
			return fmt.Errorf("%s: datagram %d: %w", c, i, err)
		}
		s.mu.Lock()
		v := s.sent[c]
		s.sent[c] = counts{Packets: v.Packets + 1, Bytes: v.Bytes + netnstest.UDPFrameBytes(to.Addr(), size)}
		s.mu.Unlock()
		select {
		case <-tick.C:
		case <-s.stopc:
		}
	}
	return nil
}

// receiveUDP reads datagrams on server and counts them by sender until
// a read finds nothing for 200 ms once the senders have ended.
func (s *steadyTraffic) receiveUDP(server *net.UDPConn) error {
	buf := make([]byte, 65536)
	to := server.LocalAddr().(*net.UDPAddr).AddrPort()
	for {
		if err := server.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			return err
		}
		n, from, err := server.ReadFromUDPAddrPort(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			select {
			case <-s.clientsDone:
				return nil
			default:
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("receive on %s: %w", to, err)
		}
		c := conn{Transport: "udp", Src: from.Addr().Unmap(), SrcPort: from.Port(), DstPort: to.Port()}
		s.mu.Lock()
		v := s.recvd[c]
		s.recvd[c] = counts{Packets: v.Packets + 1, Bytes: v.Bytes + netnstest.UDPFrameBytes(c.Src, n)}
		s.mu.Unlock()
	}
}

// startShortConns starts a short connection from src to to every
// ShortEvery until stopped.
func (s *steadyTraffic) startShortConns(src netip.Addr, to netip.AddrPort) error {
	tick := time.NewTicker(s.o.ShortEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s.client(func() error { return s.converse(src, to, s.o.ShortRounds) })
		case <-s.stopc:
			return nil
		}
	}
}

// The messages of a steady TCP conversation: the client sends a 4-byte
// length and that many bytes (from 100 to 8100: small requests and
// segments of a full MSS), the server answers each with 300 bytes. A length
// of 0 says goodbye: the server shuts its side down first, so that the
// client's FIN is the client's last packet, and the server has seen every
// packet of the client when it reads it.
const (
	steadyResponse = 300
	steadyMaxBody  = 8100
)

// serveTCP serves steady conversations on ln until wait closes it.
func (s *steadyTraffic) serveTCP(ln *net.TCPListener) error {
	for {
		c, err := ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		s.server(func() error { return s.serveConn(c) })
	}
}

func (s *steadyTraffic) serveConn(c *net.TCPConn) error {
	defer c.Close()
	peer := c.RemoteAddr()
	body := make([]byte, steadyMaxBody)
	resp := make([]byte, steadyResponse)
	for {
		if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
			return err
		}
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return fmt.Errorf("server of %s: %w", peer, err)
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 {
			break
		}
		if n > steadyMaxBody {
			return fmt.Errorf("server of %s: a request of %d bytes", peer, n)
		}
		if _, err := io.ReadFull(c, body[:n]); err != nil {
			return fmt.Errorf("server of %s: %w", peer, err)
		}
		if _, err := c.Write(resp); err != nil {
			return fmt.Errorf("server of %s: %w", peer, err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("server of %s: %w", peer, err)
	}
	if n, err := c.Read(body); err != io.EOF {
		return fmt.Errorf("server of %s: after goodbye, read %d bytes, %v; want EOF", peer, n, err)
	}
	return nil
}

// converse runs a steady conversation from src to to: rounds rounds, or
// until the traffic stops if rounds is negative.
func (s *steadyTraffic) converse(src netip.Addr, to netip.AddrPort, rounds int) error {
	var c *net.TCPConn
	err := s.pair.Do(s.pair.Sender, func() error {
		sport := steadyFirstTCPPort + int(s.tcpPorts.Add(1)) - 1
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice(), Port: sport}, Timeout: ioTimeout}
		nc, err := d.Dial("tcp", to.String())
		if err != nil {
			return err
		}
		c = nc.(*net.TCPConn)
		return nil
	})
	if err != nil {
		return fmt.Errorf("dial %s from %s: %w", to, src, err)
	}
	defer c.Close()
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	id := conn{Transport: "tcp", Src: local.Addr().Unmap(), SrcPort: local.Port(), DstPort: to.Port()}
	s.mu.Lock()
	s.conns = append(s.conns, id)
	if rounds < 0 {
		s.long = append(s.long, id)
	}
	s.mu.Unlock()

	msg := make([]byte, 4+steadyMaxBody)
	resp := make([]byte, steadyResponse)
	for i := 0; i != rounds && !s.stopped(); i++ {
		n := 100 + (i*1013)%(steadyMaxBody-100+1)
		binary.BigEndian.PutUint32(msg, uint32(n))
		if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
			return err
		}
		if _, err := c.Write(msg[:4+n]); err != nil {
			return fmt.Errorf("%s: request %d: %w", id, i, err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return fmt.Errorf("%s: response %d: %w", id, i, err)
		}
		if rounds < 0 {
			select {
			case <-time.After(s.o.TCPGap):
			case <-s.stopc:
			}
		}
	}
	binary.BigEndian.PutUint32(msg, 0)
	if _, err := c.Write(msg[:4]); err != nil {
		return fmt.Errorf("%s: goodbye: %w", id, err)
	}
	if n, err := c.Read(resp); err != io.EOF {
		return fmt.Errorf("%s: after goodbye, read %d bytes, %v; want EOF", id, n, err)
	}
	return c.Close()
}
