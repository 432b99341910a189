//go:build linux

package datapath

// Per-packet benchmarks of the XDP program, run with BPF_PROG_TEST_RUN:
// the kernel runs a program `repeat` times on one frame and reports the
// mean time per run, in whole nanoseconds, measured in the kernel around
// the loop (the time the thread was rescheduled is left out; interrupts
// are not). Every figure is compared with an empty XDP program measured in
// the same process, in the same rounds, so that the noise of a shared
// machine hits the baseline and the cases alike. BENCHMARKS.md has the
// figures and what dominates them; `make bench` runs these.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflowreceiver/internal/naivebench"
	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

var (
	benchRounds   = flag.Int("xdpflow.rounds", 15, "rounds of every BenchmarkPacketCost case")
	benchMCRounds = flag.Int("xdpflow.mcrounds", 9, "rounds of every BenchmarkMultiCore case")
	benchRepeat   = flag.Int("xdpflow.repeat", 1_000_000, "runs of the program per BPF_PROG_TEST_RUN call")
	benchInsert   = flag.Int("xdpflow.inserts", 32768, "new connections per insert round (into a fresh table of 65536)")
	benchVeth     = flag.Duration("xdpflow.veth", 1500*time.Millisecond, "duration of one BenchmarkVethThroughput case")
	benchVethN    = flag.Int("xdpflow.vethrounds", 5, "rounds of BenchmarkVethThroughput")
	benchCompare  = flag.String("xdpflow.compare", "", "other builds of xdpflow_bpfel.o, comma-separated, whose parse and hit path BenchmarkPacketCost measures too, interleaved with ours")
	benchCases    = flag.String("xdpflow.cases", "", "a regular expression: BenchmarkPacketCost runs only the cases it matches, with empty and their bases")
)

// benchTableSize is the flow table of every benchmark: the default
// MaxConnections. benchFill other connections are inserted before the hit
// path is measured, so that buckets hold what a half-full table holds.
const (
	benchTableSize = 65536
	benchFill      = benchTableSize / 2
)

// benchOptions are the default options: port 8080, TCP and UDP, a trigger
// every 5 new connections, 65536 connections.
func benchOptions() Options { return DefaultOptions() }

// trackedBenchOptions returns benchOptions with change tracking, as
// export_changed_only loads the program.
func trackedBenchOptions() Options {
	o := benchOptions()
	o.TrackChanges = true
	return o
}

// blockSignals blocks every signal on the calling thread, which must be
// locked to its goroutine, and returns the function restoring the mask.
// The kernel aborts a repeated BPF_PROG_TEST_RUN with EINTR when a signal
// is pending (the Go runtime sends SIGURG to preempt), and cilium/ebpf
// restarts it from the start: for the insert benchmarks that would run the
// first keys twice, making later runs hits instead of inserts.
func blockSignals() (restore func(), err error) {
	var all, old unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &all, &old); err != nil {
		return nil, fmt.Errorf("block signals: %w", err)
	}
	return func() { _ = unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil) }, nil
}

// benchRun runs prog repeat times on frame in one BPF_PROG_TEST_RUN with
// signals blocked and returns the kernel's time per run in ns. The program
// must return XDP_PASS.
func benchRun(prog *ebpf.Program, frame []byte, repeat int) (float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return benchRunLocked(prog, frame, repeat)
}

// benchRunLocked is benchRun on a thread the caller locked.
func benchRunLocked(prog *ebpf.Program, frame []byte, repeat int) (float64, error) {
	restore, err := blockSignals()
	if err != nil {
		return 0, err
	}
	defer restore()
	ret, d, err := prog.Benchmark(frame, repeat, nil)
	if err != nil {
		return 0, err
	}
	if want := passCode(prog); ret != want {
		return 0, fmt.Errorf("program returned %#x, want %#x (XDP_PASS or TC_ACT_UNSPEC)", ret, want)
	}
	return float64(d.Nanoseconds()), nil
}

// passCode is what prog returns for a packet it lets through unchanged:
// TC_ACT_UNSPEC for a TC program, XDP_PASS for an XDP one.
func passCode(prog *ebpf.Program) uint32 {
	if prog.Type() == ebpf.SchedCLS {
		return tcActUnspec
	}
	return xdpPass
}

// emptyTCProgram returns a TC program that only returns TC_ACT_UNSPEC:
// the baseline of the egress cases.
func emptyTCProgram(tb testing.TB) *ebpf.Program {
	tb.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tc_empty",
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		tb.Fatalf("load empty TC program: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// emptyProgram returns an XDP program that only returns XDP_PASS.
func emptyProgram(tb testing.TB) *ebpf.Program {
	tb.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "xdp_empty",
		Type:         ebpf.XDP,
		AttachType:   ebpf.AttachXDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		tb.Fatalf("load empty XDP program: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// keyStepper is a benchmark-only XDP program that makes every run of a
// repeated BPF_PROG_TEST_RUN a different connection: it adds one to the
// IPv4 source address of an untagged frame (as a little-endian word, so
// the first octet changes fastest; 2^32 runs before a key repeats), then
// tail-calls the program in slot 0 of its program array. The kernel runs
// a repeated test on one buffer, so each run sees the previous run's
// write. Its own cost (a load, a store, a tail call) is measured by
// stepping into the empty program, and subtracted.
type keyStepper struct {
	prog  *ebpf.Program
	slots *ebpf.Map
}

// ipv4SrcOffset is where the source address of an untagged IPv4 frame is.
const ipv4SrcOffset = ethHdrLen + 12

func newKeyStepper(tb testing.TB) *keyStepper {
	tb.Helper()
	slots, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		tb.Fatalf("create program array: %v", err)
	}
	tb.Cleanup(func() { slots.Close() })
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // ctx->data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // ctx->data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, ethHdrLen+ipv4HdrLen),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, ipv4SrcOffset, asm.Word),
		asm.Add.Imm(asm.R5, 1),
		asm.StoreMem(asm.R2, ipv4SrcOffset, asm.R5, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, slots.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "xdp_keystep", Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL", Instructions: insns})
	if err != nil {
		tb.Fatalf("load key stepper: %v", err)
	}
	tb.Cleanup(func() { prog.Close() })
	return &keyStepper{prog: prog, slots: slots}
}

// run runs target on n connections, the first one after frame's. The
// program array holds no reference to target afterwards.
func (s *keyStepper) run(target *ebpf.Program, frame []byte, n int) (float64, error) {
	if err := s.slots.Put(uint32(0), target); err != nil {
		return 0, fmt.Errorf("put tail-call target: %w", err)
	}
	defer s.slots.Delete(uint32(0))
	return benchRun(s.prog, frame, n)
}

// fillFrame is the first of the benchFill other connections of a table:
// stepping from 10.200.0.0 never reaches the benchmarks' own addresses.
func fillFrame() []byte { return tcp4Frame("10.200.0.0", 1, 8080, 10) }

// fill inserts benchFill other connections into target's table.
func (s *keyStepper) fill(tb testing.TB, target *ebpf.Program) {
	tb.Helper()
	if _, err := s.run(target, fillFrame(), benchFill); err != nil {
		tb.Fatalf("fill flow table: %v", err)
	}
}

// newKeyCycler returns a benchmark-only XDP program that makes a repeated
// BPF_PROG_TEST_RUN cycle over a set of k connections, k a power of two of
// at most 256: every run adds the frame's stride (the byte at
// cycleStrideOffset, in the TCP payload, which the program never reads) to
// the last octet of the IPv4 source address of an untagged frame, modulo k
// (an add and an AND with k-1), then tail-calls target. From a frame whose
// last octet is 0, run j (counting from 1) is the connection whose last
// octet is stride*j mod k; an odd stride visits all k. Like the key stepper
// it relies on the kernel keeping the frame buffer between the runs of one
// call. The stride is in the frame, not the program, so that two CPUs with
// different strides run one program: see keySetCases. target stays in the
// cycler's own program array until the benchmark ends, so that two CPUs
// can run the cycler at once (a put or delete per call would race between
// them). If the tail call fails, or the frame is too short, the cycler
// returns XDP_ABORTED, which benchRun reports as an error.
func newKeyCycler(tb testing.TB, k int, target *ebpf.Program) *ebpf.Program {
	tb.Helper()
	if k < 1 || k > 256 || k&(k-1) != 0 {
		tb.Fatalf("key cycler over %d keys: want a power of two up to 256", k)
	}
	slots, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		tb.Fatalf("create program array: %v", err)
	}
	tb.Cleanup(func() { slots.Close() })
	const lastOctet = ipv4SrcOffset + 3
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // ctx->data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // ctx->data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, cycleStrideOffset+1),
		asm.JGT.Reg(asm.R4, asm.R3, "abort"),
		asm.LoadMem(asm.R5, asm.R2, lastOctet, asm.Byte),
		asm.LoadMem(asm.R4, asm.R2, cycleStrideOffset, asm.Byte),
		asm.Add.Reg(asm.R5, asm.R4),
		asm.And.Imm(asm.R5, int32(k-1)),
		asm.StoreMem(asm.R2, lastOctet, asm.R5, asm.Byte),
		// R1 is still the context.
		asm.LoadMapPtr(asm.R2, slots.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("abort"), // XDP_ABORTED
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "xdp_keycycle", Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL", Instructions: insns})
	if err != nil {
		tb.Fatalf("load key cycler over %d keys: %v", k, err)
	}
	tb.Cleanup(func() { prog.Close() })
	if err := slots.Put(uint32(0), target); err != nil {
		tb.Fatalf("put key cycler's tail-call target: %v", err)
	}
	tb.Cleanup(func() { _ = slots.Delete(uint32(0)) })
	return prog
}

// addCycleVisits adds to visits[i], calls times, how many of the runs of
// one call of a cycler over k keys with stride, from key 0, are on key i.
func addCycleVisits(visits []uint64, k, stride, runs, calls int) {
	for j := 1; j <= min(k, runs); j++ {
		// Runs j, j+k, j+2k, ... are all on key stride*j mod k.
		visits[stride*j%k] += uint64(calls * ((runs-j)/k + 1))
	}
}

// The key sets of BenchmarkMultiCore: connection i (0 to 255) is from
// 198.51.101.i port 41000, apart from every other benchmark connection.
// A key cycler reads its stride from the first payload byte of the frame.
const (
	cycleKeys         = 256
	cyclePort         = 41000
	cycleStrideOffset = ethHdrLen + ipv4HdrLen + tcpHdrLen
)

var cyclePrefix = netip.MustParsePrefix("198.51.101.0/24")

// cycleFrame is the frame of connection i of the key sets, for a key
// cycler stepping by stride.
func cycleFrame(i, stride int) []byte {
	a := cyclePrefix.Addr().As4()
	a[3] = byte(i)
	f := tcp4Frame(netip.AddrFrom4(a).String(), cyclePort, 8080, 10)
	f[cycleStrideOffset] = byte(stride)
	return f
}

// Frames of the benchmarks: 64 bytes, except IPv6 (74, the smallest TCP
// frame) and benchFrameFull (1514, a full 1500-byte MTU), to port 8080
// unless said otherwise.
func benchFrameV4() []byte { return tcp4Frame("198.51.100.1", 40000, 8080, 10) }
func benchFrameV6() []byte { return tcp6Frame("2001:db8:100::1", 40000, 8080, 0) }

// benchReplyV4 and benchReplyV6 are the replies to benchFrameV4 and
// benchFrameV6, which the host sends: the same connections, transmitted.
func benchReplyV4() []byte { return sent(protoTCP, dstV4, 8080, "198.51.100.1", 40000, 10) }
func benchReplyV6() []byte { return sent(protoTCP, dstV6, 8080, "2001:db8:100::1", 40000, 0) }

// benchReplyOther is benchReplyV4 from a local port not counted.
func benchReplyOther() []byte { return sent(protoTCP, dstV4, 9090, "198.51.100.1", 40000, 10) }

func benchFrameVLAN() []byte {
	return ether(etherTypeIPv4, ipv4{src: addr("198.51.100.2"), dst: addr(dstV4), proto: protoTCP}.packet(l4(protoTCP, 40000, 8080, 6)), vlan{etherTypeVLAN, 100})
}
func benchFrameOther() []byte    { return tcp4Frame("198.51.100.1", 40000, 9090, 10) }
func benchFrameFull() []byte     { return tcp4Frame("198.51.100.1", 40000, 8080, 1460) }
func benchFrameInsert() []byte   { return tcp4Frame("172.16.0.0", 40000, 8080, 10) }
func benchFrameOverflow() []byte { return tcp4Frame("198.51.100.9", 40000, 8080, 10) }

// benchStat is the min, median and max of one case's samples.
type benchStat struct{ min, med, max float64 }

func summarize(xs []float64) benchStat {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return benchStat{}
	}
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return benchStat{min: s[0], med: med, max: s[len(s)-1]}
}

// benchCase is one measured case: run returns ns per packet.
type benchCase struct {
	name string
	what string
	run  func() (float64, error)
	// base, if set, names the case this one is compared with round by
	// round: the table gives the median over the rounds of the difference,
	// which the load of the machine moves less than either figure.
	base    string
	samples []float64
}

// pairedDiff returns the median over the rounds of c's sample minus its
// base's sample of the same round.
func pairedDiff(c, base *benchCase) float64 {
	d := make([]float64, len(c.samples))
	for r := range c.samples {
		d[r] = c.samples[r] - base.samples[r]
	}
	return summarize(d).med
}

// runRounds runs every case once per round, rounds times, starting each
// round one case further so that no case always follows the same one.
func runRounds(b *testing.B, rounds int, cases []*benchCase) {
	b.Helper()
	for r := range rounds {
		for i := range cases {
			c := cases[(i+r)%len(cases)]
			ns, err := c.run()
			if err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			c.samples = append(c.samples, ns)
		}
	}
}

// datapathFor loads a datapath with opts for a benchmark; it is closed when
// the benchmark ends.
func datapathFor(b *testing.B, opts Options) *Datapath {
	b.Helper()
	d, err := Load(opts)
	if err != nil {
		b.Fatalf("Load: %v", err)
	}
	b.Cleanup(func() { d.Close() })
	return d
}

// compareProgram loads the xdpflow program of the bpf2go object at path
// (e.g. an older build, from `git show REV:internal/datapath/xdpflow_bpfel.o`)
// with opts, to compare two builds in one process: figures of separate
// runs differ by more than a change of a few instructions. An older build
// may lack load-time constants this one has (the grouping's, before it
// existed): they are left out, so they must keep their defaults in opts.
// Its maps are released when the benchmark ends.
func compareProgram(b *testing.B, path string, opts Options) *ebpf.Program {
	b.Helper()
	coll, err := loadCompare(path, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(coll.Close)
	return coll.Programs[xdpflowProgXdpflow]
}

// loadCompare loads the collection of the bpf2go object at path with opts,
// as compareProgram does; it has an xdpflow program.
func loadCompare(path string, opts Options) (*ebpf.Collection, error) {
	object, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the program to compare: %w", err)
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, fmt.Errorf("read the program to compare, %s: %w", path, err)
	}
	spec.Maps[xdpflowMapFlows].MaxEntries = opts.MaxConnections
	for _, c := range loadConstants(opts.withDefaults()) {
		if v, ok := spec.Variables[c.name]; ok {
			if err := v.Set(c.value); err != nil {
				return nil, fmt.Errorf("set %s of %s: %w", c.name, path, err)
			}
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("load the program to compare, %s: %w", path, err)
	}
	if coll.Programs[xdpflowProgXdpflow] == nil {
		coll.Close()
		return nil, fmt.Errorf("%s has no program %s", path, xdpflowProgXdpflow)
	}
	return coll, nil
}

// drain reads rd until it is closed; the returned function closes it and
// waits.
func drain(rd *ringbuf.Reader) (stop func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if _, err := rd.Read(); errors.Is(err, ringbuf.ErrClosed) {
				return
			}
		}
	})
	return func() { rd.Close(); wg.Wait() }
}

// loadNaive loads the naive program with a reader draining its ring
// buffer, as the receiver drains xdpflow's. close releases both.
func loadNaive(tb testing.TB) (n *naivebench.Naive, close func()) {
	tb.Helper()
	n, err := naivebench.LoadNaive()
	if err != nil {
		tb.Fatal(err)
	}
	rd, err := ringbuf.NewReader(n.Events())
	if err != nil {
		n.Close()
		tb.Fatalf("naive ring buffer reader: %v", err)
	}
	stop := drain(rd)
	return n, func() { stop(); n.Close() }
}

// BenchmarkPacketCost measures the cost of one packet in each path of the
// program, next to an empty XDP program and the naive design, and prints a
// table. The grouping cases (groupingModes) are hits with other options,
// each compared round by round with hit-ipv4, the default key. The floor
// cases run prefixes of the hit path on a table of their own, and the
// same-key floor (issue #13: a minimal IPv4 parse, one lookup of our key,
// atomic adds and the coarse clock) against ours on that table. Each
// sub-benchmark reports the median ns per packet (ns/op; its N is
// meaningless) and the ratio of the median to the empty program's.
func BenchmarkPacketCost(b *testing.B) {
	privtest.RequireRoot(b)
	repeat, inserts := *benchRepeat, *benchInsert
	if inserts > benchTableSize {
		b.Fatalf("-xdpflow.inserts %d exceeds the table size %d", inserts, benchTableSize)
	}
	empty := emptyProgram(b)
	step := newKeyStepper(b)
	bench := func(p *ebpf.Program, frame []byte) func() (float64, error) {
		return func() (float64, error) { return benchRun(p, frame, repeat) }
	}

	// Hit path: a half-full table holding the three connections measured,
	// and two of them transmitted.
	d := datapathFor(b, withTransmit(benchOptions()))
	step.fill(b, d.Program())
	for _, f := range [][]byte{benchFrameV4(), benchFrameV6(), benchFrameVLAN()} {
		runFrame(b, d, f)
	}
	for _, f := range [][]byte{benchReplyV4(), benchReplyV6()} {
		runEgress(b, d, f, nil)
	}
	hitStats := readStats(b, d)
	emptyTC := emptyTCProgram(b)

	// The same with change tracking (export_changed_only): the connection
	// measured is listed by its first packet, as a busy connection is in
	// all but the first packet of an epoch.
	tracked := datapathFor(b, trackedBenchOptions())
	step.fill(b, tracked.Program())
	runFrame(b, tracked, benchFrameV4())

	// Overflow path: a full table, and a connection not in it.
	full := datapathFor(b, benchOptions())
	if _, err := step.run(full.Program(), fillFrame(), benchTableSize); err != nil {
		b.Fatal(err)
	}
	if st := readStats(b, full); st.NewConnections != benchTableSize || st.OverflowPackets != 0 {
		b.Fatalf("filling the table: %+v, want %d new connections and no overflow", st, benchTableSize)
	}

	// Naive, hit path: a half-full table too.
	naive, closeNaive := loadNaive(b)
	defer closeNaive()
	step.fill(b, naive.Program())
	if _, err := benchRun(naive.Program(), benchFrameV4(), 1); err != nil {
		b.Fatal(err)
	}

	// Floors: prefixes of the hit path, on a half-full table of their own
	// (a table has its own hash seed: ours is measured on it too, as
	// floor-ours, for a like-for-like comparison).
	floor, err := naivebench.LoadFloor()
	if err != nil {
		b.Fatal(err)
	}
	defer floor.Close()
	step.fill(b, floor.Xdpflow)
	if _, err := benchRun(floor.Xdpflow, benchFrameV4(), 1); err != nil {
		b.Fatal(err)
	}
	for i := range benchFill {
		if err := floor.PutSmall([4]byte{10, 200, byte(i >> 8), byte(i)}, 1, 8080, 1); err != nil {
			b.Fatal(err)
		}
	}
	lo := loopbackIndexTB(b)
	if err := floor.PutSmall(addr("198.51.100.1").As4(), 40000, 8080, lo); err != nil {
		b.Fatal(err)
	}
	// The same-key floor's 28-byte table: as full, the connection
	// measured inserted last, so first in its bucket like ours.
	for i := range benchFill {
		if err := floor.PutSameKey28([4]byte{10, 200, byte(i >> 8), byte(i)}, 1, 8080, 1); err != nil {
			b.Fatal(err)
		}
	}
	if err := floor.PutSameKey28(addr("198.51.100.1").As4(), 40000, 8080, lo); err != nil {
		b.Fatal(err)
	}

	// New connections: a fresh table per round, inserts connections
	// stepped from benchFrameInsert by the key stepper, into a table
	// filling from empty to inserts/65536. The stepper's own cost is
	// measured into the empty program and subtracted in the table.
	// insertInto runs the inserts into a fresh table loaded with opts and
	// checks that they all took an entry and that ok holds for the stats.
	insertInto := func(opts Options, ok func(Stats) bool) (float64, error) {
		d, err := Load(opts)
		if err != nil {
			return 0, err
		}
		defer d.Close()
		ns, err := step.run(d.Program(), benchFrameInsert(), inserts)
		if err != nil {
			return 0, err
		}
		if st, err := d.Stats(); err != nil || st.NewConnections != uint64(inserts) || !ok(st) {
			return 0, fmt.Errorf("after %d inserts: %+v, %v", inserts, st, err)
		}
		return ns, nil
	}
	insertOurs := func() (float64, error) {
		return insertInto(benchOptions(), func(st Stats) bool { return st.OverflowPackets == 0 })
	}
	insertTracked := func() (float64, error) {
		return insertInto(trackedBenchOptions(), func(st Stats) bool { return st.OverflowPackets == 0 })
	}
	// The same without trigger events: the ring buffer's share.
	insertNoEvents := func() (float64, error) {
		opts := benchOptions()
		opts.NewConnectionsPerEvent = 1 << 31
		return insertInto(opts, func(st Stats) bool { return st.Events == 0 })
	}
	insertNaive := func() (float64, error) {
		n, closeN := loadNaive(b)
		defer closeN()
		ns, err := step.run(n.Program(), benchFrameInsert(), inserts)
		if err != nil {
			return 0, err
		}
		if c, err := n.NewConnections(); err != nil || c != uint64(inserts) {
			return 0, fmt.Errorf("after %d inserts the naive program counted %d new connections (%v)", inserts, c, err)
		}
		return ns, nil
	}

	// Grouping: the hit path of each mode, on a half-full table of its own
	// (hits on existing series, like hit-ipv4, which is their base).
	var groupCases []*benchCase
	groupTables := map[*Datapath]Stats{}
	for _, m := range groupingModes() {
		g := datapathFor(b, m.opts)
		step.fill(b, g.Program())
		runFrame(b, g, m.frame)
		st := readStats(b, g)
		groupTables[g] = st
		groupCases = append(groupCases, &benchCase{
			name: m.name, what: fmt.Sprintf("%s; table: %d entries", m.what, st.NewConnections),
			run: bench(g.Program(), m.frame), base: "hit-ipv4",
		})
	}

	cases := []*benchCase{
		{name: "empty", what: "XDP_PASS only (the baseline)", run: bench(empty, benchFrameV4())},
		{name: "other-port", what: "ours, port not counted: parse + port filter", run: bench(d.Program(), benchFrameOther())},
		{name: "hit-ipv4", what: "ours, existing connection, IPv4 TCP", run: bench(d.Program(), benchFrameV4())},
		{name: "hit-ipv6", what: "ours, existing connection, IPv6 TCP", run: bench(d.Program(), benchFrameV6())},
		{name: "hit-vlan", what: "ours, existing connection, 802.1Q IPv4 TCP", run: bench(d.Program(), benchFrameVLAN())},
		{name: "hit-ipv4-changed", what: "hit-ipv4 with TrackChanges (export_changed_only), the entry listed in this epoch", run: bench(tracked.Program(), benchFrameV4()), base: "hit-ipv4"},
		{name: "empty-tc", what: "TC_ACT_UNSPEC only (the baseline of the egress cases)", run: bench(emptyTC, benchReplyV4())},
		{name: "egress-other-port", what: "ours on egress, local port not counted: parse + port filter", run: bench(d.EgressProgram(), benchReplyOther()), base: "empty-tc"},
		{name: "egress-hit-ipv4", what: "ours on egress, existing connection, IPv4 TCP", run: bench(d.EgressProgram(), benchReplyV4()), base: "empty-tc"},
		{name: "egress-hit-ipv6", what: "ours on egress, existing connection, IPv6 TCP", run: bench(d.EgressProgram(), benchReplyV6()), base: "empty-tc"},
		{name: "insert", what: fmt.Sprintf("ours, new connection (%d per fresh table, stepper subtracted)", inserts), run: insertOurs},
		{name: "insert-changed", what: "the same with TrackChanges: each new entry listed", run: insertTracked, base: "insert"},
		{name: "insert-no-events", what: "the same, trigger events off (N = 2^31)", run: insertNoEvents},
		{name: "overflow", what: "ours, new connection, table full (65536)", run: bench(full.Program(), benchFrameOverflow())},
		{name: "naive-hit", what: "naive design, existing connection", run: bench(naive.Program(), benchFrameV4())},
		{name: "naive-insert", what: "naive design, new connection (stepper subtracted)", run: insertNaive},
		{name: "floor-ours", what: "ours again, on the floor programs' table", run: bench(floor.Xdpflow, benchFrameV4()), base: "floor-same-key"},
		{name: "floor-same-key", what: "same-key floor: minimal IPv4 parse + lookup of our key + 2 atomic adds + coarse clock", run: bench(floor.SameKey, benchFrameV4())},
		{name: "floor-same-key-28", what: "the same with the 28-byte key, on a table of its own", run: bench(floor.SameKey28, benchFrameV4()), base: "floor-same-key"},
		{name: "floor-lookup", what: "parse + hash lookup of our key", run: bench(floor.Lookup, benchFrameV4())},
		{name: "floor-atomic", what: "parse + lookup + 2 atomic adds", run: bench(floor.LookupAtomic, benchFrameV4())},
		{name: "floor-lock", what: "parse + lookup + spin lock + 2 adds", run: bench(floor.LookupLock, benchFrameV4())},
		{name: "floor-lock-clock", what: "parse + lookup + lock + 2 adds + coarse clock", run: bench(floor.LookupLockClock, benchFrameV4())},
		{name: "floor-small-key", what: "parse + hash lookup of a 12-byte IPv4 key", run: bench(floor.SmallLookup, benchFrameV4())},
		{name: "csum-64", what: "parse + checksum sum of a 64-byte frame (floor.c)", run: bench(floor.Csum, benchFrameV4())},
		{name: "csum-1514", what: "parse + checksum sum of a 1514-byte frame", run: bench(floor.Csum, benchFrameFull())},
		{name: "stepper", what: "key stepper into the empty program (subtracted from inserts)", run: func() (float64, error) {
			return step.run(empty, benchFrameInsert(), inserts)
		}},
	}
	cases = append(cases, groupCases...)
	cases = append(cases, compareCases(b, step, bench)...)
	cases = selectCases(b, cases)
	start := time.Now()
	runRounds(b, *benchRounds, cases)
	elapsed := time.Since(start)

	// Sanity: the hit cases hit, the overflow case overflowed every time.
	if st := readStats(b, d); st.NewConnections != hitStats.NewConnections || st.OverflowPackets != 0 {
		b.Fatalf("hit-path table changed: %+v, was %+v", st, hitStats)
	}
	overflowRuns := 0
	if slices.ContainsFunc(cases, func(c *benchCase) bool { return c.name == "overflow" }) {
		overflowRuns = *benchRounds * repeat
	}
	if st := readStats(b, full); st.OverflowPackets != uint64(overflowRuns) {
		b.Fatalf("overflow table: %+v, want %d overflow packets", st, overflowRuns)
	}
	for g, before := range groupTables {
		if st := readStats(b, g); st.NewConnections != before.NewConnections || st.OverflowPackets != 0 {
			b.Fatalf("grouping table changed: %+v, was %+v", st, before)
		}
	}
	if m, err := floor.Misses(); err != nil || m != 0 {
		b.Fatalf("floor programs missed %d lookups (%v)", m, err)
	}

	stats := map[string]benchStat{}
	for _, c := range cases {
		stats[c.name] = summarize(c.samples)
	}
	// Inserts are reported net of the stepper: sample - (stepper - empty),
	// using the medians of the stepper and the empty program.
	stepCost := stats["stepper"].med - stats["empty"].med
	for name, s := range stats {
		if isInsertCase(name) {
			stats[name] = benchStat{min: s.min - stepCost, med: s.med - stepCost, max: s.max - stepCost}
		}
	}
	base := stats["empty"]

	fmt.Printf("\nBenchmarkPacketCost: BPF_PROG_TEST_RUN, %d runs per call (%d for inserts), %d rounds, %s; %s\n",
		repeat, inserts, *benchRounds, elapsed.Round(time.Second), benchMachine())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	byName := map[string]*benchCase{}
	for _, c := range cases {
		byName[c.name] = c
	}
	diffs := map[string]float64{}
	fmt.Fprintln(tw, "case\tmin ns\tmedian ns\tmax ns\tmedian/empty\tmin/empty min\tminus base, per round: median\t  what\t")
	for _, c := range cases {
		s := stats[c.name]
		diff := "-"
		if c.base != "" {
			diffs[c.name] = pairedDiff(c, byName[c.base])
			diff = fmt.Sprintf("%+.1f ns (%s)", diffs[c.name], c.base)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%.0f\t%.2fx\t%.2fx\t%s\t  %s\t\n", c.name, s.min, s.med, s.max, s.med/base.med, s.min/base.min, diff, c.what)
	}
	tw.Flush()
	if _, ok := stats["overflow"]; ok {
		fmt.Printf("targets: hit path <= 2.0x empty: %s; overflow path <= 2.5x empty: %s\n",
			verdict(stats["hit-ipv4"].med/base.med, 2.0), verdict(stats["overflow"].med/base.med, 2.5))
	}
	if ours, ok := byName["floor-ours"]; ok {
		floor := byName["floor-same-key"]
		ratios := make([]float64, len(ours.samples))
		for r := range ours.samples {
			ratios[r] = ours.samples[r] / floor.samples[r]
		}
		fmt.Printf("issue #13: hit path (floor-ours) <= 1.3x the same-key floor: medians %s, min/min %.2fx, per round %.2fx median\n",
			verdict(stats["floor-ours"].med/stats["floor-same-key"].med, 1.3),
			stats["floor-ours"].min/stats["floor-same-key"].min, summarize(ratios).med)
	}

	for _, c := range cases {
		s := stats[c.name]
		b.Run(c.name, func(b *testing.B) {
			b.ReportMetric(s.med, "ns/op")
			b.ReportMetric(s.min, "min-ns")
			b.ReportMetric(s.max, "max-ns")
			b.ReportMetric(s.med/base.med, "x-empty")
			if d, ok := diffs[c.name]; ok {
				b.ReportMetric(d, "minus-base-ns")
			}
		})
	}
}

// isInsertCase reports whether the case named name runs the key stepper,
// whose own cost is subtracted from its figures.
func isInsertCase(name string) bool { return strings.Contains(name, "insert") }

// compareCases returns the cases of the builds of -xdpflow.compare: each
// loaded with the default options on a half-full table of its own, then
// parse only and the three hit cases, and inserts without trigger events
// into a fresh table per round, each compared round by round with the same
// case of ours. With one build they are named *-cmp, with several
// *-cmp-NAME, NAME the file's base name without ".o".
func compareCases(b *testing.B, step *keyStepper, bench func(*ebpf.Program, []byte) func() (float64, error)) []*benchCase {
	b.Helper()
	if *benchCompare == "" {
		return nil
	}
	paths := strings.Split(*benchCompare, ",")
	var cases []*benchCase
	for _, path := range paths {
		cmp := compareProgram(b, path, benchOptions())
		step.fill(b, cmp)
		for _, f := range [][]byte{benchFrameV4(), benchFrameV6(), benchFrameVLAN()} {
			if _, err := benchRun(cmp, f, 1); err != nil {
				b.Fatal(err)
			}
		}
		suffix := "-cmp"
		if len(paths) > 1 {
			suffix += "-" + strings.TrimSuffix(filepath.Base(path), ".o")
		}
		what := "the same, program of " + path
		cases = append(cases,
			&benchCase{name: "other-port" + suffix, what: what, run: bench(cmp, benchFrameOther()), base: "other-port"},
			&benchCase{name: "hit-ipv4" + suffix, what: what, run: bench(cmp, benchFrameV4()), base: "hit-ipv4"},
			&benchCase{name: "hit-ipv6" + suffix, what: what, run: bench(cmp, benchFrameV6()), base: "hit-ipv6"},
			&benchCase{name: "hit-vlan" + suffix, what: what, run: bench(cmp, benchFrameVLAN()), base: "hit-vlan"},
			&benchCase{name: "insert-no-events" + suffix, what: what, run: func() (float64, error) { return insertCompare(step, path) }, base: "insert-no-events"},
		)
	}
	return cases
}

// insertCompare runs -xdpflow.inserts inserts without trigger events into a
// fresh table of the build at path, as insert-no-events does into ours, and
// checks that each took an entry.
func insertCompare(step *keyStepper, path string) (float64, error) {
	opts := benchOptions()
	opts.NewConnectionsPerEvent = 1 << 31
	coll, err := loadCompare(path, opts)
	if err != nil {
		return 0, err
	}
	defer coll.Close()
	ns, err := step.run(coll.Programs[xdpflowProgXdpflow], benchFrameInsert(), *benchInsert)
	if err != nil {
		return 0, err
	}
	var inserted uint64
	if err := coll.Variables[xdpflowVarNewConnections].Get(&inserted); err != nil || inserted != uint64(*benchInsert) {
		return 0, fmt.Errorf("%s: after %d inserts, %d new connections (%v)", path, *benchInsert, inserted, err)
	}
	return ns, nil
}

// selectCases returns the cases -xdpflow.cases matches, in their order,
// with empty (the baseline of every ratio), the base of each, and the
// stepper if an insert case is among them (it is subtracted from them).
func selectCases(b *testing.B, cases []*benchCase) []*benchCase {
	b.Helper()
	if *benchCases == "" {
		return cases
	}
	re, err := regexp.Compile(*benchCases)
	if err != nil {
		b.Fatalf("-xdpflow.cases: %v", err)
	}
	keep := map[string]bool{"empty": true}
	for _, c := range cases {
		if re.MatchString(c.name) {
			keep[c.name] = true
			if c.base != "" {
				keep[c.base] = true
			}
			if isInsertCase(c.name) {
				keep["stepper"] = true
			}
		}
	}
	var selected []*benchCase
	for _, c := range cases {
		if keep[c.name] {
			selected = append(selected, c)
		}
	}
	return selected
}

// groupingMode is a BenchmarkPacketCost case of the grouping: the hit
// path of frame with opts.
type groupingMode struct {
	name, what string
	opts       Options
	frame      []byte
}

// groupingModes are the grouping cases of BenchmarkPacketCost: each a hit
// on an existing series, to compare with hit-ipv4 (the default key).
func groupingModes() []groupingMode {
	with := func(f func(*Options)) Options {
		o := benchOptions()
		f(&o)
		return o
	}
	named := func(n int, other bool) Options {
		return with(func(o *Options) {
			o.Source.CIDRs = true
			o.CIDRs = benchCIDRs(n)
			o.OtherOutsideCIDRs = other
		})
	}
	modes := []groupingMode{
		{"group-src24", "ours, hit, source address truncated to /24", with(func(o *Options) { o.Source.PrefixIPv4 = 24 }), benchFrameV4()},
		{"group-dst", "ours, hit, destination address kept too", with(func(o *Options) {
			o.Dimensions = ConnectionDimensions()
			o.Dimensions.DstAddr = true
		}), benchFrameV4()},
	}
	for _, n := range []int{10, 1000, MaxCIDRs} {
		modes = append(modes, groupingMode{fmt.Sprintf("cidr-%d", n), fmt.Sprintf("ours, hit, source in one of %d named CIDRs (LPM trie lookup)", n), named(n, false), benchFrameV4()})
	}
	return append(modes,
		groupingMode{"cidr-miss-1000", "ours, hit, source outside 1000 named CIDRs, address kept", named(1000, false), benchFrameOutside()},
		groupingMode{"cidr-other-1000", "ours, hit, source outside 1000 named CIDRs: the \"other\" series", named(1000, true), benchFrameOutside()},
	)
}

// benchFrameOutside is a connection outside every CIDR of benchCIDRs.
func benchFrameOutside() []byte { return tcp4Frame("203.0.113.1", 40000, 8080, 10) }

// benchCIDRs returns n IPv4 CIDRs: 198.51.100.0/24, which holds the source
// of benchFrameV4, and n-1 others, /16 to /28, drawn from a fixed seed,
// some nested. The others have a second octet of 73-199: none holds a
// source of fillFrame's connections (a.b.0.0 and a.b.1.0, b in 200-255 and
// 0-72) or of benchFrameOutside, so a fill stays benchFill connections
// whose addresses miss the trie.
func benchCIDRs(n int) []netip.Prefix {
	rnd := rand.New(rand.NewPCG(1, 2))
	cidrs := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	seen := map[netip.Prefix]bool{cidrs[0]: true}
	for len(cidrs) < n {
		a := [4]byte{byte(1 + rnd.IntN(223)), byte(73 + rnd.IntN(127)), byte(rnd.IntN(256)), byte(rnd.IntN(256))}
		p := netip.PrefixFrom(netip.AddrFrom4(a), 16+rnd.IntN(13)).Masked()
		if !seen[p] {
			seen[p] = true
			cidrs = append(cidrs, p)
		}
	}
	return cidrs
}

func verdict(ratio, target float64) string {
	if ratio <= target {
		return fmt.Sprintf("MET (%.2fx)", ratio)
	}
	return fmt.Sprintf("NOT MET (%.2fx)", ratio)
}

// loopbackIndexTB is loopbackIndex for a benchmark.
func loopbackIndexTB(tb testing.TB) uint32 {
	tb.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		tb.Fatalf("find lo: %v", err)
	}
	return uint32(lo.Index)
}

// benchMachine describes the machine: CPUs, kernel, CPU model.
func benchMachine() string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	return fmt.Sprintf("%d CPUs, kernel %s, %s", runtime.NumCPU(), unix.ByteSliceToString(u.Release[:]), cpuModel())
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(data)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// pinnedWorker runs BPF_PROG_TEST_RUN calls on a thread pinned to one CPU,
// with every signal blocked. Its goroutine never unlocks the thread, so
// the runtime ends the thread when stop is called rather than reusing a
// thread pinned to one CPU.
type pinnedWorker struct {
	jobs    chan pinnedJob
	results chan pinnedResult
	done    chan struct{}
}

type pinnedJob struct {
	prog   *ebpf.Program
	frame  []byte
	repeat int
}

type pinnedResult struct {
	ns   float64       // kernel time per run
	wall time.Duration // of the whole call
	err  error
}

func newPinnedWorker(tb testing.TB, cpu int) *pinnedWorker {
	tb.Helper()
	w := &pinnedWorker{jobs: make(chan pinnedJob), results: make(chan pinnedResult), done: make(chan struct{})}
	ready := make(chan error)
	go func() {
		defer close(w.done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			ready <- fmt.Errorf("pin thread to CPU %d: %w", cpu, err)
			return
		}
		if _, err := blockSignals(); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for j := range w.jobs {
			start := time.Now()
			ns, err := benchRunLocked(j.prog, j.frame, j.repeat)
			w.results <- pinnedResult{ns, time.Since(start), err}
		}
	}()
	if err := <-ready; err != nil {
		<-w.done
		tb.Fatal(err)
	}
	tb.Cleanup(func() { close(w.jobs); <-w.done })
	return w
}

// multiCase is one BenchmarkMultiCore measurement: jobs[i] runs on CPU i
// (one job: on CPU 0 alone), all at once.
type multiCase struct {
	name    string
	what    string
	jobs    []pinnedJob
	samples [][]float64 // samples[round][cpu]
	// busy[round] is the least, over the CPUs, of the kernel's loop time
	// over the wall time of the call: near 1 when the loops ran
	// unpreempted (and so overlapped), lower when the rest of the machine
	// took the CPU (the kernel leaves that time out of its figure, so two
	// "concurrent" loops may in fact have taken turns).
	busy []float64
}

// keySetSizes are the K of BenchmarkMultiCore's key-set sweep.
var keySetSizes = []int{1, 2, 4, 16, 256}

// keySetStrides are the strides of the key cyclers of CPU 0 and CPU 1.
// Both are odd, so each CPU visits all K keys of a set, and they differ, so
// the CPUs' positions in the set drift apart and together: two keys apart
// per pair of runs in lockstep, and by however much one CPU runs ahead of
// the other, which varies. The CPUs then meet on one key now and then,
// roughly as two independent streams of packets over K connections would
// (about one packet in K). With one stride for both, the CPUs would keep
// the phase they started with: both starting on one key, every packet would
// collide, as in same-key-2cpu, and a fixed offset apart, none would.
var keySetStrides = [2]int{1, 3}

// keySetCase is one K of the key-set sweep: its 1-CPU and 2-CPU cases.
type keySetCase struct {
	k        int
	one, two *multiCase
}

// keySetCases returns the cases of the key-set sweep over target, whose
// table must hold the cycleKeys connections of cycleFrame: for each K a
// 1-CPU case (the stride of CPU 0, run on either CPU) and a 2-CPU case,
// every call repeat runs from connection 0. Both CPUs run one cycler and
// differ only in their frames' strides, as disjoint-2cpu differs only in
// its frames: every BPF_PROG_TEST_RUN call puts its program in the
// kernel's XDP dispatcher and takes it out after (an RCU grace period when
// that changes the set of programs), and with a different program per CPU
// the two calls were measured to largely take turns (K = 1 read less than
// a third of same-key-2cpu's ns per packet, busy 0.4) rather than overlap.
func keySetCases(tb testing.TB, target *ebpf.Program, repeat int) []keySetCase {
	tb.Helper()
	var frames [2][]byte
	for cpu, stride := range keySetStrides {
		frames[cpu] = cycleFrame(0, stride)
	}
	var sets []keySetCase
	for _, k := range keySetSizes {
		c := newKeyCycler(tb, k, target)
		sets = append(sets, keySetCase{
			k: k,
			one: &multiCase{
				name: fmt.Sprintf("set%d-1cpu", k),
				what: fmt.Sprintf("ours, hit, cycling over %d connections (stride %d), one CPU (0 and 1 alternately)", k, keySetStrides[0]),
				jobs: []pinnedJob{{c, frames[0], repeat}},
			},
			two: &multiCase{
				name: fmt.Sprintf("set%d-2cpu", k),
				what: fmt.Sprintf("ours, hit, both CPUs cycling over the same %d connections (strides %d and %d)", k, keySetStrides[0], keySetStrides[1]),
				jobs: []pinnedJob{{c, frames[0], repeat}, {c, frames[1], repeat}},
			},
		})
	}
	return sets
}

// checkKeySetVisits fails the benchmark unless every connection of the key
// sets counted its insert and exactly the runs the cyclers of sets made on
// it, repeat per call: that every run was a hit on the connection it was
// meant to be (the kernel kept the frame between runs).
func checkKeySetVisits(b *testing.B, d *Datapath, sets []keySetCase, repeat int) {
	b.Helper()
	want := make([]uint64, cycleKeys)
	for i := range want {
		want[i] = 1 // the insert
	}
	for _, s := range sets {
		addCycleVisits(want, s.k, keySetStrides[0], repeat, len(s.one.samples))
		for cpu := range s.two.jobs {
			addCycleVisits(want, s.k, keySetStrides[cpu], repeat, len(s.two.samples))
		}
	}
	got := make([]uint64, cycleKeys)
	for key, v := range readFlows(b, d) {
		if key.SrcPort == cyclePort && cyclePrefix.Contains(key.Source()) {
			got[key.Source().As4()[3]] = v.Packets
		}
	}
	for i := range want {
		if got[i] != want[i] {
			b.Fatalf("key-set connection %d counted %d packets, want %d", i, got[i], want[i])
		}
	}
}

// BenchmarkMultiCore measures the hit path run from both CPUs at once, on
// one connection (both CPUs take the same entry's lock: the worst case)
// and on one connection per CPU (what RSS gives), next to the same on one
// CPU, and the empty program likewise. It reports ns per packet on each
// CPU and the throughput ratio, 2 CPUs / 1 CPU (2.00 is perfect scaling).
//
// Between the two extremes, a key-set sweep: both CPUs run packets over
// the same set of K existing connections, K = 1, 2, 4, 16, 256 (setK-2cpu),
// next to the same set on one CPU (setK-1cpu). A key cycler
// (newKeyCycler), one program run by both CPUs, steps each CPU's frame
// through the set, CPU 0's with stride 1 and CPU 1's with stride 3 (see
// keySetStrides); the 1-CPU case uses stride 1 on whichever CPU runs it.
// The cycler's own cost (two byte loads, an add, an AND, a store and a
// tail call) is in the 1-CPU and the 2-CPU figures alike, so the ratio
// stays fair; the ns per packet of these cases are not the hit path
// alone. All 256 connections are inserted before measuring, and the
// packets each one counted are checked afterwards against what the
// cyclers visited.
func BenchmarkMultiCore(b *testing.B) {
	privtest.RequireRoot(b)
	if runtime.NumCPU() < 2 {
		b.Skip("needs 2 CPUs")
	}
	repeat := *benchRepeat
	empty := emptyProgram(b)
	step := newKeyStepper(b)
	d := datapathFor(b, benchOptions())
	step.fill(b, d.Program())
	keyA, keyB := benchFrameV4(), tcp4Frame("198.51.100.3", 40001, 8080, 10)
	runFrame(b, d, keyA)
	runFrame(b, d, keyB)
	for i := range cycleKeys {
		runFrame(b, d, cycleFrame(i, 0))
	}
	before := readStats(b, d)
	// Lock-free counting on one connection, for comparison: the floor
	// program doing two atomic adds instead of taking the lock.
	floor, err := naivebench.LoadFloor()
	if err != nil {
		b.Fatal(err)
	}
	defer floor.Close()
	step.fill(b, floor.Xdpflow)
	if _, err := benchRun(floor.Xdpflow, keyA, 1); err != nil {
		b.Fatal(err)
	}
	workers := []*pinnedWorker{newPinnedWorker(b, 0), newPinnedWorker(b, 1)}

	job := func(p *ebpf.Program, f []byte) pinnedJob { return pinnedJob{p, f, repeat} }
	cases := []*multiCase{
		{name: "empty-1cpu", what: "empty program, one CPU (0 and 1 alternately)", jobs: []pinnedJob{job(empty, keyA)}},
		{name: "empty-2cpu", what: "empty program, both CPUs", jobs: []pinnedJob{job(empty, keyA), job(empty, keyA)}},
		{name: "hit-1cpu", what: "ours, hit, one CPU (0 and 1 alternately)", jobs: []pinnedJob{job(d.Program(), keyA)}},
		{name: "same-key-2cpu", what: "ours, hit, both CPUs on one connection (one lock)", jobs: []pinnedJob{job(d.Program(), keyA), job(d.Program(), keyA)}},
		{name: "disjoint-2cpu", what: "ours, hit, one connection per CPU", jobs: []pinnedJob{job(d.Program(), keyA), job(d.Program(), keyB)}},
		{name: "atomic-1cpu", what: "floor-atomic (lookup + 2 atomic adds, no lock), one CPU", jobs: []pinnedJob{job(floor.LookupAtomic, keyA)}},
		{name: "atomic-same-key-2cpu", what: "floor-atomic, both CPUs on one connection", jobs: []pinnedJob{job(floor.LookupAtomic, keyA), job(floor.LookupAtomic, keyA)}},
	}
	baseline := map[string]string{"empty-2cpu": "empty-1cpu", "same-key-2cpu": "hit-1cpu", "disjoint-2cpu": "hit-1cpu", "atomic-same-key-2cpu": "atomic-1cpu"}
	sets := keySetCases(b, d.Program(), repeat)
	for _, s := range sets {
		cases = append(cases, s.one, s.two)
		baseline[s.two.name] = s.one.name
	}
	start := time.Now()
	for r := range *benchMCRounds {
		for i := range cases {
			c := cases[(i+r)%len(cases)]
			// A 1-CPU case runs on CPU 0 in even rounds, CPU 1 in odd
			// ones: the CPUs need not be equally loaded by the rest of
			// the machine.
			first := 0
			if len(c.jobs) == 1 {
				first = r % 2
			}
			for i, j := range c.jobs {
				workers[first+i].jobs <- j
			}
			sample := make([]float64, len(c.jobs))
			busy := 1.0
			for i := range c.jobs {
				res := <-workers[first+i].results
				if res.err != nil {
					b.Fatalf("%s on CPU %d: %v", c.name, first+i, res.err)
				}
				sample[i] = res.ns
				busy = min(busy, res.ns*float64(repeat)/float64(res.wall.Nanoseconds()))
			}
			c.samples = append(c.samples, sample)
			c.busy = append(c.busy, busy)
		}
	}
	elapsed := time.Since(start)
	if st := readStats(b, d); st.NewConnections != before.NewConnections || st.OverflowPackets != 0 {
		b.Fatalf("hit-path table changed: %+v, was %+v", st, before)
	}
	checkKeySetVisits(b, d, sets, repeat)

	// For a 1-CPU case the CPU 0 column holds both CPUs' samples.

	// Throughput of a round: the sum over CPUs of 1/ns; the ratio divides
	// it by the 1-CPU case of the same round.
	throughput := func(sample []float64) float64 {
		var t float64
		for _, ns := range sample {
			t += 1 / ns
		}
		return t
	}
	byName := map[string]*multiCase{}
	for _, c := range cases {
		byName[c.name] = c
	}
	fmt.Printf("\nBenchmarkMultiCore: BPF_PROG_TEST_RUN, %d runs per call and CPU, %d rounds, %s; %s\n",
		repeat, *benchMCRounds, elapsed.Round(time.Second), benchMachine())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tCPU 0 ns/pkt min/med/max\tCPU 1 ns/pkt min/med/max\tthroughput 2/1 CPU: of medians\tper round min/med/max\tbusy\t  what\t")
	medians := func(c *multiCase) []float64 {
		var m []float64
		for cpu := range c.jobs {
			var xs []float64
			for _, s := range c.samples {
				xs = append(xs, s[cpu])
			}
			m = append(m, summarize(xs).med)
		}
		return m
	}
	var report []func()
	for _, c := range cases {
		perCPU := make([]benchStat, len(c.jobs))
		cols := []string{"-", "-"}
		for cpu := range c.jobs {
			var xs []float64
			for _, s := range c.samples {
				xs = append(xs, s[cpu])
			}
			perCPU[cpu] = summarize(xs)
			cols[cpu] = fmt.Sprintf("%.0f / %.1f / %.0f", perCPU[cpu].min, perCPU[cpu].med, perCPU[cpu].max)
		}
		var ratio float64
		ratioCol, roundsCol := "-", "-"
		if base, ok := baseline[c.name]; ok {
			ratio = throughput(medians(c)) / throughput(medians(byName[base]))
			var xs []float64
			for r, s := range c.samples {
				xs = append(xs, throughput(s)/throughput(byName[base].samples[r]))
			}
			perRound := summarize(xs)
			ratioCol = fmt.Sprintf("%.2fx", ratio)
			roundsCol = fmt.Sprintf("%.2f / %.2f / %.2f", perRound.min, perRound.med, perRound.max)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t  %s\t\n", c.name, cols[0], cols[1], ratioCol, roundsCol, summarize(c.busy).med, c.what)
		report = append(report, func() {
			b.Run(c.name, func(b *testing.B) {
				b.ReportMetric(perCPU[0].med, "ns/op")
				if len(perCPU) > 1 {
					b.ReportMetric(perCPU[1].med, "cpu1-ns/op")
					b.ReportMetric(ratio, "x-1cpu-throughput")
				}
			})
		})
	}
	tw.Flush()
	fmt.Println("busy: median over rounds of the kernel's loop time / the call's wall time (least of the CPUs); the")
	fmt.Println("call also swaps the XDP dispatcher (an RCU grace period), so short loops (empty) read low anyway")
	for _, f := range report {
		f()
	}
}

// vethFrames returns n 64-byte Ethernet/IPv4/UDP frames from the sender to
// port 8080 of the receiver of a netnstest pair, one connection each
// (source ports 50000 on), with a valid IPv4 header checksum.
func vethFrames(n int) [][]byte {
	frames := make([][]byte, n)
	for i := range frames {
		ip := ipv4{src: netnstest.SenderIPv4, dst: netnstest.ReceiverIPv4, proto: protoUDP}.packet(udp(uint16(50000+i), 8080, make([]byte, 22)))
		var sum uint32
		for j := 0; j < ipv4HdrLen; j += 2 {
			sum += uint32(be.Uint16(ip[j:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		be.PutUint16(ip[10:], ^uint16(sum))
		f := ether(etherTypeIPv4, ip)
		copy(f[0:6], netnstest.ReceiverMAC)
		copy(f[6:12], netnstest.SenderMAC)
		frames[i] = f
	}
	return frames
}

// BenchmarkVethThroughput measures packets per second through a veth pair
// end to end: one thread in the sender namespace writes 64-byte UDP frames
// to an AF_PACKET socket on the sender veth as fast as it can for a fixed
// time, and the receiver veth's rx_packets counter says how many arrived;
// there a UDP socket on port 8080, never read, drops them once full.
// Cases: no XDP program, the empty program attached natively, ours
// attached natively. With a program attached, veth receives in NAPI and
// turns each skb into an XDP buffer, a cost of its own: the empty program
// separates that from ours.
func BenchmarkVethThroughput(b *testing.B) {
	privtest.RequireRoot(b)
	pair := netnstest.New(b)
	d := datapathFor(b, benchOptions()) // closed before the pair is removed
	empty := emptyProgram(b)
	rcvIdx, err := netnstest.Ifindex(pair.Receiver, netnstest.ReceiverIface)
	if err != nil {
		b.Fatal(err)
	}
	sndIdx, err := netnstest.Ifindex(pair.Sender, netnstest.SenderIface)
	if err != nil {
		b.Fatal(err)
	}
	var fd int
	err = pair.Do(pair.Sender, func() error {
		var err error
		// Protocol 0: the socket sends only, it receives nothing.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: sndIdx}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		b.Fatalf("AF_PACKET socket on %s: %v", netnstest.SenderIface, err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
		b.Fatalf("PACKET_QDISC_BYPASS: %v", err)
	}
	frames := vethFrames(64)
	// A socket on port 8080 that nobody reads: once its buffer is full,
	// the receiver's stack drops the datagrams at the socket (rather than
	// answering each with an ICMP port unreachable, rate limited).
	var sink *net.UDPConn
	err = pair.Do(pair.Receiver, func() error {
		var err error
		sink, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netnstest.ReceiverIPv4, 8080)))
		return err
	})
	if err != nil {
		b.Fatalf("listen on port 8080 in the receiver: %v", err)
	}
	defer sink.Close()

	// send writes frames for dur and returns how many were written, how
	// many the receiver veth received meanwhile, the time taken and the
	// CPU time of the sending thread. The receive path runs on that
	// thread too: the kernel processes the softirq a veth transmit raises
	// as the send returns, and charges it to the thread.
	send := func(dur time.Duration) (sent, received uint64, elapsed, cpu time.Duration, err error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		threadCPU := func() time.Duration {
			var ru unix.Rusage
			_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
			return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		before, err := netnstest.RxPackets(pair.Receiver, netnstest.ReceiverIface)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		start, cpuStart := time.Now(), threadCPU()
		for time.Since(start) < dur {
			for _, f := range frames {
				if _, err := unix.Write(fd, f); err == nil {
					sent++
				} else if err != unix.ENOBUFS && err != unix.EAGAIN {
					return 0, 0, 0, 0, fmt.Errorf("send: %w", err)
				}
			}
		}
		elapsed, cpu = time.Since(start), threadCPU()-cpuStart
		after, err := netnstest.RxPackets(pair.Receiver, netnstest.ReceiverIface)
		return sent, after - before, elapsed, cpu, err
	}
	counted := func() (uint64, error) {
		var tbl FlowTable
		if err := d.ReadFlows(&tbl); err != nil {
			return 0, err
		}
		var n uint64
		for _, v := range tbl.Values {
			n += v.Packets
		}
		return n, nil
	}

	type vethCase struct {
		name, what     string
		attach, detach func() error
		pps, cpuNs     []float64
		sent, received uint64
	}
	var emptyLink link.Link
	cases := []*vethCase{
		{name: "no-xdp", what: "no XDP program", attach: func() error { return nil }, detach: func() error { return nil }},
		{name: "empty", what: "empty program, native mode", attach: func() error {
			return pair.Do(pair.Receiver, func() error {
				var err error
				emptyLink, err = link.AttachXDP(link.XDPOptions{Program: empty, Interface: rcvIdx, Flags: link.XDPDriverMode})
				return err
			})
		}, detach: func() error { return emptyLink.Close() }},
		{name: "ours", what: "xdpflow, native mode", attach: func() error {
			return pair.Do(pair.Receiver, func() error {
				_, err := d.Attach(netnstest.ReceiverIface, AttachNative)
				return err
			})
		}, detach: func() error { return d.Detach(netnstest.ReceiverIface) }},
	}
	ours := cases[2]
	var oursCounted uint64
	start := time.Now()
	for r := range *benchVethN {
		for i := range cases {
			c := cases[(i+r)%len(cases)]
			if err := c.attach(); err != nil {
				b.Fatalf("%s: attach: %v", c.name, err)
			}
			before, err := counted()
			if err != nil {
				b.Fatal(err)
			}
			sent, received, elapsed, cpu, err := send(*benchVeth)
			if err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			if err := c.detach(); err != nil {
				b.Fatalf("%s: detach: %v", c.name, err)
			}
			after, err := counted()
			if err != nil {
				b.Fatal(err)
			}
			if c == ours {
				oursCounted += after - before
			} else if after != before {
				b.Fatalf("%s: the detached program counted %d packets", c.name, after-before)
			}
			c.pps = append(c.pps, float64(received)/elapsed.Seconds())
			c.cpuNs = append(c.cpuNs, float64(cpu.Nanoseconds())/float64(received))
			c.sent += sent
			c.received += received
		}
	}
	elapsed := time.Since(start)

	stats, cpuStats := map[string]benchStat{}, map[string]benchStat{}
	for _, c := range cases {
		stats[c.name], cpuStats[c.name] = summarize(c.pps), summarize(c.cpuNs)
	}
	fmt.Printf("\nBenchmarkVethThroughput: 64-byte UDP frames from one AF_PACKET sender thread, %s per case, %d rounds, %s; %s\n",
		*benchVeth, *benchVethN, elapsed.Round(time.Second), benchMachine())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tkpps min/med/max\tmedian/no-xdp\tmedian/empty\tCPU ns/pkt min/med/max\tmedian/no-xdp\tmedian/empty\treceived/sent\t  what\t")
	for _, c := range cases {
		s, cs := stats[c.name], cpuStats[c.name]
		fmt.Fprintf(tw, "%s\t%.0f / %.0f / %.0f\t%.2fx\t%.2fx\t%.0f / %.0f / %.0f\t%.2fx\t%.2fx\t%.4f\t  %s\t\n", c.name,
			s.min/1e3, s.med/1e3, s.max/1e3, s.med/stats["no-xdp"].med, s.med/stats["empty"].med,
			cs.min, cs.med, cs.max, cs.med/cpuStats["no-xdp"].med, cs.med/cpuStats["empty"].med,
			float64(c.received)/float64(c.sent), c.what)
	}
	tw.Flush()
	// rx_packets also counts the odd packet of the namespaces' own (IPv6
	// router or multicast listener messages): ours need not count those.
	fmt.Printf("ours counted %d of the %d packets received (%d sent) with it attached\n", oursCounted, ours.received, ours.sent)
	if oursCounted > ours.received || float64(oursCounted) < 0.99*float64(ours.received) {
		b.Errorf("ours counted %d packets, the receiver veth received %d", oursCounted, ours.received)
	}
	for _, c := range cases {
		s := stats[c.name]
		cs := cpuStats[c.name]
		b.Run(c.name, func(b *testing.B) {
			b.ReportMetric(s.med, "pps")
			b.ReportMetric(1e9/s.med, "ns/op")
			b.ReportMetric(s.med/stats["no-xdp"].med, "x-no-xdp-pps")
			b.ReportMetric(cs.med, "cpu-ns/pkt")
		})
	}
}
