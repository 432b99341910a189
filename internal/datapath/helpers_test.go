//go:build linux

package datapath

import (
	"testing"

	"github.com/cilium/ebpf"
)

// testOptions returns the default options with a small flow table, which
// loads faster than the default 65536 entries.
func testOptions() Options {
	o := DefaultOptions()
	o.MaxConnections = 1024
	return o
}

// allPorts returns opts counting every destination port.
func allPorts(opts Options) Options {
	opts.Ports = nil
	return opts
}

// loadDatapath loads the program with opts; it is closed when the test ends.
// The caller must have called privtest.RequireRoot.
func loadDatapath(t testing.TB, opts Options) *Datapath {
	t.Helper()
	d, err := Load(opts)
	if err != nil {
		t.Fatalf("Load(%+v): %v", opts, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// runFrame runs the program once on frame and fails the test unless it
// returned XDP_PASS.
func runFrame(t testing.TB, d *Datapath, frame []byte) {
	t.Helper()
	runFrameOpts(t, d, &ebpf.RunOptions{Data: frame})
}

func runFrameOpts(t testing.TB, d *Datapath, opts *ebpf.RunOptions) {
	t.Helper()
	ret, err := d.Program().Run(opts)
	if err != nil {
		t.Fatalf("run program on %d-byte frame: %v", len(opts.Data), err)
	}
	if ret != xdpPass {
		t.Fatalf("program returned %d on %d-byte frame, want XDP_PASS (%d)", ret, len(opts.Data), xdpPass)
	}
}

// readFlows reads the flow table into a map, failing on a duplicate key.
func readFlows(t testing.TB, d *Datapath) map[FlowKey]FlowValue {
	t.Helper()
	var tbl FlowTable
	if err := d.ReadFlows(&tbl); err != nil {
		t.Fatalf("ReadFlows: %v", err)
	}
	return flowMap(t, &tbl)
}

// flowMap converts tbl to a map, failing on a duplicate key.
func flowMap(t testing.TB, tbl *FlowTable) map[FlowKey]FlowValue {
	t.Helper()
	if len(tbl.Keys) != len(tbl.Values) {
		t.Fatalf("flow table has %d keys but %d values", len(tbl.Keys), len(tbl.Values))
	}
	m := make(map[FlowKey]FlowValue, tbl.Len())
	for i, k := range tbl.Keys {
		if _, dup := m[k]; dup {
			t.Fatalf("key %+v read twice", k)
		}
		m[k] = tbl.Values[i]
	}
	return m
}

// readStats reads the program's statistics.
func readStats(t testing.TB, d *Datapath) Stats {
	t.Helper()
	s, err := d.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return s
}
