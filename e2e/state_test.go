//go:build linux

package e2e

// The state_directory tests: the collector keeps its flow table and its
// XDP links on a BPF file system the test mounts, is killed or stopped,
// and a new collector takes them over (or, for another grouping or table
// size, starts a new table). tcpdump is the witness of the whole run.

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

const (
	// stateOTLPAddr and stateOTLPAddr2 are where the tests' OTLP/HTTP
	// backends listen, on loopback in the receiver namespace.
	stateOTLPAddr  = "127.0.0.1:14319"
	stateOTLPAddr2 = "127.0.0.1:14320"
	// stateReceiver is the receiver's id, hence its subdirectory of
	// state_directory.
	stateReceiver = "xdpflow"
	// Log lines of the receiver about its state directory.
	stateNewLog      = "Flow table pinned in the state directory"
	stateTakenLog    = "Flow table taken over from the state directory"
	stateReplacedLog = "Starting a new flow table in the state directory: "
	// signalHandlerDelay is longer than the collector takes from its
	// ready line to handling SIGTERM.
	signalHandlerDelay = 200 * time.Millisecond
	// detachTimeout bounds the wait for a program to go once its pinned
	// link is removed.
	detachTimeout = 5 * time.Second
)

// stateAgentConfig is a collector with the xdpflow receiver with settings
// s (its state_directory, ports and more) and a snapshot every second,
// exporting over OTLP/HTTP to addr.
func stateAgentConfig(s xdpflowSettings, addr string) string {
	s.CollectionInterval, s.MinSnapshotInterval, s.NewConnectionsPerEvent = time.Second, time.Second, 5
	return collectorConfig{
		Receivers: []component{xdpflowReceiver(s)},
		Exporters: []component{otlpHTTPExporter(addr)},
	}.String()
}

// mountStateDirectory mounts a BPF file system of the test's own (see
// privtest.MountBPFFS) and returns the state directory in it. The
// collectors the test starts through `ip netns exec` see the mount: their
// mount namespace is a copy of the test's, made after the mount, and the
// pins in it are those of one file system. It is unmounted, with
// whatever is pinned, when the test ends, after the collectors stopped.
func mountStateDirectory(t *testing.T) string {
	t.Helper()
	return filepath.Join(privtest.MountBPFFS(t), "xdpflow-state")
}

// requireLog fails the test unless the process's output holds s exactly
// want times.
func requireLog(t *testing.T, p *process, s string, want int) {
	t.Helper()
	if got := strings.Count(p.output.String(), s); got != want {
		t.Fatalf("%s logged %q %d times, want %d:\n%s", p.name, s, got, want, p.output.String())
	}
}

// removeStateDetaches removes the receiver's subdirectory of the state
// directory, as README tells a user to once no collector runs, and checks
// that this detaches the program and leaves nothing pinned.
func removeStateDetaches(t *testing.T, pair *netnstest.Pair, dir string) {
	t.Helper()
	sub := filepath.Join(dir, stateReceiver)
	pinned, err := os.ReadDir(sub)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range pinned {
		names = append(names, e.Name())
	}
	prog := requireAttached(t, pair, "before the state directory is removed")
	removed := time.Now()
	if err := os.RemoveAll(sub); err != nil {
		t.Fatalf("rm -r %s: %v", sub, err)
	}
	// The kernel frees an unlinked pin after an RCU grace period, and the
	// link's release then runs from a workqueue: moments later.
	for {
		xdp, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface)
		if !ok {
			break
		}
		if time.Since(removed) > detachTimeout {
			t.Fatalf("program %d still on %s %v after rm -r %s", xdp.ProgID, netnstest.ReceiverIface, detachTimeout, sub)
		}
		time.Sleep(5 * time.Millisecond)
	}
	detached := time.Since(removed)
	left, err := os.ReadDir(dir)
	if err != nil || len(left) != 0 {
		t.Errorf("left in %s: %v (%v)", dir, left, err)
	}
	t.Logf("no collector running, %s held %v and kept program %d on %s; rm -r detached it within %v",
		sub, names, prog, netnstest.ReceiverIface, detached.Round(time.Millisecond))
}

// kill sends SIGKILL to the process by its PID and waits until it has
// been reaped; the stop at the test's end then does nothing.
func (p *process) kill(t *testing.T) {
	t.Helper()
	var err error
	p.once.Do(func() {
		defer p.cancel()
		err = p.cmd.Process.Kill()
		<-p.exited
	})
	if err != nil {
		t.Fatalf("SIGKILL %s (pid %d): %v", p.name, p.pid(), err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.pid())); !os.IsNotExist(err) {
		t.Fatalf("%s (pid %d) still exists after SIGKILL: %v", p.name, p.pid(), err)
	}
}

// checkStartTimes checks that every connection of captured had exactly
// one start time in what the backend received, and that those whose
// series it received before (before) kept theirs. It returns how many
// connections had series before.
func checkStartTimes(t *testing.T, captured map[conn]counts, before, after map[conn][]time.Time) int {
	t.Helper()
	kept := 0
	for _, c := range sortedConns(captured) {
		starts := after[c]
		if len(starts) != 1 {
			t.Errorf("%s: start times %v, want one", c, starts)
			continue
		}
		if old, ok := before[c]; ok {
			kept++
			if len(old) != 1 || !old[0].Equal(starts[0]) {
				t.Errorf("%s: start times %v before, %v after, want the same one", c, old, starts[0])
			}
		}
	}
	return kept
}

// capturedBetween sums the packets and frame bytes of a capture that
// arrived from from to to.
func capturedBetween(res tcpdumpResult, from, to time.Time) counts {
	var c counts
	for _, pkt := range res.Pcap.Packets {
		if !pkt.Time.Before(from) && pkt.Time.Before(to) {
			c.Packets++
			c.Bytes += uint64(pkt.OrigLen)
		}
	}
	return c
}

// sumCounts sums the counts of every connection.
func sumCounts(m map[conn]counts) counts {
	var s counts
	for _, v := range m {
		s = s.plus(v)
	}
	return s
}

// TestSIGKILLRestartWithStateKeepsCounts runs a collector with a state
// directory while UDP flows and long and short TCP connections, over IPv4
// and IPv6, send to port 8080 without a pause; kills it with SIGKILL
// (by PID), waits a second, and starts another with the same
// configuration. The program stays attached meanwhile, and the second
// collector's program takes over its link. The final values the
// backend receives must equal tcpdump's capture of the whole run, packets
// sent while no collector ran included, and every connection must have one
// start time, the same before and after the kill. Stopping the second
// collector leaves the program attached, and removing the state directory
// detaches it.
func TestSIGKILLRestartWithStateKeepsCounts(t *testing.T) {
	bin := requireCollector(t)
	pair := netnstest.New(t)
	dir := mountStateDirectory(t)
	backend := startOTLPHTTPBackend(t, pair.Receiver, stateOTLPAddr)
	cfg := stateAgentConfig(xdpflowSettings{StateDirectory: dir, Ports: []int{port}}, stateOTLPAddr)
	first := startCollector(t, bin, "A1", pair.Receiver, cfg)
	requireNativeAttach(t, first)
	requireLog(t, first, stateNewLog, 1)
	firstProg := requireAttached(t, pair, "first collector")

	capture := capturePort(t, pair)
	began := time.Now()
	steady := startSteadyTraffic(t, pair, steadyOptions{
		UDPFlows: 2, UDPGap: 4 * time.Millisecond,
		LongTCP: 2, TCPGap: 10 * time.Millisecond,
		ShortEvery: 200 * time.Millisecond, ShortRounds: 5,
		Limit: time.Minute,
	})
	// Kill once the first collector has exported every long-lived
	// connection, and some time has passed.
	const longLived = 2 * (2 + 2) // per family: 2 UDP flows, 2 long TCP connections
	deadline := time.Now().Add(valuesTimeout)
	for {
		starts, long := backend.flowStarts(), steady.longLived()
		if len(long) == longLived && !slices.ContainsFunc(long, func(c conn) bool { return starts[c] == nil }) &&
			time.Since(began) > 2*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first collector exported %s within %v", backend, valuesTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	killed := time.Now()
	first.kill(t)
	before := backend.flowStarts()
	if prog := requireAttached(t, pair, "after SIGKILL"); prog != firstProg {
		t.Fatalf("program %d on %s after SIGKILL, want the first collector's %d", prog, netnstest.ReceiverIface, firstProg)
	}

	time.Sleep(time.Second)
	second := startCollector(t, bin, "A2", pair.Receiver, cfg)
	restarted := time.Now()
	requireNativeAttach(t, second)
	requireLog(t, second, stateTakenLog, 1)
	requireLog(t, second, stateReplacedLog, 0)
	secondProg := requireAttached(t, pair, "second collector")
	if secondProg == firstProg {
		t.Errorf("the second collector left the first's program %d on %s, want its own", firstProg, netnstest.ReceiverIface)
	}

	time.Sleep(2 * time.Second)
	tr := steady.finish(t)
	res, err := capture.stop()
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	ended := time.Now()
	captured := captureCounts(t, res)
	if got, want := sortedConns(captured), slices.SortedFunc(slices.Values(tr.conns), compareConns); !slices.Equal(got, want) {
		t.Fatalf("capture holds connections %v, sent %v", got, want)
	}
	fm := waitLatest(t, backend.read, captured, valuesTimeout)
	checkLatest(t, "OTLP/HTTP backend", fm, captured, tr.sent)
	kept := checkStartTimes(t, captured, before, backend.flowStarts())
	if kept < longLived {
		t.Errorf("%d connections had series before the kill, want at least the %d long-lived ones", kept, longLived)
	}

	if err := second.stop(); err != nil {
		t.Errorf("second collector: %v", err)
	}
	if prog := requireAttached(t, pair, "after the second collector stopped"); prog != secondProg {
		t.Errorf("program %d on %s after the second collector stopped, want its %d", prog, netnstest.ReceiverIface, secondProg)
	}
	removeStateDetaches(t, pair, dir)

	total, gap := sumCounts(captured), capturedBetween(res, killed, restarted)
	t.Logf("%d connections (%d UDP flows, %d TCP connections), %s over %v; %d had series before the kill and kept their start time",
		len(captured), 2*2, len(captured)-2*2, total, ended.Sub(began).Round(time.Millisecond), kept)
	t.Logf("SIGKILL to the second collector ready: %v, with %s captured meanwhile; all counted and exported; OTLP/HTTP backend: %s",
		restarted.Sub(killed).Round(time.Millisecond), gap, backend)
	long := slices.SortedFunc(slices.Values(steady.longLived()), compareConns)
	short := map[conn]counts{}
	for c, v := range captured {
		if !slices.Contains(long, c) {
			short[c] = v
		}
	}
	var shortExported counts
	for c := range short {
		shortExported.Packets += fm.values[c].Packets
		shortExported.Bytes += fm.values[c].Bytes
	}
	t.Logf("final values of the long-lived connections:\n%s%d short TCP connections: tcpdump %s, OTLP/HTTP backend %s",
		table(long, []string{"sender (UDP)", "tcpdump", "OTLP/HTTP backend"}, tr.sent, captured, fm.values),
		len(short), sumCounts(short), shortExported)
}

// udpSender sends paced datagrams from one socket of the sender namespace
// to sockets of the receiver namespace (servers, shared by the senders of
// a test), and adds them to sent.
type udpSender struct {
	pair    *netnstest.Pair
	client  *net.UDPConn
	servers map[netip.AddrPort]*net.UDPConn
	sent    map[conn]counts
}

// newUDPSender opens a socket on from in the sender namespace.
func newUDPSender(t *testing.T, pair *netnstest.Pair, from netip.AddrPort, servers map[netip.AddrPort]*net.UDPConn, sent map[conn]counts) *udpSender {
	t.Helper()
	return &udpSender{pair: pair, client: netnstest.ListenUDP(t, pair.Sender, from), servers: servers, sent: sent}
}

// send sends n datagrams of sizes from 0 to the MTU to to, where a socket
// (opened on first use) checks that each arrives.
func (u *udpSender) send(t *testing.T, to netip.AddrPort, n int) {
	t.Helper()
	server, ok := u.servers[to]
	if !ok {
		server = netnstest.ListenUDP(t, u.pair.Receiver, to)
		u.servers[to] = server
	}
	sizes := netnstest.UDPSizes(n, netnstest.MaxUDPPayload(to.Addr()))
	dgrams := make([]netnstest.Datagram, len(sizes))
	for i, size := range sizes {
		dgrams[i] = netnstest.Datagram{From: u.client, Size: size}
	}
	b := netnstest.SendUDP(t, server, to, dgrams, netnstest.UDPPacing{Batch: 32, Timeout: ioTimeout, InOrder: true})
	from := u.client.LocalAddr().(*net.UDPAddr).AddrPort()
	c := conn{Transport: "udp", Src: from.Addr().Unmap(), SrcPort: from.Port(), DstPort: to.Port()}
	v := u.sent[c]
	u.sent[c] = counts{Packets: v.Packets + uint64(n), Bytes: v.Bytes + b}
}

// stopKeepsAttached stops p with SIGTERM and checks that its program stays
// attached, pinned in the state directory.
func stopKeepsAttached(t *testing.T, pair *netnstest.Pair, p *process) {
	t.Helper()
	// The collector handles SIGTERM only from just after it logs that it
	// is ready (otelcol's Collector.Run calls signal.Notify then): until
	// then SIGTERM kills it.
	time.Sleep(signalHandlerDelay)
	if err := p.stop(); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	requireLog(t, p, "Shutdown complete.", 1)
	requireAttached(t, pair, p.name+" stopped")
}

// TestStateAcrossConfigurationChanges restarts a collector with a state
// directory under changed configurations, stopping each with SIGTERM:
//
//  1. ports [8080], then (the program counting on meanwhile) ports [8080,
//     9090]: ports do not change the flow key, so the table is taken over;
//     the 8080 series go on with their start times and counts, 9090 is
//     counted from the restart, and everything equals tcpdump's capture.
//  2. attributes without source.port and addresses aggregated to /24 and
//     /120: another key, so a new, empty table and the warning; the series
//     (to a second backend) equal only the capture of what was sent after
//     the restart, summed by the new grouping.
//  3. another max_connections: a new table again, and the warning.
//  4. no state_directory: the pinned program holds the interface, and the
//     collector refuses to start, naming rm -r.
//
// Removing the state directory then detaches the program.
func TestStateAcrossConfigurationChanges(t *testing.T) {
	bin := requireCollector(t)
	pair := netnstest.New(t)
	dir := mountStateDirectory(t)
	const otherPort = 9090
	dst4, dst6 := netip.AddrPortFrom(netnstest.ReceiverIPv4, port), netip.AddrPortFrom(netnstest.ReceiverIPv6, port)
	other4, other6 := netip.AddrPortFrom(netnstest.ReceiverIPv4, otherPort), netip.AddrPortFrom(netnstest.ReceiverIPv6, otherPort)
	tcp := netnstest.TCPConversation{Rounds: 10, Bulk: 32 << 10, Timeout: ioTimeout}
	filter := fmt.Sprintf("dst port %d or dst port %d", port, otherPort)

	// 1. Another port set: taken over.
	backend := startOTLPHTTPBackend(t, pair.Receiver, stateOTLPAddr)
	sent, servers := map[conn]counts{}, map[netip.AddrPort]*net.UDPConn{}
	udp4 := newUDPSender(t, pair, netip.AddrPortFrom(netnstest.SenderIPv4, 41500), servers, sent)
	udp6 := newUDPSender(t, pair, netip.AddrPortFrom(netnstest.SenderIPv6, 41500), servers, sent)
	capture := startTcpdump(t, pair.Receiver, netnstest.ReceiverIface, filter)
	a1 := startCollector(t, bin, "A1", pair.Receiver, stateAgentConfig(xdpflowSettings{StateDirectory: dir, Ports: []int{port}}, stateOTLPAddr))
	requireNativeAttach(t, a1)
	requireLog(t, a1, stateNewLog, 1)
	udp4.send(t, dst4, 40)
	udp6.send(t, dst6, 40)
	tcp.Converse(t, pair, netnstest.SenderIPv4, dst4)
	waitLatest(t, backend.read, sent, valuesTimeout)
	before := backend.flowStarts()
	stopKeepsAttached(t, pair, a1)

	udp4.send(t, dst4, 40) // while no collector runs
	udp6.send(t, dst6, 40)

	a2 := startCollector(t, bin, "A2", pair.Receiver,
		stateAgentConfig(xdpflowSettings{StateDirectory: dir, Ports: []int{port, otherPort}}, stateOTLPAddr))
	requireLog(t, a2, stateTakenLog, 1)
	requireLog(t, a2, stateReplacedLog, 0)
	udp4.send(t, dst4, 40)
	udp6.send(t, dst6, 40)
	udp4.send(t, other4, 40)
	tcp.Converse(t, pair, netnstest.SenderIPv6, other6)
	res, err := capture.stop()
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	captured := captureCounts(t, res)
	fm := waitLatest(t, backend.read, captured, valuesTimeout)
	checkLatest(t, "ports [8080] then [8080, 9090]", fm, captured, sent)
	if kept := checkStartTimes(t, captured, before, backend.flowStarts()); kept != 3 {
		t.Errorf("%d connections had series before the restart, want 3", kept)
	}
	stopKeepsAttached(t, pair, a2)
	t.Logf("ports [%d], then [%d, %d]: the table was taken over; final values:\n%s", port, port, otherPort,
		table(sortedConns(captured), []string{"sender (UDP)", "tcpdump", "OTLP/HTTP backend"}, sent, captured, fm.values))

	// 2. Another attribute set: a new table.
	backend2 := startOTLPHTTPBackend(t, pair.Receiver, stateOTLPAddr2)
	grouped := xdpflowSettings{StateDirectory: dir, Ports: []int{port, otherPort}, More: groupingSettings()}
	sent3 := map[conn]counts{}
	udp4.sent, udp6.sent = sent3, sent3
	capture2 := startTcpdump(t, pair.Receiver, netnstest.ReceiverIface, filter)
	began := time.Now()
	a3 := startCollector(t, bin, "A3", pair.Receiver, stateAgentConfig(grouped, stateOTLPAddr2))
	requireLog(t, a3, stateReplacedLog, 1)
	requireLog(t, a3, stateTakenLog, 0)
	udp4b := newUDPSender(t, pair, netip.AddrPortFrom(netnstest.SenderIPv4, 41501), servers, sent3)
	udp4.send(t, dst4, 30)
	udp4b.send(t, dst4, 30) // the same series: no source port
	udp6.send(t, dst6, 30)
	udp4.send(t, other4, 30)
	tcp.Converse(t, pair, netnstest.SenderIPv4, dst4)
	tcp.Converse(t, pair, netnstest.SenderIPv6, other6)
	res2, err := capture2.stop()
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	want, members := groupCounts(captureCounts(t, res2))
	wantSent, _ := groupCounts(sent3)
	gm := waitLatest(t, backend2.groupedSeries, want, valuesTimeout)
	checkLatest(t, "another attribute set", gm, want, wantSent)
	for _, p := range backend2.points() {
		if p.Metric == "xdpflow.packets" && p.Start.Before(began) {
			t.Errorf("%s %v starts at %v, before the collector with the new table started (%v)", p.Metric, p.Attrs, p.Start, began)
		}
	}
	stopKeepsAttached(t, pair, a3)
	t.Logf("another attribute set: a new table; final values:\n%s",
		seriesTable(members, []string{"sender (UDP)", "tcpdump", "OTLP/HTTP backend"}, wantSent, want, gm.values))

	// 3. Another max_connections: a new table.
	bigger := grouped
	bigger.MaxConnections = 4096
	a4 := startCollector(t, bin, "A4", pair.Receiver, stateAgentConfig(bigger, stateOTLPAddr2))
	requireLog(t, a4, stateReplacedLog, 1)
	stopKeepsAttached(t, pair, a4)

	// 4. Without state_directory while the pinned link holds the
	// interface: refused, naming the way out.
	plain := filepath.Join(t.TempDir(), "plain.yaml")
	stateless := grouped
	stateless.StateDirectory = ""
	if err := os.WriteFile(plain, []byte(stateAgentConfig(stateless, stateOTLPAddr2)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runToExit(t, pair.Receiver, readyTimeout, bin, "--config", plain)
	if err == nil || !strings.Contains(out, "rm -r <state_directory>/<receiver id>") {
		t.Errorf("a collector without state_directory, the pins in place: %v, want a refusal naming rm -r:\n%s", err, out)
	}
	t.Logf("without state_directory, the pins in place: %s", lastErrorLine(out))

	removeStateDetaches(t, pair, dir)
	for _, p := range []*process{a3, a4} {
		for line := range strings.SplitSeq(p.output.String(), "\n") {
			if _, msg, ok := strings.Cut(line, stateReplacedLog); ok {
				msg, _, _ = strings.Cut(msg, "\t")
				t.Logf("%s logged %q", p.name, stateReplacedLog+msg)
			}
		}
	}
}

// TestLeastPrivilegeStateDirectory runs the collector as nobody with
// exactly CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (as TestLeastPrivilege)
// with a state directory on a BPF file system the test mounts (owned by
// root, mode 0700), and measures what it needs there:
//
//   - below a directory it cannot write, it does not start, and says what
//     to do;
//   - with a directory it owns, it pins its table and link there, and after
//     SIGKILL a new collector as nobody takes them over: the counts go on;
//   - pins another user made (root), even in a directory it owns, are
//     refused with the owner's uid and left as they are (not replaced by a
//     new table: their counts would be lost); after chown -R they are
//     taken over.
func TestLeastPrivilegeStateDirectory(t *testing.T) {
	bin := requireCollector(t)
	requireTools(t, "setpriv")
	u := nobody(t)
	pair := netnstest.New(t)
	shared := sharedDir(t, u)
	mnt := filepath.Join(shared, "bpf") // a mount point nobody can reach
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	privtest.MountBPFFSAt(t, mnt)
	dir := filepath.Join(mnt, "xdpflow-state")
	backend := startOTLPHTTPBackend(t, pair.Receiver, stateOTLPAddr)
	cfgText := stateAgentConfig(xdpflowSettings{StateDirectory: dir, Ports: []int{port}}, stateOTLPAddr)
	cfg := writeFileFor(t, u, shared, "config.yaml", cfgText, 0o600)
	asNobody := append(setprivArgs(u, requiredCaps), bin, "--config", cfg)
	refused := func(what string) string {
		t.Helper()
		out, err := runToExit(t, pair.Receiver, readyTimeout, "setpriv", asNobody...)
		if err == nil || strings.Contains(out, collectorReady) {
			t.Fatalf("%s: the collector as nobody started (%v), want a refusal:\n%s", what, err, out)
		}
		errLine := lastErrorLine(out)
		t.Logf("%s: %s", what, errLine)
		return errLine
	}

	// A directory nobody cannot create.
	fi, err := os.Stat(mnt)
	if err != nil {
		t.Fatal(err)
	}
	line := refused(fmt.Sprintf("state_directory in a BPF file system of mode %v owned by root", fi.Mode()))
	if !strings.Contains(line, "permission denied: give the collector's user a directory of its own") {
		t.Errorf("the error does not say what the collector's user needs: %s", line)
	}
	if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); ok {
		t.Fatalf("program %d left on %s", xdp.ProgID, netnstest.ReceiverIface)
	}

	// A directory of its own.
	if err := os.Chmod(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	sent, servers := map[conn]counts{}, map[netip.AddrPort]*net.UDPConn{}
	senders := []*udpSender{
		newUDPSender(t, pair, netip.AddrPortFrom(netnstest.SenderIPv4, 41600), servers, sent),
		newUDPSender(t, pair, netip.AddrPortFrom(netnstest.SenderIPv6, 41600), servers, sent),
	}
	send := func() {
		t.Helper()
		senders[0].send(t, netip.AddrPortFrom(netnstest.ReceiverIPv4, port), 40)
		senders[1].send(t, netip.AddrPortFrom(netnstest.ReceiverIPv6, port), 40)
	}
	first := startCollectorCommand(t, "collector N1 (nobody, 3 capabilities)", pair.Receiver, "setpriv", asNobody...)
	requireLog(t, first, stateNewLog, 1)
	send()
	waitLatest(t, backend.read, sent, valuesTimeout)
	before := backend.flowStarts()
	pins, err := filepath.Glob(filepath.Join(dir, stateReceiver, "*"))
	if err != nil || len(pins) == 0 {
		t.Fatalf("nothing pinned in %s: %v", dir, err)
	}
	for _, p := range append(pins, filepath.Join(dir, stateReceiver)) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != u.uid {
			t.Errorf("%s is owned by uid %d, want nobody's %d", p, st.Uid, u.uid)
		}
	}
	first.kill(t)
	send() // no collector runs
	second := startCollectorCommand(t, "collector N2 (nobody, 3 capabilities)", pair.Receiver, "setpriv", asNobody...)
	requireLog(t, second, stateTakenLog, 1)
	send()
	fm := waitLatest(t, backend.read, sent, valuesTimeout)
	checkLatest(t, "collectors as nobody", fm, sent, sent)
	if kept := checkStartTimes(t, sent, before, backend.flowStarts()); kept != len(sent) {
		t.Errorf("%d of %d connections kept their series across SIGKILL", kept, len(sent))
	}
	stopKeepsAttached(t, pair, second)
	t.Logf("as nobody, in a directory it owns: pinned %d objects, SIGKILLed, taken over; final values:\n%s",
		len(pins), table(sortedConns(sent), []string{"sender", "OTLP/HTTP backend"}, sent, fm.values))

	// Pins of another user.
	sub := filepath.Join(dir, stateReceiver)
	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	stopKeepsAttached(t, pair, startCollector(t, bin, "R (root)", pair.Receiver, cfgText))
	rootProg := requireAttached(t, pair, "root's collector stopped")
	// In a directory nobody owns: nobody could remove them.
	if err := os.Chown(sub, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	line = refused("pins made by root, in a directory nobody owns")
	if !strings.Contains(line, "belongs to uid 0, and only its owner may open it") {
		t.Errorf("the error does not name the pins' owner: %s", line)
	}
	if prog := requireAttached(t, pair, "nobody's collector refused root's pins"); prog != rootProg {
		t.Errorf("program %d on %s, want root's %d left alone", prog, netnstest.ReceiverIface, rootProg)
	}
	left, _ := filepath.Glob(filepath.Join(sub, "*"))
	if len(left) != len(pins) {
		t.Errorf("root's pins after the refusal: %v, want %d of them", left, len(pins))
	}
	for _, p := range left {
		if fi, err := os.Stat(p); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s after the refusal: %v, want root's pin left alone", p, err)
		}
	}
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", u.uid, u.gid), sub).CombinedOutput(); err != nil {
		t.Fatalf("chown -R %s: %v: %s", sub, err, out)
	}
	third := startCollectorCommand(t, "collector N3 (nobody, 3 capabilities)", pair.Receiver, "setpriv", asNobody...)
	requireLog(t, third, stateTakenLog, 1)
	stopKeepsAttached(t, pair, third)
	removeStateDetaches(t, pair, dir)
}
