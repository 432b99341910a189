//go:build linux

package xdpflowreceiver

import (
	"golang.org/x/sys/unix"
)

// mapMemory returns n zeroed bytes of anonymous memory outside the Go heap,
// or nil if the kernel refuses them.
func mapMemory(n int) []byte {
	mem, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	return mem
}

// unmapMemory releases what mapMemory returned.
func unmapMemory(mem []byte) { _ = unix.Munmap(mem) }
