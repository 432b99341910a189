package datapath

import (
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
	"golang.org/x/sys/unix"
)

// bootNow reads CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns.
func bootNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		t.Fatalf("read CLOCK_BOOTTIME: %v", err)
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

// TestClockOffsetWall checks that a boot-time timestamp read now converts
// to the current wall-clock time.
func TestClockOffsetWall(t *testing.T) {
	off, err := MeasureClockOffset()
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	boot := bootNow(t)
	after := time.Now()
	within(t, "Wall(CLOCK_BOOTTIME now)", off.Wall(boot), before, after, 2*time.Millisecond)
}

// TestClockOffsetInverse checks that Wall and BootNs are inverses.
func TestClockOffsetInverse(t *testing.T) {
	off, err := MeasureClockOffset()
	if err != nil {
		t.Fatal(err)
	}
	boot := bootNow(t)
	for _, ns := range []uint64{boot, boot - 1, boot + 123456789, 1, uint64(time.Hour)} {
		if got := off.BootNs(off.Wall(ns)); got != ns {
			t.Errorf("BootNs(Wall(%d)) = %d", ns, got)
		}
	}
	for _, wall := range []time.Time{time.Now(), time.Unix(1700000000, 999999999), time.Now().Add(-time.Minute)} {
		if got := off.Wall(off.BootNs(wall)); !got.Equal(wall) {
			t.Errorf("Wall(BootNs(%v)) = %v", wall, got)
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
		within(t, "first seen", off.Wall(v.FirstSeenNs), before, after, time.Millisecond)
		within(t, "last seen", off.Wall(v.LastSeenNs), before, after, time.Millisecond)
	}
}
