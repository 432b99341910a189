//go:build !linux

package datapath

import "errors"

// MeasureClockOffset fails: the program's clock exists on Linux only.
func MeasureClockOffset() (ClockOffset, error) {
	return ClockOffset{}, errors.New("read the kernel clock: needs Linux")
}
