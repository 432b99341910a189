//go:build linux

package e2e

import (
	"fmt"
	"maps"
	"math"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// TestLeastPrivilegeTransmit runs the collector as nobody with only
// CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, as TestLeastPrivilege does, with
// directions: [receive, transmit]: the egress program must load and
// attach through TCX with those three and no other, and go with the
// collector.
func TestLeastPrivilegeTransmit(t *testing.T) {
	bin := requireCollector(t)
	requireTools(t, "setpriv")
	u := nobody(t)
	pair := netnstest.New(t)
	dir := sharedDir(t, u)
	out := writeFileFor(t, u, dir, "debug.txt", "", 0o600)
	cfg := writeFileFor(t, u, dir, "config.yaml", collectorConfig{
		Receivers: []component{xdpflowReceiver(xdpflowSettings{
			Ports: []int{port}, CollectionInterval: time.Second, MinSnapshotInterval: time.Second,
			More: "directions: [receive, transmit]\n",
		})},
		Exporters: []component{debugFileExporter(out)},
	}.String(), 0o600)

	args := append(setprivArgs(u, requiredCaps), bin, "--config", cfg)
	p := startCollectorCommand(t, "collector (nobody, 3 capabilities, transmit)", pair.Receiver, "setpriv", args...)
	requireNativeAttach(t, p)
	if o := p.output.String(); !strings.Contains(o, `"egress_hook": "tcx"`) {
		t.Fatalf("the collector did not log the egress program attached through TCX:\n%s", o)
	}
	requireAttached(t, pair, "collector started")
	if n := tcxEgressPrograms(t, pair); n != 1 {
		t.Errorf("collector started: %d TCX egress programs on %s, want 1", n, netnstest.ReceiverIface)
	}
	stopDetaches(t, pair, p)
	if n := tcxEgressPrograms(t, pair); n != 0 {
		t.Errorf("after the collector exited: %d TCX egress programs on %s, want 0", n, netnstest.ReceiverIface)
	}
	if o := p.output.String(); !strings.Contains(o, "Shutdown complete.") {
		t.Errorf("the collector did not log a complete shutdown")
	}
}

// tcxEgressPrograms returns the number of TCX egress programs on the
// receiver veth.
func tcxEgressPrograms(t *testing.T, pair *netnstest.Pair) int {
	t.Helper()
	idx, err := netnstest.Ifindex(pair.Receiver, netnstest.ReceiverIface)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	err = pair.Do(pair.Receiver, func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXEgress})
		if err == nil {
			n = len(res.Programs)
		}
		return err
	})
	if err != nil {
		t.Fatalf("query the TCX egress programs of %s: %v", netnstest.ReceiverIface, err)
	}
	return n
}

// joinDirectionsQuery is README's "Both directions" query: bytes sent per
// byte received, per connection, the two directions joined by one on(...)
// clause.
const joinDirectionsQuery = `  xdpflow_bytes_total{network_io_direction="transmit"}
/ on(source_address, source_port, destination_port, network_transport, network_interface_name)
  xdpflow_bytes_total{network_io_direction="receive"}`

// TestPrometheusJoinsDirections runs the built collector with directions
// [receive, transmit], exporting to a real Prometheus by remote write,
// and TCP conversations over IPv4 and IPv6 through the veth: each
// connection's two series equal AF_PACKET captures of its direction on
// either end, and README's join query returns one element per connection,
// its transmitted bytes over its received bytes.
func TestPrometheusJoinsDirections(t *testing.T) {
	bin := requireCollector(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("this test needs Prometheus: apt-get install prometheus (%v)", err)
	}
	pair := netnstest.New(t)
	prom := startPrometheus(t, promBin, pair.Receiver)
	a := startCollector(t, bin, "A", pair.Receiver, agentConfig(xdpflowSettings{
		CollectionInterval: time.Second, MinSnapshotInterval: time.Second, NewConnectionsPerEvent: 5,
		More: "directions: [receive, transmit]\n",
	}, promRemoteWriteExporter))
	requireNativeAttach(t, a)

	received := netnstest.StartCapture(t, pair.Receiver, netnstest.ReceiverIface, netnstest.ToPort(6, port))
	sent := netnstest.StartCapture(t, pair.Sender, netnstest.SenderIface, func(f netnstest.Frame) bool {
		return f.Proto == 6 && f.SrcPort == port
	})
	var clients []netip.AddrPort
	for _, fam := range []struct{ src, dst netip.Addr }{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6},
	} {
		conv := netnstest.TCPConversation{Rounds: 20, Bulk: 64 << 10, Timeout: 10 * time.Second}
		clients = append(clients, conv.Converse(t, pair, fam.src, netip.AddrPortFrom(fam.dst, port)))
	}
	time.Sleep(100 * time.Millisecond) // the server's last packets may still be crossing
	rx, err := received.Stop()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := sent.Stop()
	if err != nil {
		t.Fatal(err)
	}

	// What each series must reach: the captures, by connection and direction.
	type series struct {
		client    netip.AddrPort
		direction string
	}
	want := map[series]uint64{}
	for _, c := range clients {
		_, want[series{c, "receive"}] = rx.Pcap.Count(func(f netnstest.Frame) bool { return f.Src == c.Addr() && f.SrcPort == c.Port() })
		_, want[series{c, "transmit"}] = tx.Pcap.Count(func(f netnstest.Frame) bool { return f.Dst == c.Addr() && f.DstPort == c.Port() })
	}
	deadline := time.Now().Add(valuesTimeout)
	var got map[series]uint64
	for {
		got = map[series]uint64{}
		res, err := prom.query("xdpflow_bytes_total")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range res {
			addr, _ := netip.ParseAddr(s.Metric["source_address"])
			sport, _ := strconv.ParseUint(s.Metric["source_port"], 10, 16)
			v, err := sampleValue(s)
			if err != nil {
				t.Fatal(err)
			}
			got[series{netip.AddrPortFrom(addr, uint16(sport)), s.Metric["network_io_direction"]}] = v
		}
		if maps.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("xdpflow_bytes_total in Prometheus %v, want the captures' %v", got, want)
	}

	res, err := prom.query(joinDirectionsQuery)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(clients) {
		t.Fatalf("the join query returned %d elements, want one per connection (%d): %v", len(res), len(clients), res)
	}
	for _, s := range res {
		addr, _ := netip.ParseAddr(s.Metric["source_address"])
		sport, _ := strconv.ParseUint(s.Metric["source_port"], 10, 16)
		c := netip.AddrPortFrom(addr, uint16(sport))
		ratio, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		wantRatio := float64(want[series{c, "transmit"}]) / float64(want[series{c, "receive"}])
		if math.Abs(ratio-wantRatio) > 1e-9 {
			t.Errorf("join for %s: %v, want %v (transmitted %d bytes, received %d)", c, ratio, wantRatio, want[series{c, "transmit"}], want[series{c, "receive"}])
		}
		t.Logf("join for %s: transmitted/received bytes %.4f (captures: %d / %d)", c, ratio, want[series{c, "transmit"}], want[series{c, "receive"}])
	}
}
