package datapath

// The generated files (xdpflow_bpfel.go, xdpflow_bpfel.o) are committed so
// that users build without clang. Regenerate them with `make generate`,
// which also passes bpf2go the multiarch include directory in
// BPF2GO_CFLAGS (see the Makefile).
//go:generate go tool bpf2go -tags linux -target bpfel -type flow_key -type flow_value -type flow_counters -type evict_msg -type trigger_event -type xdpflow_stat -type cidr_key -type cidr_value -type changed_entry -type dirty_msg xdpflow ../../bpf/xdpflow.c -- -I../../headers -mcpu=v3 -Wall -Werror
