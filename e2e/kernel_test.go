//go:build linux

package e2e

import (
	"maps"
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// TestCollectorCountsAcrossARestart is the end-to-end test of the VM
// kernel matrix (vmtest/tier.sh), so it needs nothing but the collector,
// `ip netns exec` and Go: collector A (xdpflow on the receiver veth, a
// state directory, OTLP/HTTP to a backend in this process) counts UDP
// datagrams over IPv4 and IPv6; A is stopped and started again on the same
// state directory, and more datagrams follow. The backend's latest values
// equal everything the sender sent, each series with one start time.
func TestCollectorCountsAcrossARestart(t *testing.T) {
	bin := requireCollector(t)
	pair := netnstest.New(t)
	backend := startOTLPHTTPBackend(t, pair.Receiver, stateOTLPAddr)
	cfg := stateAgentConfig(xdpflowSettings{StateDirectory: mountStateDirectory(t), Ports: []int{port}}, stateOTLPAddr)

	a1 := startCollector(t, bin, "A1", pair.Receiver, cfg)
	requireNativeAttach(t, a1)
	// Each batch in a subtest of its own: its receiving sockets close with it.
	var conns []conn
	var sent, more map[conn]counts
	t.Run("before", func(t *testing.T) { conns, sent = sendUDPBothFamilies(t, pair, 41001, 41002, 40) })
	waitLatest(t, backend.read, sent, valuesTimeout)
	if err := a1.stop(); err != nil {
		t.Fatal(err)
	}

	a2 := startCollector(t, bin, "A2", pair.Receiver, cfg)
	requireLog(t, a2, stateTakenLog, 1)
	t.Run("after", func(t *testing.T) { _, more = sendUDPBothFamilies(t, pair, 41001, 41002, 40) })
	total := maps.Clone(sent)
	for c, n := range more {
		total[c] = total[c].plus(n)
	}
	fm := waitLatest(t, backend.read, total, valuesTimeout)
	checkLatest(t, "the backend", fm, total, total)
	starts := backend.flowStarts()
	for _, c := range conns {
		if len(starts[c]) != 1 {
			t.Errorf("%s: start times %v, want one across the restart", c, starts[c])
		}
	}
	t.Logf("after a restart on the state directory, %d series equal the sender's counts:\n%s",
		len(conns), table(conns, []string{"sender", "exported"}, total, fm.values))
}
