//go:build linux

// Package naivebench holds benchmark-only XDP programs, never loaded by the
// receiver: the naive counting design xdpflow replaces (bpf/naive.c) and
// prefixes of xdpflow's hit path (bpf/floor.c). The benchmarks in
// internal/datapath compare them with xdpflow; see BENCHMARKS.md.
package naivebench

// The generated files (naive_bpfel.*, floor_bpfel.*) are committed like
// internal/datapath's; `make generate` rebuilds them (see the Makefile for
// BPF2GO_CFLAGS).
//go:generate go tool bpf2go -tags linux -target bpfel naive ../../bpf/naive.c -- -I../../bpf -I../../headers -mcpu=v3 -Wall -Werror
//go:generate go tool bpf2go -tags linux -target bpfel -type xdpflow_stat floor ../../bpf/floor.c -- -I../../bpf -I../../headers -mcpu=v3 -Wall -Werror
