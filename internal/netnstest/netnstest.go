//go:build linux

// Package netnstest builds a two-host test network out of two network
// namespaces joined by a veth pair, for tests that need real traffic
// through real interfaces (XDP attach, receiver and end-to-end tests).
//
// Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the
// commands ip (iproute2), ethtool and, for captures, tcpdump.
//
// The network is fixed: the sender namespace holds SenderIface with
// SenderMAC, SenderIPv4/24 and SenderIPv6/64; the receiver namespace holds
// ReceiverIface with ReceiverMAC, ReceiverIPv4/24 and ReceiverIPv6/64.
// Neighbour entries are permanent on both sides, so no ARP or neighbour
// discovery takes place and no datagram waits for address resolution, and
// TSO, GSO and GRO are off on both ends, so one frame sent is one packet
// seen everywhere (XDP, the stack, tcpdump).
package netnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// netnsDir is where `ip netns` keeps its bind-mounted namespace files.
const netnsDir = "/run/netns"

// commandTimeout bounds every command this package runs, except captures.
const commandTimeout = 30 * time.Second

// Pair is two network namespaces joined by a veth pair, configured as the
// package documentation describes. Its fields are read-only.
type Pair struct {
	// Sender and Receiver are the namespace names, usable with Do, Run,
	// Command, StartCapture and `ip netns exec`.
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
// step or a needed command (ip, ethtool) fails. The first call also
// deletes namespaces left behind by earlier test processes that died (see
// SweepStale).
func New(tb testing.TB) *Pair {
	tb.Helper()
	privtest.RequireRoot(tb)
	for _, tool := range []string{"ip", "ethtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Fatalf("netnstest needs the %s command (apt package %s): %v", tool, aptPackage(tool), err)
		}
	}
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

func aptPackage(tool string) string {
	switch tool {
	case "ip":
		return "iproute2"
	}
	return tool
}

// setup creates and configures the namespaces and the veth pair.
func (p *Pair) setup() error {
	steps := [][]string{
		{"netns", "add", p.Sender},
		{"netns", "add", p.Receiver},
		{"-n", p.Sender, "link", "add", SenderIface, "address", SenderMAC.String(), "type", "veth",
			"peer", "name", ReceiverIface, "address", ReceiverMAC.String(), "netns", p.Receiver},
	}
	type end struct {
		ns, iface            string
		v4, v6, peer4, peer6 netip.Addr
		peerMAC              net.HardwareAddr
	}
	ends := []end{
		{p.Sender, SenderIface, SenderIPv4, SenderIPv6, ReceiverIPv4, ReceiverIPv6, ReceiverMAC},
		{p.Receiver, ReceiverIface, ReceiverIPv4, ReceiverIPv6, SenderIPv4, SenderIPv6, SenderMAC},
	}
	for _, e := range ends {
		steps = append(steps,
			[]string{"-n", e.ns, "link", "set", "lo", "up"},
			[]string{"-n", e.ns, "addr", "add", e.v4.String() + "/24", "dev", e.iface},
			[]string{"-n", e.ns, "addr", "add", e.v6.String() + "/64", "dev", e.iface, "nodad"},
			[]string{"-n", e.ns, "link", "set", e.iface, "up"},
			[]string{"-n", e.ns, "neigh", "replace", e.peer4.String(), "lladdr", e.peerMAC.String(), "dev", e.iface, "nud", "permanent"},
			[]string{"-n", e.ns, "neigh", "replace", e.peer6.String(), "lladdr", e.peerMAC.String(), "dev", e.iface, "nud", "permanent"},
		)
	}
	for _, args := range steps {
		if _, err := run("ip", args...); err != nil {
			return err
		}
	}
	for _, e := range ends {
		if _, err := Run(e.ns, "ethtool", "-K", e.iface, "tso", "off", "gso", "off", "gro", "off"); err != nil {
			return err
		}
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
	if nsExists(p.Sender) {
		if out, err := run("ip", "-n", p.Sender, "link", "show", "dev", SenderIface); err == nil && out != "" {
			if _, err := run("ip", "-n", p.Sender, "link", "del", "dev", SenderIface); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, ns := range []string{p.Sender, p.Receiver} {
		if !nsExists(ns) {
			continue
		}
		if _, err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
		if nsExists(ns) {
			errs = append(errs, fmt.Errorf("namespace %s still exists after ip netns del", ns))
		}
	}
	return errors.Join(errs...)
}

func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

// Exists reports whether a namespace named name exists in /run/netns.
func Exists(name string) bool { return nsExists(name) }

var staleName = regexp.MustCompile(`^` + regexp.QuoteMeta(Prefix) + `(\d+)-`)

// SweepStale deletes the namespaces named Prefix + "<pid>-..." whose
// process no longer exists: leftovers of test binaries that were killed
// before their cleanup ran. Namespaces of live processes are untouched.
func SweepStale() error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if _, err := run("ip", "netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// Do runs fn on a new goroutine locked to an OS thread that was switched
// into the network namespace ns (see the package-level Do).
func (p *Pair) Do(ns string, fn func() error) error { return Do(ns, fn) }

// Do runs fn on a new goroutine locked to an OS thread that was switched
// into the network namespace named ns, waits for it and returns its error.
//
// Sockets fn creates (net.Listen, net.Dial, net.ListenPacket, ...) and
// interface lookups or BPF attachments it makes belong to ns; sockets stay
// usable from any goroutine afterwards. Goroutines fn starts do not run in
// ns. The thread is never unlocked, so it exits with the goroutine and is
// never reused in the wrong namespace. A panic in fn is returned as an
// error; fn must not call t.FailNow (return an error instead).
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		err := fmt.Errorf("netns %s: function exited without returning (runtime.Goexit, e.g. t.FailNow?)", ns)
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("netns %s: panic: %v\n%s", ns, r, debug.Stack())
			}
			errc <- err
		}()
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with this goroutine.
		if err = enter(ns); err != nil {
			return
		}
		err = fn()
	}()
	return <-errc
}

// enter switches the calling thread into the namespace named ns.
func enter(ns string) error {
	f, err := os.Open(filepath.Join(netnsDir, ns))
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	return nil
}

// Ifindex returns the index of the interface named iface in namespace ns.
func Ifindex(ns, iface string) (int, error) {
	var idx int
	err := Do(ns, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return fmt.Errorf("interface %s in netns %s: %w", iface, ns, err)
		}
		idx = ifc.Index
		return nil
	})
	return idx, err
}

// Command returns a command that runs name with args inside namespace ns
// through `ip netns exec`, which execs it (the process's PID is name's
// PID). The caller starts and waits for it; ctx kills it when done.
func Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Run runs name with args inside namespace ns, waits at most 30 seconds
// and returns its combined output. The error includes the command line and
// the output.
func Run(ns, name string, args ...string) (string, error) {
	return run("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// run runs a command with commandTimeout and returns its combined output.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", cmd, err, out)
	}
	return string(out), nil
}
