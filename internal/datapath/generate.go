package datapath

// The generated files (xdpflow_bpfel.go, xdpflow_bpfel.o) are committed so
// that users build without clang. Regenerate them with `make generate`.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target bpfel -type flow_key -type flow_value -type flow_counters -type evict_msg -type trigger_event -type xdpflow_stat xdpflow ../../bpf/xdpflow.c -- -I../../headers -I/usr/include/x86_64-linux-gnu -mcpu=v3 -Wall -Werror
