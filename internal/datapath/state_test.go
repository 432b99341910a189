//go:build linux

package datapath

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// loadStateful loads opts; the caller closes it.
func loadStateful(t *testing.T, opts Options) *Datapath {
	t.Helper()
	d, err := Load(opts)
	if err != nil {
		t.Fatalf("Load with state %s: %v", opts.StateDir, err)
	}
	return d
}

func closeDatapath(t *testing.T, d *Datapath) {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestStateCarriesTheTableOver loads the program three times on one state
// directory: the second load takes over the first's table, statistics and
// start; the third, with another grouping, starts a new table and says why.
func TestStateCarriesTheTableOver(t *testing.T) {
	privtest.RequireRoot(t)
	opts := allPorts(testOptions())
	opts.MaxConnections = 2
	opts.StateDir = filepath.Join(privtest.MountBPFFS(t), "xdpflow")
	frame := tcp4Frame("198.51.100.7", 40000, 8080, 10)

	first := loadStateful(t, opts)
	if r := first.State(); r.Restored || r.Reason != "" || r.Started.IsZero() {
		t.Errorf("first load: %+v, want a new table and no reason", r)
	}
	for range 3 {
		runFrame(t, first, frame)
	}
	runFrame(t, first, tcp4Frame("198.51.100.8", 40000, 8080, 10))
	runFrame(t, first, tcp4Frame("198.51.100.9", 40000, 8080, 10)) // overflows: the table holds 2
	before := readFlows(t, first)
	started := first.State().Started
	closeDatapath(t, first)

	second := loadStateful(t, opts)
	if r := second.State(); !r.Restored || !r.Started.Equal(started) {
		t.Errorf("second load: %+v, want the first's table, started %v", r, started)
	}
	after := readFlows(t, second)
	if len(after) != len(before) {
		t.Fatalf("%d flows after the second load, want the first's %d", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %+v after the second load, want %+v", describeKey(k), after[k], v)
		}
	}
	if s := readStats(t, second); s.OverflowPackets != 1 {
		t.Errorf("overflow after the second load: %d packets, want the first's 1", s.OverflowPackets)
	}
	runFrame(t, second, frame)
	for k, v := range readFlows(t, second) {
		if k.Source().String() == "198.51.100.7" && (v.Packets != 4 || v.FirstSeenNs != before[k].FirstSeenNs) {
			t.Errorf("the carried-over connection: %d packets first seen %d, want 4 and %d", v.Packets, v.FirstSeenNs, before[k].FirstSeenNs)
		}
	}
	closeDatapath(t, second)

	opts.Dimensions = Dimensions{SrcAddr: true}
	third := loadStateful(t, opts)
	defer closeDatapath(t, third)
	if r := third.State(); r.Restored || !strings.Contains(r.Reason, "grouping") {
		t.Errorf("third load, another grouping: %+v, want a new table and the reason", r)
	}
	if n := len(readFlows(t, third)); n != 0 {
		t.Errorf("%d flows in the new table, want 0", n)
	}
}

func TestStateNeedsABPFFileSystem(t *testing.T) {
	privtest.RequireRoot(t)
	opts := testOptions()
	opts.StateDir = t.TempDir()
	_, err := Load(opts)
	if err == nil || !strings.Contains(err.Error(), "is not on a BPF file system") {
		t.Fatalf("Load with state on %s: %v, want a BPF file system error", opts.StateDir, err)
	}
}

// TestStateKeepsCountingBetweenProcesses attaches a program with a state
// directory to a veth, closes it, sends traffic, and loads again: the
// pinned link kept counting into the pinned table meanwhile, the new
// program takes the link over, and Detach and ReleaseStaleLinks remove
// links for good.
func TestStateKeepsCountingBetweenProcesses(t *testing.T) {
	privtest.RequireRoot(t)
	pair := netnstest.New(t)
	opts := DefaultOptions()
	opts.MaxConnections = 1024
	opts.StateDir = filepath.Join(privtest.MountBPFFS(t), "xdpflow")

	first := loadStateful(t, opts)
	if _, err := itAttach(pair, first, AttachNative); err != nil {
		t.Fatal(err)
	}
	closeDatapath(t, first)
	xdp, attached := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface)
	if !attached {
		t.Fatal("no program on the veth once the first datapath closed: its pinned link should keep it")
	}
	sizes := []int{10, 200, 1000}
	sent := itSendUDP(t, pair, netnstest.SenderIPv4, 40900, netnstest.ReceiverIPv4, 8080, sizes)

	second := loadStateful(t, opts)
	defer closeDatapath(t, second)
	used, err := itAttach(pair, second, AttachNative)
	if err != nil || used != AttachNative {
		t.Fatalf("second attach: %s, %v; want the pinned native link taken over", used, err)
	}
	if now, _ := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); now.ProgID == xdp.ProgID {
		t.Errorf("the link still runs the first program %d, want the second's", xdp.ProgID)
	}
	idx, err := netnstest.Ifindex(pair.Receiver, netnstest.ReceiverIface)
	if err != nil {
		t.Fatal(err)
	}
	e := &itEnv{ifindex: uint32(idx)}
	k := e.key(netnstest.SenderIPv4, 40900, 8080, UDP)
	if v, ok := itStableFlow(t, second, k); !ok || v.Packets != uint64(len(sizes)) || v.Bytes != sent {
		t.Errorf("counted while no process ran: %+v (found %v), want %d packets %d bytes", v, ok, len(sizes), sent)
	}

	links := filepath.Join(opts.StateDir, stateLinkPrefix+"*")
	if err := second.Detach(netnstest.ReceiverIface); err != nil {
		t.Fatal(err)
	}
	if _, attached := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); attached {
		t.Error("a program is attached after Detach")
	}
	if pinned, _ := filepath.Glob(links); len(pinned) != 0 {
		t.Errorf("pinned links after Detach: %v", pinned)
	}

	// A link left by a process for an interface no longer configured.
	if _, err := itAttach(pair, second, AttachGeneric); err != nil {
		t.Fatal(err)
	}
	closeDatapath(t, second)
	third := loadStateful(t, opts)
	defer closeDatapath(t, third)
	if err := third.ReleaseStaleLinks(func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if _, attached := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); attached {
		t.Error("a program is attached after ReleaseStaleLinks")
	}
	if pinned, _ := filepath.Glob(links); len(pinned) != 0 {
		t.Errorf("pinned links after ReleaseStaleLinks: %v", pinned)
	}
	if _, err := os.Stat(filepath.Join(opts.StateDir, xdpflowMapFlows)); err != nil {
		t.Errorf("the pinned table: %v", err)
	}
}
