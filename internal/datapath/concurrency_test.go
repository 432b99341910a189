//go:build linux

package datapath

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
	"golang.org/x/sys/unix"
)

// TestConcurrentRuns runs the program from several goroutines at once on
// the same connections, in the same order, so that several CPUs miss the
// lookup of a new connection together and race to insert it; then each
// goroutine runs a few of them with RunOptions.Repeat, so that CPUs update
// one entry in parallel in tight loops. Every packet must be counted
// exactly once (in its connection, or in the overflow where a CPU stalled),
// and every connection inserted once.
//
// A run with Repeat > 1 costs about 20ms whatever the count (the kernel
// swaps the XDP dispatcher around it), hence few such runs.
func TestConcurrentRuns(t *testing.T) {
	privtest.RequireRoot(t)
	const (
		goroutines = 8
		conns      = 256 // run once per pass by every goroutine
		passes     = 4
		hot        = 4 // the first hot connections are also run with repeat
		repeat     = 20000
	)
	d := loadDatapath(t, testOptions())
	prog := d.Program()
	ifindex := loopbackIndex(t)
	t.Logf("%d goroutines on %d CPUs", goroutines, runtime.NumCPU())

	run := func(i int, repeat uint32) error {
		ret, err := runExactly(prog, keyFrame(i), repeat)
		if err == nil && ret != xdpPass {
			err = fmt.Errorf("returned %d, want XDP_PASS", ret)
		}
		return err
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Go(func() {
			<-start
			for range passes {
				for i := range conns {
					if err := run(i, 1); err != nil {
						errs <- err
						return
					}
				}
			}
			for i := range hot {
				if err := run(i, repeat); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("run program: %v", err)
	}

	flows := readFlows(t, d)
	if len(flows) != conns {
		t.Fatalf("got %d flows, want %d", len(flows), conns)
	}
	// A packet meeting an entry another CPU inserted but has not yet
	// published retries MAX_COUNT_ATTEMPTS lookups, then goes to the
	// overflow counters: counted, not attributed. Only a CPU stalled in
	// that window leads there, as an emulator's vCPUs are (emulatedCPUs).
	var missing Stats
	for i := range conns {
		packets := uint64(goroutines * passes)
		if i < hot {
			packets += goroutines * repeat
		}
		wantBytes := packets * uint64(len(keyFrame(i)))
		v, ok := flows[keyOf(i, ifindex)]
		if !ok || v.Packets > packets || v.Bytes > wantBytes {
			t.Errorf("connection %d: %+v (present %v), want %d packets, %d bytes", i, v, ok, packets, wantBytes)
			continue
		}
		missing.OverflowPackets += packets - v.Packets
		missing.OverflowBytes += wantBytes - v.Bytes
	}
	st := readStats(t, d)
	want := Stats{NewConnections: conns, Events: conns / 5, OverflowPackets: missing.OverflowPackets,
		OverflowBytes: missing.OverflowBytes}
	if st != want {
		t.Errorf("stats %+v, want %+v: the packets missing from connections are the overflow", st, want)
	}
	if st.OverflowPackets != 0 && !emulatedCPUs() {
		t.Errorf("%d packets in overflow: the retries did not outlast an insert's publication", st.OverflowPackets)
	}
	if st.OverflowPackets != 0 {
		t.Logf("%d packets in overflow under emulation (%s set)", st.OverflowPackets, emulatedCPUsEnv)
	}
}

// emulatedCPUsEnv, set by the VM kernel matrix (vmtest/tier.sh), says that
// the CPUs are emulated: a vCPU can stall for milliseconds between two
// instructions, longer than any bounded retry waits.
const emulatedCPUsEnv = "XDPFLOW_EMULATED_CPUS"

func emulatedCPUs() bool { return os.Getenv(emulatedCPUsEnv) != "" }

// runExactly runs prog on frame repeat times in one BPF_PROG_TEST_RUN.
//
// The kernel aborts a repeated run with EINTR when a signal is pending,
// and cilium/ebpf then restarts it from the start, so the program may run
// more than repeat times: the Go runtime's preemption signals (SIGURG) do
// hit threads in this syscall, and made exact counts flaky. Blocking every
// signal on the calling thread for the duration of the run keeps the count
// exact; signals that arrive meanwhile are delivered when it ends.
func runExactly(prog *ebpf.Program, frame []byte, repeat uint32) (uint32, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all, old unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &all, &old); err != nil {
		return 0, fmt.Errorf("block signals: %w", err)
	}
	defer func() { _ = unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil) }()
	return prog.Run(&ebpf.RunOptions{Data: frame, Repeat: repeat})
}
