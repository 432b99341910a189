//go:build !linux

package datapath

import (
	"errors"
	"time"
)

// MeasureClockOffset fails: the program's clock exists on Linux only.
func MeasureClockOffset() (ClockOffset, error) {
	return ClockOffset{}, errors.New("read the kernel clock: needs Linux")
}

// MaxLag is 0: there is no program clock off Linux.
func MaxLag() time.Duration { return 0 }
