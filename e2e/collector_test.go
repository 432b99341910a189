//go:build linux

package e2e

// Starting the collector, and what the tests check of a running or
// stopped one: how it attached, what it runs, the program on the receiver
// veth, its listening sockets, its start-up error.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// collectorReady is what the collector logs once every component started.
// The xdpflow receiver's Start attaches the XDP program, so after this line
// every packet is counted.
const collectorReady = "Everything is ready. Begin running and processing data."

// startCollector writes config to a file and runs the collector bin with
// it in namespace ns, returning once it is ready.
func startCollector(t *testing.T, bin, label, ns, config string) *process {
	t.Helper()
	path := filepath.Join(t.TempDir(), label+".yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return startCollectorCommand(t, "collector "+label, ns, bin, "--config", path)
}

// startCollectorCommand runs name with args in namespace ns, a command
// that is or execs the collector, and returns once the collector is ready.
func startCollectorCommand(t *testing.T, label, ns, name string, args ...string) *process {
	t.Helper()
	p := startProcess(t, label, ns, name, args...)
	p.waitOutput(t, collectorReady, readyTimeout)
	return p
}

// requireNativeAttach checks that the collector attached in native mode,
// so that packet counts are exact (generic mode counts after GRO).
func requireNativeAttach(t *testing.T, collector *process) {
	t.Helper()
	out := collector.output.String()
	if !strings.Contains(out, "XDP program attached") || !strings.Contains(out, `"attach_mode": "native"`) {
		t.Fatalf("%s did not log a native attachment:\n%s", collector.name, out)
	}
}

// requireRunsBinary checks that the process p is the collector bin, not a
// command that was to exec it.
func requireRunsBinary(t *testing.T, p *process, bin string) {
	t.Helper()
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.pid())); err != nil || exe != bin {
		t.Fatalf("pid %d runs %q (%v), want the collector %s", p.pid(), exe, err, bin)
	}
}

// requireAttached returns the XDP program on the receiver veth, and fails
// the test if there is none.
func requireAttached(t *testing.T, pair *netnstest.Pair, when string) uint32 {
	t.Helper()
	xdp, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface)
	if !ok {
		t.Fatalf("%s: no XDP program on %s", when, netnstest.ReceiverIface)
	}
	return xdp.ProgID
}

// checkDetached checks that no XDP program is on the receiver veth.
func checkDetached(t *testing.T, pair *netnstest.Pair, when string) {
	t.Helper()
	if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); ok {
		t.Errorf("%s: XDP program %d on %s", when, xdp.ProgID, netnstest.ReceiverIface)
	}
}

// stopDetaches stops the collector p with SIGTERM and checks that it
// exited cleanly and detached its program.
func stopDetaches(t *testing.T, pair *netnstest.Pair, p *process) {
	t.Helper()
	if err := p.stop(); err != nil {
		t.Errorf("%s: %v", p.name, err)
	}
	checkDetached(t, pair, "after the collector exited")
}

// lastErrorLine returns the last line of a collector's output that starts
// with "Error: ", where it says why it did not start, or "".
func lastErrorLine(output string) string {
	var errLine string
	for line := range strings.SplitSeq(output, "\n") {
		if strings.HasPrefix(line, "Error: ") {
			errLine = line
		}
	}
	return errLine
}

// checkListeners checks that the only listening sockets in namespace ns
// are on loopback, at the addresses allowed (none if none is).
func checkListeners(t *testing.T, ns string, allowed ...string) {
	t.Helper()
	out, err := netnsRun(ns, "ss", "-Hltun")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if !slices.Contains(allowed, f[4]) {
			t.Errorf("unexpected listening socket in %s: %s", ns, line)
		}
	}
	t.Logf("listening sockets in the receiver namespace:\n%s", out)
}
