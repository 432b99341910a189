//go:build linux

package netnstest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// This file holds the traffic generators and checks shared by the tests
// that use a Pair: UDP datagrams sent at a controlled pace and a TCP
// conversation.

// MTU is the MTU of both veth ends.
const MTU = 1500

// ListenUDP opens a UDP socket bound to a inside namespace ns and closes
// it when the test ends (tb.Cleanup). It fails the test if the socket
// cannot be opened.
func ListenUDP(tb testing.TB, ns string, a netip.AddrPort) *net.UDPConn {
	tb.Helper()
	var c *net.UDPConn
	err := Do(ns, func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
		return err
	})
	if err != nil {
		tb.Fatalf("listen udp %s in %s: %v", a, ns, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// ListenTCP listens on a inside namespace ns until the test ends
// (tb.Cleanup closes the listener, if its user has not). It fails the test
// if it cannot listen.
func ListenTCP(tb testing.TB, ns string, a netip.AddrPort) *net.TCPListener {
	tb.Helper()
	var ln *net.TCPListener
	err := Do(ns, func() error {
		var err error
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(a))
		return err
	})
	if err != nil {
		tb.Fatalf("listen tcp %s in %s: %v", a, ns, err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// UDPSizes returns k (at least 2) payload sizes from 0 to maxSize, both
// included: size i is (i*211) mod (maxSize+1), except size 1, which is
// maxSize. The sequence is deterministic.
func UDPSizes(k, maxSize int) []int {
	sizes := make([]int, k)
	for i := range sizes {
		sizes[i] = (i * 211) % (maxSize + 1)
	}
	sizes[1] = maxSize
	return sizes
}

// MaxUDPPayload returns the largest UDP payload that fits one MTU-sized
// IP packet to or from an address of a's family (no IP options, no IPv6
// extension headers).
func MaxUDPPayload(a netip.Addr) int {
	return MTU - ipHeader(a) - 8
}

// UDPFrameBytes returns the size of the Ethernet frame that carries a UDP
// datagram with payload bytes of payload to or from an address of a's
// family: Ethernet, IP and UDP headers and the payload.
func UDPFrameBytes(a netip.Addr, payload int) uint64 {
	return uint64(14 + ipHeader(a) + 8 + payload)
}

func ipHeader(a netip.Addr) int {
	if a.Is6() {
		return 40
	}
	return 20
}

// Datagram is one datagram for SendUDP: the socket it is sent from and
// its payload size.
type Datagram struct {
	From *net.UDPConn
	Size int
}

// UDPPacing says how SendUDP paces and checks the datagrams it sends.
type UDPPacing struct {
	// Batch is how many datagrams SendUDP sends before it waits until
	// the server socket has received every datagram sent so far (it
	// also waits after the last one). Values below 1 mean 1.
	Batch int
	// Gap, if positive, is a pause after each datagram.
	Gap time.Duration
	// Timeout bounds each wait for datagrams to arrive.
	Timeout time.Duration
	// InOrder, if set, also requires the datagrams to arrive in the
	// order they were sent, each from its socket and with its size.
	InOrder bool
}

// SendUDP sends dgrams in order to the address to, where the socket
// server reads them, pacing them as p says so that none is dropped in
// the veth or socket queues. Datagram i's payload is Size bytes of value
// byte(i).
//
// It fails the test if a send fails, if a wait for datagrams times out,
// if a datagram arrives from an address none of the sending sockets is
// bound to, if the datagrams and payload bytes received from a socket
// differ from what it sent, or (with p.InOrder) if the datagrams arrive
// out of order. It returns the datagrams' total frame bytes (see
// UDPFrameBytes).
func SendUDP(tb testing.TB, server *net.UDPConn, to netip.AddrPort, dgrams []Datagram, p UDPPacing) uint64 {
	tb.Helper()
	batch := max(p.Batch, 1)
	unmap := func(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
	// Per source: payload bytes + datagrams (+1: a 0-byte datagram
	// counts too).
	sent := map[netip.AddrPort]int{}
	got := map[netip.AddrPort]int{}
	for _, d := range dgrams {
		sent[unmap(d.From.LocalAddr().(*net.UDPAddr).AddrPort())] = 0
	}
	buf := make([]byte, 65536)
	var frameBytes uint64
	received := 0
	for i, d := range dgrams {
		if _, err := d.From.WriteToUDPAddrPort(bytes.Repeat([]byte{byte(i)}, d.Size), to); err != nil {
			tb.Fatalf("send datagram %d (%d bytes) to %s: %v", i, d.Size, to, err)
		}
		sent[unmap(d.From.LocalAddr().(*net.UDPAddr).AddrPort())] += d.Size + 1
		frameBytes += UDPFrameBytes(to.Addr(), d.Size)
		if p.Gap > 0 {
			time.Sleep(p.Gap)
		}
		if (i+1)%batch != 0 && i != len(dgrams)-1 {
			continue
		}
		if err := server.SetReadDeadline(time.Now().Add(p.Timeout)); err != nil {
			tb.Fatal(err)
		}
		for received < i+1 {
			n, from, err := server.ReadFromUDPAddrPort(buf)
			if err != nil {
				tb.Fatalf("received %d of %d datagrams sent to %s: %v", received, i+1, to, err)
			}
			from = unmap(from)
			if _, ok := sent[from]; !ok {
				tb.Fatalf("datagram %d: from %s, which sent nothing", received, from)
			}
			if want := dgrams[received]; p.InOrder {
				wantFrom := unmap(want.From.LocalAddr().(*net.UDPAddr).AddrPort())
				if from != wantFrom || n != want.Size {
					tb.Fatalf("datagram %d: %d bytes from %s, want %d from %s", received, n, from, want.Size, wantFrom)
				}
			}
			got[from] += n + 1
			received++
		}
	}
	for from, n := range sent {
		if got[from] != n {
			tb.Fatalf("from %s: received %d (payload bytes + datagrams), sent %d", from, got[from], n)
		}
	}
	return frameBytes
}

// SendUDPFlow opens a UDP socket on dst in pair's receiver namespace and
// one on src in its sender namespace (both closed when the test ends) and
// sends one datagram per payload size from src to dst with SendUDP, paced
// and checked as p says. It returns the datagrams' total frame bytes.
func SendUDPFlow(tb testing.TB, pair *Pair, src, dst netip.AddrPort, sizes []int, p UDPPacing) uint64 {
	tb.Helper()
	server := ListenUDP(tb, pair.Receiver, dst)
	client := ListenUDP(tb, pair.Sender, src)
	dgrams := make([]Datagram, len(sizes))
	for i, size := range sizes {
		dgrams[i] = Datagram{From: client, Size: size}
	}
	return SendUDP(tb, server, dst, dgrams, p)
}

// TCPConversation says what a TCP conversation run by Converse does.
type TCPConversation struct {
	// Rounds is the number of request/response round trips: 100-byte
	// requests from the client, 300-byte responses from the server.
	Rounds int
	// Bulk is how many bytes the client writes after the round trips.
	Bulk int
	// Timeout bounds the server's accept, the client's dial and, from
	// when each end has its connection, the whole conversation on it.
	Timeout time.Duration
	// BeforeDial and AfterDial, if not nil, are called right before the
	// client dials (before its SYN is sent) and right after the dial
	// returns (the server's SYN-ACK has arrived), also if it fails.
	BeforeDial, AfterDial func()
}

// Request and response sizes of a TCPConversation's round trips.
const (
	tcpRequestSize  = 100
	tcpResponseSize = 300
)

// Converse serves one TCP connection on to in pair's receiver namespace
// and connects to it from src (port chosen by the kernel) in the sender
// namespace. The client and the server run the round trips, then the
// client writes c.Bulk bytes; the server reads them, shuts down its
// sending side and waits for the client's FIN; the client reads EOF and
// closes. Converse returns when the server has read that FIN, so every
// packet of the client has arrived; it returns the client's address (an
// IPv4 address unmapped).
//
// It fails the test if any step of either end fails or times out; the
// server's goroutine has ended when Converse returns or fails.
func (c TCPConversation) Converse(tb testing.TB, pair *Pair, src netip.Addr, to netip.AddrPort) netip.AddrPort {
	tb.Helper()
	ln := ListenTCP(tb, pair.Receiver, to)
	serverErr := make(chan error, 1)
	go func() { serverErr <- c.serve(ln) }()
	// On a failure of the client, report the server's error too; the
	// server ends by itself, at the latest at its deadlines.
	waited := false
	defer func() {
		ln.Close()
		if !waited {
			if err := <-serverErr; err != nil {
				tb.Errorf("server: %v", err)
			}
		}
	}()

	var conn *net.TCPConn
	if c.BeforeDial != nil {
		c.BeforeDial()
	}
	err := pair.Do(pair.Sender, func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: c.Timeout}
		nc, err := d.Dial("tcp", to.String())
		if err != nil {
			return err
		}
		conn = nc.(*net.TCPConn)
		return nil
	})
	if c.AfterDial != nil {
		c.AfterDial()
	}
	if err != nil {
		tb.Fatalf("dial %s from %s: %v", to, src, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(c.Timeout)); err != nil {
		tb.Fatal(err)
	}
	req := bytes.Repeat([]byte("q"), tcpRequestSize)
	resp := make([]byte, tcpResponseSize)
	for i := range c.Rounds {
		if _, err := conn.Write(req); err != nil {
			tb.Fatalf("request %d: %v", i, err)
		}
		if _, err := io.ReadFull(conn, resp); err != nil {
			tb.Fatalf("response %d: %v", i, err)
		}
	}
	if _, err := conn.Write(bytes.Repeat([]byte("b"), c.Bulk)); err != nil {
		tb.Fatalf("bulk write: %v", err)
	}
	if n, err := conn.Read(resp); err != io.EOF {
		tb.Fatalf("after bulk: read %d bytes, %v; want EOF", n, err)
	}
	local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	if err := conn.Close(); err != nil {
		tb.Fatalf("close: %v", err)
	}
	waited = true
	if err := <-serverErr; err != nil {
		tb.Fatalf("server: %v", err)
	}
	return netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
}

// serve is the server side of Converse on one connection accepted on ln.
func (c TCPConversation) serve(ln *net.TCPListener) error {
	if err := ln.SetDeadline(time.Now().Add(c.Timeout)); err != nil {
		return err
	}
	conn, err := ln.AcceptTCP()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(c.Timeout)); err != nil {
		return err
	}
	req := make([]byte, tcpRequestSize)
	resp := bytes.Repeat([]byte("r"), tcpResponseSize)
	for i := range c.Rounds {
		if _, err := io.ReadFull(conn, req); err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		if _, err := conn.Write(resp); err != nil {
			return fmt.Errorf("response %d: %w", i, err)
		}
	}
	n, err := io.Copy(io.Discard, io.LimitReader(conn, int64(c.Bulk)))
	if err != nil || n != int64(c.Bulk) {
		return fmt.Errorf("bulk: read %d of %d bytes: %v", n, c.Bulk, err)
	}
	if err := conn.CloseWrite(); err != nil {
		return err
	}
	if n, err := conn.Read(req); err != io.EOF {
		return fmt.Errorf("after bulk: read %d bytes, %v; want EOF", n, err)
	}
	return nil
}
