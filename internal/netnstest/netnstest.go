//go:build linux

// Package netnstest builds a two-host test network out of two network
// namespaces joined by a veth pair, for tests that need real traffic
// through real interfaces (XDP attach, receiver and end-to-end tests).
//
// Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and nothing
// else: namespaces, links, addresses, neighbours and routes are set up
// through rtnetlink, offloads through the ethtool ioctl, and captures read
// an AF_PACKET socket. No command (ip, ethtool, tcpdump) is run.
//
// The network is fixed: the sender namespace holds SenderIface with
// SenderMAC, SenderIPv4/24 and SenderIPv6/64; the receiver namespace holds
// ReceiverIface with ReceiverMAC, ReceiverIPv4/24 and ReceiverIPv6/64.
// Neighbour entries are permanent on both sides, so no ARP or neighbour
// discovery takes place and no datagram waits for address resolution, and
// TSO, GSO and GRO are off on both ends, so one frame sent is one packet
// seen everywhere (XDP, the stack, a capture).
//
// The namespaces are named (bind-mounted in /run/netns, as by
// `ip netns add`), so iproute2 and other tools can inspect them.
package netnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// Prefix starts the name of every namespace this package creates. Names
// are Prefix + "<pid>-<counter>-snd" and Prefix + "<pid>-<counter>-rcv".
const Prefix = "xdpft-"

// Interface names, identical in every Pair (each lives in its own
// namespace, so they never collide).
const (
	// SenderIface is the veth end in the sender namespace.
	SenderIface = "veth-snd"
	// ReceiverIface is the veth end in the receiver namespace.
	ReceiverIface = "veth-rcv"
)

// Addresses of the two ends, identical in every Pair. MACs are locally
// administered; IP addresses are from TEST-NET-2 and a ULA prefix.
var (
	// SenderMAC is the hardware address of SenderIface.
	SenderMAC = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
	// ReceiverMAC is the hardware address of ReceiverIface.
	ReceiverMAC = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02}
	// SenderIPv4 is the IPv4 address of SenderIface, prefix length 24.
	SenderIPv4 = netip.MustParseAddr("198.51.100.1")
	// ReceiverIPv4 is the IPv4 address of ReceiverIface, prefix length 24.
	ReceiverIPv4 = netip.MustParseAddr("198.51.100.2")
	// SenderIPv6 is the IPv6 address of SenderIface, prefix length 64.
	SenderIPv6 = netip.MustParseAddr("fd00:db8::1")
	// ReceiverIPv6 is the IPv6 address of ReceiverIface, prefix length 64.
	ReceiverIPv6 = netip.MustParseAddr("fd00:db8::2")
)

// Pair is two network namespaces joined by a veth pair, configured as the
// package documentation describes. Its fields are read-only.
type Pair struct {
	// Sender and Receiver are the namespace names, usable with Do,
	// StartCapture and the other functions of this package, and with
	// `ip netns exec`.
	Sender   string
	Receiver string
}

var (
	pairCounter atomic.Uint64
	sweepOnce   sync.Once
)

// New creates a Pair and returns once UDP datagrams have crossed the veth
// in both directions over IPv4 and IPv6 (ephemeral ports; nothing is
// attached yet, so tests never see these probes). It registers the
// Pair's removal with tb.Cleanup; the
// removal runs even when the test fails and deletes the veth pair and
// both namespaces. Sockets still open in a namespace keep that (empty)
// namespace alive in the kernel until they are closed, but its name and
// interfaces are gone.
//
// New skips the test unless it runs as root, and fails it when a setup
// step fails. The first call also deletes namespaces left behind by
// earlier test processes that died (see SweepStale).
func New(tb testing.TB) *Pair {
	tb.Helper()
	privtest.RequireRoot(tb)
	sweepOnce.Do(func() {
		if err := SweepStale(); err != nil {
			tb.Logf("netnstest: sweeping stale namespaces: %v", err)
		}
	})

	n := pairCounter.Add(1)
	base := fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), n)
	p := &Pair{Sender: base + "-snd", Receiver: base + "-rcv"}
	tb.Cleanup(func() {
		if err := p.remove(); err != nil {
			tb.Errorf("netnstest: removing namespaces: %v", err)
		}
	})
	if err := p.setup(); err != nil {
		tb.Fatalf("netnstest: building the test network: %v", err)
	}
	return p
}

// setup creates and configures the namespaces and the veth pair.
func (p *Pair) setup() error {
	for _, ns := range []string{p.Sender, p.Receiver} {
		if err := addNamed(ns); err != nil {
			return err
		}
		if err := Do(ns, func() error { return setLinkUp("lo") }); err != nil {
			return fmt.Errorf("netns %s: %w", ns, err)
		}
	}
	err := AddVeth(
		VethEnd{NS: p.Sender, Name: SenderIface, MAC: SenderMAC,
			IPv4: netip.PrefixFrom(SenderIPv4, 24), IPv6: netip.PrefixFrom(SenderIPv6, 64)},
		VethEnd{NS: p.Receiver, Name: ReceiverIface, MAC: ReceiverMAC,
			IPv4: netip.PrefixFrom(ReceiverIPv4, 24), IPv6: netip.PrefixFrom(ReceiverIPv6, 64)})
	if err != nil {
		return err
	}
	// Links come up asynchronously (linkwatch): until then the interface
	// has the noop qdisc, which silently drops what is sent. Probe until a
	// datagram crosses each way in each family.
	for _, pr := range []struct {
		fromNS, toNS string
		from, to     netip.Addr
	}{
		{p.Sender, p.Receiver, SenderIPv4, ReceiverIPv4},
		{p.Receiver, p.Sender, ReceiverIPv4, SenderIPv4},
		{p.Sender, p.Receiver, SenderIPv6, ReceiverIPv6},
		{p.Receiver, p.Sender, ReceiverIPv6, SenderIPv6},
	} {
		if err := probe(pr.fromNS, pr.from, pr.toNS, pr.to); err != nil {
			return err
		}
	}
	return nil
}

// probeTimeout bounds the wait for the link to carry traffic.
const probeTimeout = 10 * time.Second

// probe sends UDP datagrams between ephemeral ports from address from in
// namespace fromNS to address to in namespace toNS until one arrives.
func probe(fromNS string, from netip.Addr, toNS string, to netip.Addr) error {
	listen := func(ns string, a netip.Addr) (*net.UDPConn, error) {
		var c *net.UDPConn
		err := Do(ns, func() error {
			var err error
			c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
			return err
		})
		return c, err
	}
	dst, err := listen(toNS, to)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer dst.Close()
	src, err := listen(fromNS, from)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer src.Close()
	deadline := time.Now().Add(probeTimeout)
	buf := make([]byte, 64)
	for time.Now().Before(deadline) {
		if _, err := src.WriteToUDPAddrPort([]byte("netnstest probe"), dst.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
			return fmt.Errorf("probe %s -> %s: %w", from, to, err)
		}
		dst.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, _, err := dst.ReadFromUDPAddrPort(buf); err == nil {
			return nil
		}
	}
	return fmt.Errorf("probe: no datagram from %s (netns %s) reached %s (netns %s) within %v", from, fromNS, to, toNS, probeTimeout)
}

// remove deletes the veth pair, then both namespaces. Deleting the veth
// explicitly removes it at once, even if open sockets or running
// processes still hold a namespace.
func (p *Pair) remove() error {
	var errs []error
	if Exists(p.Sender) {
		if err := DeleteLink(p.Sender, SenderIface); err != nil && !isLinkNotFound(err) {
			errs = append(errs, err)
		}
	}
	for _, ns := range []string{p.Sender, p.Receiver} {
		if !Exists(ns) {
			continue
		}
		if err := deleteNamed(ns); err != nil {
			errs = append(errs, err)
		}
		if Exists(ns) {
			errs = append(errs, fmt.Errorf("namespace %s still exists after its deletion", ns))
		}
	}
	return errors.Join(errs...)
}
