//go:build linux

package xdpflowreceiver

import (
	"context"
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
// connections. The caller closes it.
func filledDatapath(b *testing.B, n int) *datapath.Datapath {
	dp, err := datapath.Load(datapath.Options{Ports: []uint16{8080}, NewConnectionsPerEvent: 5, MaxConnections: uint32(n)})
	require.NoError(b, err)
	fillFlows(b, dp.Program(), n)
	return dp
}

// BenchmarkSnapshot measures one snapshot as the receiver takes it: read
// every connection from the kernel table, then convert them to pdata in
// exports of maxFlowsPerExport connections, each dropped after "export".
func BenchmarkSnapshot(b *testing.B) {
	privtest.RequireRoot(b)
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			dp := filledDatapath(b, n)
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

// BenchmarkReadFlows measures reading the kernel table alone.
func BenchmarkReadFlows(b *testing.B) {
	privtest.RequireRoot(b)
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			dp := filledDatapath(b, n)
			defer dp.Close()
			var flows datapath.FlowTable
			b.ReportAllocs()
			for b.Loop() {
				require.NoError(b, dp.ReadFlows(&flows))
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/flow")
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
