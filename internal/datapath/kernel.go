//go:build linux

package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// MinKernel is the oldest Linux release the kernel matrix passes
// (CONTRIBUTING.md, "Kernel matrix").
const MinKernel = "6.1"

// kernelFeature is a BPF feature the programs need, with the release
// that brought it.
type kernelFeature struct {
	name  string
	since string
	probe func() error // nil, or an error wrapping ebpf.ErrNotSupported
}

// requiredFeatures are probed in the order of the releases that brought
// them, so that a refusal names the oldest feature missing.
var requiredFeatures = []kernelFeature{
	{"BPF ring buffers", "5.8", func() error { return features.HaveMapType(ebpf.RingBuf) }},
	{"the bpf_ktime_get_coarse_ns helper", "5.11", func() error {
		return features.HaveProgramHelper(ebpf.XDP, asm.FnKtimeGetCoarseNs)
	}},
	{"BPF atomic compare-and-exchange", "5.12", haveAtomicCmpXchg},
	{"the bpf_for_each_map_elem helper", "5.13", func() error {
		return features.HaveProgramHelper(ebpf.XDP, asm.FnForEachMapElem)
	}},
}

// checkKernel refuses, in one line, a kernel that lacks a feature the
// programs need, rather than let the verifier refuse them with its log.
// A probe that fails for another reason (privileges) is left to the load
// to report.
func checkKernel() error {
	return checkFeatures(requiredFeatures, kernelRelease())
}

func checkFeatures(required []kernelFeature, release string) error {
	for _, f := range required {
		if err := f.probe(); errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("xdpflow needs Linux %s or newer: this kernel (Linux %s) lacks %s, which came in Linux %s",
				MinKernel, release, f.name, f.since)
		}
	}
	return nil
}

// haveAtomicCmpXchg loads a program that compare-and-swaps a stack slot:
// kernels before 5.12 know only BPF_ADD among the atomic operations.
func haveAtomicCmpXchg() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -8, 0, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Mov.Imm(asm.R1, 1),
			asm.CmpXchg.Mem(asm.RFP, asm.R1, asm.DWord, -8),
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
	})
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return fmt.Errorf("atomic compare-and-exchange: %w (%v)", ebpf.ErrNotSupported, err)
	}
	if err != nil {
		return err
	}
	return prog.Close()
}
