//go:build linux

package datapath

import (
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
	"golang.org/x/sys/unix"
)

// monoNow reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_coarse_ns
// (which lags it by less than a tick).
func monoNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatalf("read CLOCK_MONOTONIC: %v", err)
	}
	return uint64(ts.Nano())
}

// within fails unless got lies in [lo-slack, hi+slack].
func within(t *testing.T, what string, got, lo, hi time.Time, slack time.Duration) {
	t.Helper()
	if got.Before(lo.Add(-slack)) || got.After(hi.Add(slack)) {
		t.Errorf("%s = %v, want between %v and %v (±%v)", what, got, lo, hi, slack)
	}
}

// TestClockOffsetWall checks that a kernel timestamp read now converts
// to the current wall-clock time.
func TestClockOffsetWall(t *testing.T) {
	off, err := MeasureClockOffset()
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	mono := monoNow(t)
	after := time.Now()
	within(t, "Wall(CLOCK_MONOTONIC now)", off.Wall(mono), before, after, 2*time.Millisecond)
}

// TestClockOffsetInverse checks that Wall and KernelNs are inverses.
func TestClockOffsetInverse(t *testing.T) {
	off, err := MeasureClockOffset()
	if err != nil {
		t.Fatal(err)
	}
	mono := monoNow(t)
	for _, ns := range []uint64{mono, mono - 1, mono + 123456789, 1, uint64(time.Hour)} {
		if got := off.KernelNs(off.Wall(ns)); got != ns {
			t.Errorf("KernelNs(Wall(%d)) = %d", ns, got)
		}
	}
	for _, wall := range []time.Time{time.Now(), time.Unix(1700000000, 999999999), time.Now().Add(-time.Minute)} {
		if got := off.Wall(off.KernelNs(wall)); !got.Equal(wall) {
			t.Errorf("Wall(KernelNs(%v)) = %v", wall, got)
		}
	}
}

// TestClockFirstSeen checks that a packet's first-seen time, converted to
// wall-clock time, lies between times read right before and after the run.
func TestClockFirstSeen(t *testing.T) {
	privtest.RequireRoot(t)
	d := loadDatapath(t, testOptions())
	off, err := MeasureClockOffset()
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	runFrame(t, d, tcp4Frame(src4, sport, dport, 10))
	after := time.Now()

	flows := readFlows(t, d)
	if len(flows) != 1 {
		t.Fatalf("got %d flows, want 1", len(flows))
	}
	for _, v := range flows {
		// The coarse clock lags by up to MaxLag.
		within(t, "first seen", off.Wall(v.FirstSeenNs), before.Add(-MaxLag()), after, time.Millisecond)
		within(t, "last seen", off.Wall(v.LastSeenNs), before.Add(-MaxLag()), after, time.Millisecond)
	}
}
