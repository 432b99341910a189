//go:build !linux

package xdpflowreceiver

// mapMemory returns nil off Linux: mappedSlice uses the Go heap.
func mapMemory(int) []byte { return nil }

func unmapMemory([]byte) {}
