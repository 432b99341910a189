//go:build linux

package datapath

import "unsafe"

// Structs that cross the kernel boundary as bytes (BPF_PROG_TEST_RUN data,
// ring buffer records) are read and written through the types bpf2go
// generates from the program's BTF (xdpflow_bpfel.go). Those carry
// structs.HostLayout, so their memory is the C struct's: no offset is
// written by hand.

// bytesOf returns the memory of *v, a bpf2go-generated struct, as bytes.
func bytesOf[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// kernelKey returns k as the generated struct flow_key.
func kernelKey(k FlowKey) xdpflowFlowKey {
	return xdpflowFlowKey{
		Saddr:     k.SrcAddr,
		Daddr:     k.DstAddr,
		Ifindex:   k.Ifindex,
		Sport:     k.SrcPort,
		Dport:     k.DstPort,
		Proto:     uint8(k.Proto),
		Family:    k.Family,
		Sprefix:   k.SrcPrefix,
		Dprefix:   k.DstPrefix,
		Direction: uint8(k.Direction),
	}
}

// flowKeyOf returns the generated struct flow_key as a FlowKey.
func flowKeyOf(k *xdpflowFlowKey) FlowKey {
	return FlowKey{
		SrcAddr: k.Saddr, DstAddr: k.Daddr, Ifindex: k.Ifindex, SrcPort: k.Sport, DstPort: k.Dport,
		Proto: Protocol(k.Proto), Family: k.Family, SrcPrefix: k.Sprefix, DstPrefix: k.Dprefix,
		Direction: Direction(k.Direction),
	}
}
