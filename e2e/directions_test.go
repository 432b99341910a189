//go:build linux

package e2e

// Both directions end to end: the built collector with directions
// [receive, transmit] against tcpdump on both ends of the veth.

import (
	"fmt"
	"maps"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
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
// [receive, transmit], exporting in one pipeline over OTLP/HTTP and to a
// real Prometheus by remote write, while UDP echoes (one datagram of each
// size each way, sizes from 0 to the MTU) and TCP conversations (round
// trips, then a bulk write) cross the veth over IPv4 and IPv6. tcpdump
// captures what the receiver's veth receives and, on the far side, what
// the sender's veth receives from it (the receiver's transmit): per
// connection and direction, the final values in both backends must equal
// those captures, and for UDP the datagrams sent; and README's join query
// must return one element per connection, its transmitted bytes over its
// received bytes.
func TestBothDirectionsEqualTcpdump(t *testing.T) {
	bin := requireCollector(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("this test needs Prometheus: apt-get install prometheus (%v)", err)
	}
	pair := netnstest.New(t)
	backend := startOTLPHTTPBackend(t, pair.Receiver, directionsOTLPAddr)
	prom := startPrometheus(t, promBin, pair.Receiver)
	a := startCollector(t, bin, "A", pair.Receiver, agentConfig(xdpflowSettings{
		CollectionInterval: time.Second, MinSnapshotInterval: time.Second, NewConnectionsPerEvent: 5,
		More: "directions: [receive, transmit]\n",
	}, otlpHTTPExporter(directionsOTLPAddr), promRemoteWriteExporter))
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

	l := waitLatest(t, backend.directions, captured, valuesTimeout)
	checkLatest(t, "OTLP", l, captured, want)
	pm := waitLatest(t, prom.directions, captured, valuesTimeout)
	checkLatest(t, "Prometheus", pm, captured, want)
	checkJoin(t, prom, conns, captured)
	var cols []string
	var values []map[conn]counts
	for _, d := range []string{"receive", "transmit"} {
		cols = append(cols, "tcpdump "+d, "OTLP "+d, "Prometheus "+d)
		values = append(values, byDirection(captured, d), byDirection(l.values, d), byDirection(pm.values, d))
	}
	t.Logf("final values:\n%s", table(conns, cols, values...))
}

// directions returns the latest values of the receiver's series received
// so far, by connection and direction.
func (b *otlpHTTPBackend) directions() (latest[dirConn], error) {
	return foldLatest(b.points(), func(attrs map[string]string) (dirConn, error) {
		return dirConnFromAttrs(attrs, otlpAttr)
	}), nil
}

// directions returns the latest values of the receiver's series in
// Prometheus, by connection and direction.
func (p *prometheus) directions() (latest[dirConn], error) {
	pts, err := p.points()
	if err != nil {
		return latest[dirConn]{}, err
	}
	return foldLatest(pts, func(attrs map[string]string) (dirConn, error) {
		return dirConnFromAttrs(attrs, promLabel)
	}), nil
}

// dirConnFromAttrs reads a connection and its direction from the
// receiver's attributes, as connFromAttrs does; the interface must be the
// receiver veth. name maps an OTLP attribute name to its key.
func dirConnFromAttrs(attrs map[string]string, name func(string) string) (dirConn, error) {
	c, err := connFromAttrs(attrs, name)
	d := dirConn{c, attrs[name("network.io.direction")]}
	switch {
	case err != nil:
	case attrs[name("network.interface.name")] != netnstest.ReceiverIface:
		err = fmt.Errorf("network.interface.name %q, want %q", attrs[name("network.interface.name")], netnstest.ReceiverIface)
	case d.Direction != "receive" && d.Direction != "transmit":
		err = fmt.Errorf("network.io.direction %q", d.Direction)
	}
	return d, err
}

// joinDirectionsQuery is README's "Both directions" query: bytes sent per
// byte received, per connection, the two directions joined by one on(...)
// clause.
const joinDirectionsQuery = `  xdpflow_bytes_total{network_io_direction="transmit"}
/ on(source_address, source_port, destination_port, network_transport, network_interface_name)
  xdpflow_bytes_total{network_io_direction="receive"}`

// joinLabels are the labels of an element of joinDirectionsQuery's
// result: those of its on(...) clause, sorted.
var joinLabels = []string{"destination_port", "network_interface_name", "network_transport", "source_address", "source_port"}

// checkJoin runs joinDirectionsQuery on Prometheus, which must hold the
// final values of conns: it must return one element per connection,
// labelled with the on(...) clause's labels only, whose value is the
// captured transmitted bytes over the captured received bytes.
func checkJoin(t *testing.T, prom *prometheus, conns []conn, captured map[dirConn]counts) {
	t.Helper()
	res, err := prom.query(joinDirectionsQuery)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(conns) {
		t.Errorf("the join query returned %d elements, want one per connection (%d): %v", len(res), len(conns), res)
	}
	joined := map[conn]bool{}
	for _, s := range res {
		c, err := connTupleFromAttrs(s.Metric, promLabel)
		if got := slices.Sorted(maps.Keys(s.Metric)); err == nil && !slices.Equal(got, joinLabels) {
			err = fmt.Errorf("labels %v, want %v", got, joinLabels)
		}
		if err == nil && s.Metric["network_interface_name"] != netnstest.ReceiverIface {
			err = fmt.Errorf("network_interface_name %q, want %q", s.Metric["network_interface_name"], netnstest.ReceiverIface)
		}
		if err != nil {
			t.Errorf("join element %v: %v", s.Metric, err)
			continue
		}
		if joined[c] {
			t.Errorf("join: %s twice", c)
		}
		joined[c] = true
		ratio, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		if err != nil {
			t.Fatalf("join for %s: %v", c, err)
		}
		tx, rx := captured[dirConn{c, "transmit"}].Bytes, captured[dirConn{c, "receive"}].Bytes
		if want := float64(tx) / float64(rx); math.Abs(ratio-want) > 1e-9 {
			t.Errorf("join for %s: %v, want %v (captured: transmitted %d bytes, received %d)", c, ratio, want, tx, rx)
		}
		t.Logf("join for %s: transmitted/received bytes %.4f (captures: %d / %d)", c, ratio, tx, rx)
	}
	for _, c := range conns {
		if !joined[c] {
			t.Errorf("the join query has no element for %s", c)
		}
	}
}

// TestJoinQueryInREADME checks that the join query the tests run is
// README's, word for word (needs no privileges).
func TestJoinQueryInREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```promql\n"+joinDirectionsQuery+"\n```") {
		t.Errorf("README.md has no promql block with the query the tests run:\n%s", joinDirectionsQuery)
	}
}

// TestSIGKILLRestartWithStateBothDirections runs the collector as nobody
// with exactly the three capabilities, directions [receive, transmit] and
// a state directory of its own, with UDP echoes over IPv4 and IPv6 before
// it is killed with SIGKILL, while no collector runs, and after a second
// one took over: the egress program's TCX link is pinned beside the XDP
// link, owned by nobody, stays attached and counting, and the second
// collector takes it over; the final values of both directions equal the
// datagrams echoed, with one start time per series. A clean stop keeps
// both programs attached; removing the state directory detaches both.
func TestSIGKILLRestartWithStateBothDirections(t *testing.T) {
	bin := requireCollector(t)
	requireTools(t, "setpriv")
	u := nobody(t)
	pair := netnstest.New(t)
	shared := sharedDir(t, u)
	mnt := filepath.Join(shared, "bpf")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	privtest.MountBPFFSAt(t, mnt)
	if err := os.Chmod(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "xdpflow-state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	backend := startOTLPHTTPBackend(t, pair.Receiver, directionsOTLPAddr)
	cfg := writeFileFor(t, u, shared, "config.yaml", stateAgentConfig(xdpflowSettings{
		StateDirectory: dir, Ports: []int{port}, More: "directions: [receive, transmit]\n",
	}, directionsOTLPAddr), 0o600)
	asNobody := append(setprivArgs(u, requiredCaps), bin, "--config", cfg)

	echoed := map[dirConn]counts{}
	echo := func() {
		t.Helper()
		for _, x := range []struct{ src, dst netip.Addr }{
			{netnstest.SenderIPv4, netnstest.ReceiverIPv4},
			{netnstest.SenderIPv6, netnstest.ReceiverIPv6},
		} {
			c, n := udpEcho(t, pair, netip.AddrPortFrom(x.src, 40024), netip.AddrPortFrom(x.dst, port), 40)
			for _, d := range []dirConn{{c, "receive"}, {c, "transmit"}} {
				echoed[d] = counts{echoed[d].Packets + n.Packets, echoed[d].Bytes + n.Bytes}
			}
		}
	}
	first := startCollectorCommand(t, "collector N1 (nobody, 3 capabilities, both directions)", pair.Receiver, "setpriv", asNobody...)
	requireLog(t, first, stateNewLog, 1)
	if o := first.output.String(); !strings.Contains(o, `"egress_hook": "tcx"`) {
		t.Fatalf("the collector did not log the egress program attached through TCX:\n%s", o)
	}
	echo()
	waitLatest(t, backend.directions, echoed, valuesTimeout)
	pin := filepath.Join(dir, stateReceiver, "egress:"+netnstest.ReceiverIface)
	fi, err := os.Stat(pin)
	if err != nil {
		t.Fatalf("the egress link is not pinned: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != u.uid || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: uid %d mode %v, want nobody's %d and 0600", pin, st.Uid, fi.Mode().Perm(), u.uid)
	}

	first.kill(t)
	if n := tcxEgressPrograms(t, pair); n != 1 {
		t.Fatalf("after SIGKILL: %d TCX egress programs, want the pinned one", n)
	}
	echo() // no collector runs
	second := startCollectorCommand(t, "collector N2 (nobody, 3 capabilities, both directions)", pair.Receiver, "setpriv", asNobody...)
	requireLog(t, second, stateTakenLog, 1)
	echo()
	l := waitLatest(t, backend.directions, echoed, valuesTimeout)
	checkLatest(t, "collectors as nobody", l, echoed, echoed)
	for series, n := range backend.startCounts() {
		if n != 1 {
			t.Errorf("%q: %d start times, want one", series, n)
		}
	}
	if n := tcxEgressPrograms(t, pair); n != 1 {
		t.Errorf("after the takeover: %d TCX egress programs, want 1", n)
	}
	stopKeepsAttached(t, pair, second)
	if n := tcxEgressPrograms(t, pair); n != 1 {
		t.Errorf("after a clean stop: %d TCX egress programs, want the pinned one", n)
	}
	removeStateDetaches(t, pair, dir)
	for deadline := time.Now().Add(detachTimeout); tcxEgressPrograms(t, pair) != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a TCX egress program still on %s %v after rm -r", netnstest.ReceiverIface, detachTimeout)
		}
	}
	t.Logf("as nobody, both directions: SIGKILLed, taken over, stopped, removed; final values:\n%s",
		table(sortedConns(byDirection(echoed, "receive")), []string{"echoed each way", "OTLP receive", "OTLP transmit"},
			byDirection(echoed, "receive"), byDirection(l.values, "receive"), byDirection(l.values, "transmit")))
}

// byDirection returns the counts of m of one direction, by connection.
func byDirection(m map[dirConn]counts, direction string) map[conn]counts {
	out := map[conn]counts{}
	for k, v := range m {
		if k.Direction == direction {
			out[k.conn] = v
		}
	}
	return out
}

// startCounts returns, for every series of xdpflow.packets received so
// far, how many start timestamps its data points had.
func (b *otlpHTTPBackend) startCounts() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for id, p := range b.latest {
		if p.Metric == "xdpflow.packets" {
			out[strings.ReplaceAll(id, "\x00", " ")] = len(b.starts[id])
		}
	}
	return out
}

// transmitCounts returns, per connection, the packets and frame bytes of
// a capture of the receiver's transmitted packets, each connection named
// as the receiver names it: the remote side (the packet's destination) as
// the source, the local port as the destination port.
func transmitCounts(t *testing.T, res tcpdumpResult) map[conn]counts {
	t.Helper()
	return countCaptured(t, res, func(f netnstest.Frame, transport string) conn {
		return conn{Transport: transport, Src: f.Dst, SrcPort: f.DstPort, DstPort: f.SrcPort}
	})
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
