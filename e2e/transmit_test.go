//go:build linux

package e2e

import (
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
