package datapath

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ClockOffset converts the program's timestamps (bpf_ktime_get_boot_ns,
// CLOCK_BOOTTIME) to wall-clock time. Measure a new one for every snapshot:
// the wall clock can be stepped (NTP, settimeofday) while boot time cannot.
type ClockOffset struct {
	// bootToUnix is added to a boot-time nanosecond value to get Unix ns.
	bootToUnix int64
}

// MeasureClockOffset reads CLOCK_BOOTTIME between two CLOCK_REALTIME reads
// and pairs it with their midpoint, which bounds the error by half the
// time the three reads took (well under a microsecond).
func MeasureClockOffset() (ClockOffset, error) {
	var before, boot, after unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &before); err != nil {
		return ClockOffset{}, fmt.Errorf("read CLOCK_REALTIME: %w", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return ClockOffset{}, fmt.Errorf("read CLOCK_BOOTTIME: %w", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &after); err != nil {
		return ClockOffset{}, fmt.Errorf("read CLOCK_REALTIME: %w", err)
	}
	mid := before.Nano() + (after.Nano()-before.Nano())/2
	return ClockOffset{bootToUnix: mid - boot.Nano()}, nil
}

// Wall returns the wall-clock time of a boot-time nanosecond timestamp.
func (c ClockOffset) Wall(bootNs uint64) time.Time {
	return time.Unix(0, int64(bootNs)+c.bootToUnix)
}

// BootNs returns the boot-time nanosecond timestamp of a wall-clock time;
// the inverse of Wall.
func (c ClockOffset) BootNs(t time.Time) uint64 {
	return uint64(t.UnixNano() - c.bootToUnix)
}

// Sub returns how far the wall clock of c is ahead of that of o: non-zero
// beyond measurement noise only when the wall clock was stepped between
// the two measurements.
func (c ClockOffset) Sub(o ClockOffset) time.Duration {
	return time.Duration(c.bootToUnix - o.bootToUnix)
}

// NewClockOffset returns the offset that maps the boot-time timestamp
// bootNs to wall, e.g. for tests that need fixed timestamps.
func NewClockOffset(wall time.Time, bootNs uint64) ClockOffset {
	return ClockOffset{bootToUnix: wall.UnixNano() - int64(bootNs)}
}
