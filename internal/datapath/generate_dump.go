package datapath

// The full-table walk (bpf/dump.c) is an object of its own, so that the
// packet program loads where the walk's array does not fit.
//go:generate go tool bpf2go -tags linux -target bpfel -type dump_entry -type dump_msg xdpflowDump ../../bpf/dump.c -- -I../../headers -mcpu=v3 -Wall -Werror
