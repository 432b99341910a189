// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdpflow_dump: the whole flow table, for a full snapshot.
 *
 * One walk of the flows map of bpf/xdpflow.c (the loader hands this
 * object that map) with bpf_for_each_map_elem, copying every live entry's
 * key and counters to dump_out, an array as large as the table, which the
 * loader then reads through a memory mapping. It replaces a batch lookup
 * (BPF_MAP_LOOKUP_BATCH), which takes each bucket's lock and copies every
 * whole 96-byte value with its key through the system call: ~4x the cost
 * at 1,000,000 entries (BENCHMARKS.md, "Snapshot and conversion"). A
 * map-element iterator (bpf_iter) needs no array but costs ~150 ns an
 * entry in its own machinery, more than the walk and the read together.
 *
 * Its own object, so that the packet program loads where this one cannot
 * (the array does not fit in memory): the loader reads with batch lookups
 * then. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xdpflow.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* The state bit xdpflow_evict sets on an entry it is evicting
 * (STATE_DEAD in bpf/xdpflow.c). */
#define DUMP_STATE_DEAD 0x80000000u

/* The flow table of bpf/xdpflow.c, replaced at load by the loaded one. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
	__uint(max_entries, 1); /* set by the loader */
} flows SEC(".maps");

/* dump_entry is one element of dump_out. */
struct dump_entry {
	struct flow_key key; /* 48 bytes: the counters follow, aligned */
	struct flow_counters counters;
};

/* The entries of one walk, from index 0; memory-mapped by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct dump_entry);
	__uint(max_entries, 1); /* set by the loader: the table's capacity */
} dump_out SEC(".maps");

/* dump_msg is the data of one BPF_PROG_TEST_RUN of xdpflow_dump, filled
 * by the program (at least the 14 bytes of an Ethernet header, which an
 * XDP test run requires). */
struct dump_msg {
	/* Entries written to dump_out, from index 0. */
	__u32 copied;
	/* Entries left out: being evicted (their final counters come from
	 * xdpflow_evict), or beyond dump_out (none while dump_out is as
	 * large as the table). */
	__u32 dead;
	__u32 overflow;
	__u32 pad;
};

static long copy_entry(void *map, const struct flow_key *key, struct flow_value *v, struct dump_msg *msg)
{
	/* Pins and STATE_NEW leave an entry live, with whole counters. */
	if (v->dead & DUMP_STATE_DEAD) {
		msg->dead++;
		return 0;
	}
	__u32 index = msg->copied;
	struct dump_entry *e = bpf_map_lookup_elem(&dump_out, &index);
	if (!e) {
		msg->overflow++;
		return 0;
	}
	/* The value's own copy of the key, equal to the table's key in
	 * every entry (set with the value at insert, never changed): it
	 * lies next to the state and the counters, so the walk touches one
	 * cache line of the element fewer (~10% of its cost at 1,000,000
	 * entries). */
	e->key = v->key;
	e->counters = v->counters;
	msg->copied++;
	return 0;
}

/* xdpflow_dump copies every live entry of flows to dump_out. The loader
 * runs it with BPF_PROG_TEST_RUN on a struct dump_msg; it is never
 * attached to an interface. Counters are read without the entry's lock,
 * as a batch lookup of the table reads them. */
SEC("xdp")
int xdpflow_dump(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct dump_msg *msg = data;
	if ((void *)(msg + 1) > data_end)
		return XDP_ABORTED;
	struct dump_msg m = {};
	bpf_for_each_map_elem(&flows, copy_entry, &m, 0);
	*msg = m;
	return XDP_PASS;
}
