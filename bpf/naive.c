// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* naive: the per-connection counting design xdpflow replaces, kept only as
 * a benchmark baseline (internal/naivebench, BENCHMARKS.md). Never load it
 * in production: it prints on every packet and loses counts under races.
 *
 * It parses packets exactly like xdpflow (it includes bpf/xdpflow.c and
 * calls its parse()), so that a comparison measures the counting design
 * only. What makes it naive:
 *   - bpf_printk on every packet (a write to the kernel trace buffer);
 *   - bpf_map_lookup_elem, then on a miss bpf_map_update_elem(BPF_ANY) with
 *     a new value (two CPUs missing together overwrite each other's count),
 *     else a non-atomic increment in place (concurrent CPUs lose updates);
 *   - a global new-connection counter incremented with __sync_fetch_and_add
 *     and then RE-READ for the every-5 check (two CPUs can both see a
 *     multiple of 5, or neither);
 *   - a hard-coded destination port, 8080. */

#include "xdpflow.c"

/* naive_value is the naive table's value: two plain counters. */
struct naive_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct naive_value);
	__uint(max_entries, 65536);
} naive_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} naive_events SEC(".maps");

__u64 naive_new_connections = 0;

SEC("xdp")
int naive(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;

	bpf_printk("naive: packet of %llu bytes", len);

	struct flow_key key;
	if (parse_key(ctx, &key) != 0 || key.dport != 8080)
		return XDP_PASS;

	struct naive_value *v = bpf_map_lookup_elem(&naive_flows, &key);
	if (!v) {
		struct naive_value init = { .packets = 1, .bytes = len };
		bpf_map_update_elem(&naive_flows, &key, &init, BPF_ANY);
		__sync_fetch_and_add(&naive_new_connections, 1);
		if (naive_new_connections % 5 == 0) {
			struct trigger_event ev = {
				.ktime_ns = bpf_ktime_get_ns(),
				.new_connections = naive_new_connections,
			};
			bpf_ringbuf_output(&naive_events, &ev, sizeof(ev), 0);
		}
		return XDP_PASS;
	}
	v->packets++;
	v->bytes += len;
	return XDP_PASS;
}
