package datapath

import "time"

// ClockOffset converts the program's timestamps to wall-clock time. The
// program stamps packets with bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC_COARSE:
// CLOCK_MONOTONIC as of the last tick), so a converted timestamp is up to
// MaxLag() earlier than the packet, never later. Measure a new offset for every
// snapshot: the wall clock can be stepped (NTP, settimeofday) while the
// monotonic clock cannot.
type ClockOffset struct {
	// monoToUnix is added to a monotonic nanosecond value to get Unix ns.
	monoToUnix int64
}

// NewClockOffset returns the offset that maps the kernel timestamp
// kernelNs to wall, e.g. for tests that need fixed timestamps.
func NewClockOffset(wall time.Time, kernelNs uint64) ClockOffset {
	return ClockOffset{monoToUnix: wall.UnixNano() - int64(kernelNs)}
}

// Wall returns the wall-clock time of a kernel timestamp.
func (c ClockOffset) Wall(kernelNs uint64) time.Time {
	return time.Unix(0, int64(kernelNs)+c.monoToUnix)
}

// KernelNs returns the kernel timestamp of a wall-clock time; the inverse
// of Wall.
func (c ClockOffset) KernelNs(t time.Time) uint64 {
	return uint64(t.UnixNano() - c.monoToUnix)
}

// Sub returns how far the wall clock of c is ahead of that of o: non-zero
// beyond measurement noise only when the wall clock was stepped between
// the two measurements.
func (c ClockOffset) Sub(o ClockOffset) time.Duration {
	return time.Duration(c.monoToUnix - o.monoToUnix)
}
