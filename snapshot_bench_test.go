//go:build linux

package xdpflowreceiver

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// fillFlows runs the program on n distinct connections.
func fillFlows(tb testing.TB, prog *ebpf.Program, n int) {
	for i := 0; i < n; i++ {
		if _, err := prog.Run(&ebpf.RunOptions{Data: udpFrame(i)}); err != nil {
			tb.Fatal(err)
		}
	}
}

// cpuTime returns the CPU time (user+system) this process used so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS returns VmHWM, the process's peak resident set size in bytes.
func peakRSS(tb testing.TB) uint64 {
	status, err := os.ReadFile("/proc/self/status")
	require.NoError(tb, err)
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			require.NoError(tb, err)
			return kb << 10
		}
	}
	tb.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// resetPeakRSS returns freed memory to the system, so that what earlier
// benchmarks left does not count, and makes VmHWM start again from the
// current RSS.
func resetPeakRSS(tb testing.TB) {
	runtime.GC()
	debug.FreeOSMemory()
	require.NoError(tb, os.WriteFile("/proc/self/clear_refs", []byte("5"), 0))
}

// filledDatapath loads a datapath whose table of n entries holds n
// connections, with TrackChanges if trackChanges, and reads it once, as a receiver's first snapshot does:
// ReadFlows then knows the table is full (and walks it). The caller
// closes it.
func filledDatapath(b *testing.B, n int, trackChanges bool) *datapath.Datapath {
	return partlyFilledDatapath(b, n, n, trackChanges)
}

// partlyFilledDatapath is filledDatapath with a table of capacity
// entries.
func partlyFilledDatapath(b *testing.B, capacity, n int, trackChanges bool) *datapath.Datapath {
	dp, err := datapath.Load(datapath.Options{Ports: []uint16{8080}, NewConnectionsPerEvent: 5, MaxConnections: uint32(capacity),
		TrackChanges: trackChanges})
	require.NoError(b, err)
	fillFlows(b, dp.Program(), n)
	var first datapath.FlowTable
	require.NoError(b, dp.ReadFlows(&first))
	return dp
}

// BenchmarkSnapshot measures one snapshot as the receiver takes it: read
// every connection from the kernel table, then convert them to pdata in
// exports of maxFlowsPerExport connections, each dropped after "export".
func BenchmarkSnapshot(b *testing.B) {
	privtest.RequireRoot(b)
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			dp := filledDatapath(b, n, false)
			defer dp.Close()

			bld := testBuilder()
			var flows datapath.FlowTable
			resetPeakRSS(b)
			cpu0 := cpuTime(b)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				require.NoError(b, dp.ReadFlows(&flows))
				require.Equal(b, n, flows.Len())
				s := snapshot{time: time.Now(), flows: &flows, evicted: &datapath.FlowTable{}}
				inExports(n, func(from, to int) { _ = bld.build(&s, from, to) })
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(peakRSS(b))/(1<<20), "peak-RSS-MiB")
		})
	}
}

// BenchmarkChangedSnapshot measures a snapshot with export_changed_only
// of 1,000,000 connections of which 1% had packets since the last one,
// and the due share of the others (unchanged_export_interval of 4m at a
// 10s collection_interval: 1/24), converted in exports. The 1% are
// touched before each snapshot, untimed. dirty-lists is the receiver's
// way: packets list the entries they change (Options.TrackChanges); the
// snapshot reads those (ReadDirty), takes the due share and the idle ones
// from the tracker's memory. The first snapshot, which reads the whole
// table and exports every series, is measured apart (first-cpu-ms,
// first-peak-RSS-MiB).
func BenchmarkChangedSnapshot(b *testing.B) {
	privtest.RequireRoot(b)
	const n, changed = 1_000_000, 10_000
	cfg := createDefaultConfig()
	cfg.ExportChangedOnly = true
	cfg.MaxConnections = n
	touch := func(b *testing.B, dp *datapath.Datapath, i int) {
		for j := range changed {
			_, err := dp.Program().Run(&ebpf.RunOptions{Data: udpFrame((i*changed + j) % n)})
			require.NoError(b, err)
		}
	}
	b.Run("dirty-lists", func(b *testing.B) {
		dp := filledDatapath(b, n, true)
		defer dp.Close()
		tracker := newChangedTracker(cfg)
		defer tracker.free()
		var flows datapath.FlowTable
		var idle []datapath.FlowKey
		resetPeakRSS(b)
		cpu0 := cpuTime(b)
		require.NoError(b, tracker.collect(dp, 0, &flows, &idle))
		bld, s := testBuilder(), snapshot{time: time.Now(), flows: &flows, evicted: &datapath.FlowTable{}}
		inExports(flows.Len(), func(from, to int) { _ = bld.build(&s, from, to) })
		firstCPU, firstRSS := cpuTime(b)-cpu0, peakRSS(b)
		tracker.accept()
		measureChangedSnapshots(b, func(i int) { touch(b, dp, i) }, func() *datapath.FlowTable {
			require.NoError(b, tracker.collect(dp, 0, &flows, &idle))
			tracker.accept()
			return &flows
		})
		b.ReportMetric(float64(firstCPU.Milliseconds()), "first-cpu-ms")
		b.ReportMetric(float64(firstRSS)/(1<<20), "first-peak-RSS-MiB")
	})
}

// measureChangedSnapshots runs touch(i) untimed, then the timed snapshot
// read, which returns the flows to export, and their conversion in
// exports, reporting CPU time, series exported per snapshot and peak RSS
// from the start (what the process holds, and what snapshots add).
func measureChangedSnapshots(b *testing.B, touch func(i int), read func() *datapath.FlowTable) {
	bld := testBuilder()
	var exported int
	var cpu time.Duration
	resetPeakRSS(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		touch(i)
		cpu0 := cpuTime(b)
		b.StartTimer()
		flows := read()
		s := snapshot{time: time.Now(), flows: flows, evicted: &datapath.FlowTable{}}
		inExports(flows.Len(), func(from, to int) { _ = bld.build(&s, from, to) })
		b.StopTimer()
		cpu += cpuTime(b) - cpu0
		exported += flows.Len()
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(exported)/float64(b.N), "exported/op")
	b.ReportMetric(float64(peakRSS(b))/(1<<20), "peak-RSS-MiB")
}

// Connection i of groupedConnections connections is from
// 10.n.h/24 (n = i mod groupedNetworks), its host and source port
// derived from i / groupedNetworks, to port 8080: every connection is
// distinct, and every /24 holds groupedConnections / groupedNetworks.
const (
	groupedConnections = 1_000_000
	groupedNetworks    = 1000
)

// fillGroupedConnections runs the program once on each of the
// groupedConnections connections, and returns how long it took.
func fillGroupedConnections(tb testing.TB, prog *ebpf.Program) time.Duration {
	frame := udpFrame(0)
	src, sport := frame[14+12:14+16], frame[14+20:14+22]
	opts := ebpf.RunOptions{Data: frame}
	start := time.Now()
	for i := range groupedConnections {
		n, j := i%groupedNetworks, i/groupedNetworks
		copy(src, []byte{10, byte(n >> 8), byte(n), byte(j)})
		binary.BigEndian.PutUint16(sport, uint16(1024+j>>8))
		if _, err := prog.Run(&opts); err != nil {
			tb.Fatal(err)
		}
	}
	return time.Since(start)
}

// BenchmarkGroupedSnapshot measures the snapshot (read + convert in
// exports, as BenchmarkSnapshot) after 1,000,000 distinct connections went
// through the program: per connection, one entry each; grouped by source
// /24 alone (Dimensions{SrcAddr}, 1000 networks), 1000 entries of 1000
// connections each, in the default table of 65536 entries and in one of
// 1,000,000. It checks first that every packet is counted once. The fill
// (one BPF_PROG_TEST_RUN per connection) is not measured.
func BenchmarkGroupedSnapshot(b *testing.B) {
	privtest.RequireRoot(b)
	bySource24 := func(opts *datapath.Options) {
		opts.Dimensions = datapath.Dimensions{SrcAddr: true}
		opts.Source.PrefixIPv4 = 24
	}
	cases := []struct {
		name   string
		table  int
		group  func(*datapath.Options)
		series int
	}{
		{"per-connection", groupedConnections, func(*datapath.Options) {}, groupedConnections},
		{"1000-series", 65536, bySource24, groupedNetworks},
		{"1000-series-table-1000000", groupedConnections, bySource24, groupedNetworks},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			opts := datapath.Options{Ports: []uint16{8080}, NewConnectionsPerEvent: 5, MaxConnections: uint32(c.table)}
			c.group(&opts)
			dp, err := datapath.Load(opts)
			require.NoError(b, err)
			defer dp.Close()
			fill := fillGroupedConnections(b, dp.Program())

			checkGroupedCounts(b, dp, c.series)

			bld := testBuilder()
			bld.dims = opts.Dimensions
			if bld.dims == (datapath.Dimensions{}) {
				bld.dims = datapath.ConnectionDimensions()
			}
			var flows datapath.FlowTable
			resetPeakRSS(b)
			cpu0 := cpuTime(b)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				require.NoError(b, dp.ReadFlows(&flows))
				require.Equal(b, c.series, flows.Len())
				s := snapshot{time: time.Now(), flows: &flows, evicted: &datapath.FlowTable{}}
				inExports(c.series, func(from, to int) { _ = bld.build(&s, from, to) })
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/1e3/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(peakRSS(b))/(1<<20), "peak-RSS-MiB")
			b.ReportMetric(fill.Seconds(), "fill-s")
		})
	}
}

// checkGroupedCounts fails unless the table of dp holds series entries
// that share the groupedConnections packets equally: each connection's
// one packet counted once, in its series. It reads into a table of its
// own, so that the measured snapshot grows its buffers as the first
// snapshot of a receiver does.
func checkGroupedCounts(b *testing.B, dp *datapath.Datapath, series int) {
	var flows datapath.FlowTable
	require.NoError(b, dp.ReadFlows(&flows))
	require.Equal(b, series, flows.Len())
	var packets uint64
	for _, v := range flows.Values {
		require.Equal(b, uint64(groupedConnections/series), v.Packets)
		packets += v.Packets
	}
	require.Equal(b, uint64(groupedConnections), packets)
}

// BenchmarkReadFlows measures reading the kernel table alone, both ways
// Datapath.ReadFlows can: "walk", one walk of the table in the kernel into
// an array read through a memory mapping (ReadFlowsWalk), and "batch",
// batch lookups (ReadFlowsBatch), on the same table: full tables of n,
// and 10,000 connections in a table of 2^20 (ReadFlows reads that one
// with batch lookups).
func BenchmarkReadFlows(b *testing.B) {
	privtest.RequireRoot(b)
	for _, c := range []struct{ capacity, n int }{{10_000, 10_000}, {100_000, 100_000}, {1_000_000, 1_000_000}, {1 << 20, 10_000}} {
		name := fmt.Sprint(c.n)
		if c.capacity != c.n {
			name = fmt.Sprintf("%d-of-%d", c.n, c.capacity)
		}
		b.Run(name, func(b *testing.B) {
			dp := partlyFilledDatapath(b, c.capacity, c.n, false)
			defer dp.Close()
			require.NoError(b, dp.FullReadFallback())
			for _, m := range []struct {
				name string
				read func(*datapath.FlowTable) error
			}{{"walk", dp.ReadFlowsWalk}, {"batch", dp.ReadFlowsBatch}} {
				b.Run(m.name, func(b *testing.B) {
					var flows datapath.FlowTable
					require.NoError(b, m.read(&flows)) // grow the table's buffers
					cpu0 := cpuTime(b)
					b.ReportAllocs()
					b.ResetTimer()
					for b.Loop() {
						require.NoError(b, m.read(&flows))
					}
					b.StopTimer()
					require.Equal(b, c.n, flows.Len())
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(c.n), "ns/flow")
					b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N)/float64(c.n), "cpu-ns/flow")
				})
			}
		})
	}
}

// countingSink counts snapshots (the first export of each carries the
// receiver-wide metrics) and data points, keeping nothing.
type countingSink struct {
	snapshots, points atomic.Int64
}

func (s *countingSink) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (s *countingSink) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	if md.MetricCount() > 2 {
		s.snapshots.Add(1)
	}
	s.points.Add(int64(md.DataPointCount()))
	return nil
}

// BenchmarkTriggerBurst drives 100,000 new connections through the program
// as fast as BPF_PROG_TEST_RUN allows, with N=5 and the default
// min_snapshot_interval, and reports how many snapshots the receiver took,
// the ring buffer drops, and the CPU the receiver used: the process's CPU
// time minus that of the same burst with no receiver running.
func BenchmarkTriggerBurst(b *testing.B) {
	privtest.RequireRoot(b)
	const burst = 100_000
	cfg := createDefaultConfig()
	cfg.CollectionInterval = time.Hour // only triggers take snapshots
	cfg.MaxConnections = 2 * burst

	for b.Loop() {
		baseline := burstCPU(b, cfg, burst)
		var sink countingSink
		withReceiver, took, stats, snapshots := burstWithReceiver(b, cfg, burst, &sink)
		b.ReportMetric(float64(snapshots), "snapshots")
		b.ReportMetric(float64(took.Milliseconds()), "burst-ms")
		b.ReportMetric(float64(stats.RingbufDrops), "ringbuf-drops")
		b.ReportMetric(float64(stats.Events), "events")
		b.ReportMetric(float64((withReceiver - baseline).Milliseconds()), "receiver-cpu-ms")
	}
}

// burstCPU returns the CPU time of sending the burst with no receiver.
func burstCPU(b *testing.B, cfg *Config, n int) time.Duration {
	opts, _ := cfg.datapathOptions()
	dp, err := datapath.Load(opts)
	require.NoError(b, err)
	defer dp.Close()
	cpu0 := cpuTime(b)
	fillFlows(b, dp.Program(), n)
	return cpuTime(b) - cpu0
}

// burstWithReceiver sends the burst to a receiver whose datapath is
// loaded but not attached, and returns the CPU time from the start of the
// burst to the receiver's last trigger snapshot, the burst's duration and
// the datapath's counters and the number of snapshots taken (before the
// one at Shutdown).
func burstWithReceiver(b *testing.B, cfg *Config, n int, sink *countingSink) (time.Duration, time.Duration, datapath.Stats, int64) {
	opts, _ := cfg.datapathOptions()
	dp, err := datapath.Load(opts)
	require.NoError(b, err)
	open := func(*Config, *zap.Logger) (flowSource, error) { return dp, nil }
	r, err := newReceiver(receivertest.NewNopSettings(NewFactory().Type()), cfg, sink, open)
	require.NoError(b, err)
	require.NoError(b, r.Start(context.Background(), componenttest.NewNopHost()))

	cpu0 := cpuTime(b)
	began := time.Now()
	fillFlows(b, dp.Program(), n)
	took := time.Since(began)
	// The trigger left pending at the end is served within one interval.
	time.Sleep(cfg.MinSnapshotInterval + 200*time.Millisecond)
	cpu := cpuTime(b) - cpu0
	stats, err := dp.Stats()
	require.NoError(b, err)
	snapshots := sink.snapshots.Load()
	require.NoError(b, r.Shutdown(context.Background()))
	return cpu, took, stats, snapshots
}
