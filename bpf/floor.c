// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* floor: benchmark-only programs that do a prefix of xdpflow's hit path,
 * to show where its per-packet cost goes (internal/naivebench,
 * BENCHMARKS.md). Each parses exactly like xdpflow (this file includes
 * bpf/xdpflow.c and calls its parse()) and looks the key up in the same
 * flows map, which the benchmark fills by running xdpflow first:
 *
 *   floor_lookup         parse + hash lookup: the floor of any design that
 *                        keeps one hash-map entry per connection;
 *   floor_lookup_atomic  + two atomic adds (lock-free counting, no
 *                        lossless eviction);
 *   floor_lookup_lock    + bpf_spin_lock, two increments, unlock (no clock,
 *                        no dead flag, no key check);
 *   floor_lookup_lock_clock  + the coarse clock and last_seen: xdpflow's
 *                        hit path as it was when it took the entry's lock
 *                        for every packet, without the dead flag, the key
 *                        check and the retry loop;
 *   floor_small_lookup   parse + lookup of a 12-byte IPv4-only key in a
 *                        table of its own: the cost of the key size;
 *   floor_csum           parse + a one's-complement sum over the frame
 *                        after the Ethernet header: what checking a
 *                        TCP/UDP checksum in XDP would cost, per byte
 *                        (docs/guarantees.md, "What is not checked");
 *   floor_same_key       the same-key floor (issue #13): a minimal IPv4
 *                        parse, not xdpflow's, one lookup of the same
 *                        48-byte key in the same flows map, atomic adds of
 *                        packets and bytes, a store of the coarse clock;
 *   floor_same_key28     the same with the 28-byte key of before the
 *                        grouping, in a table of its own (same value). */

#include "xdpflow.c"

SEC("xdp")
int floor_lookup(struct xdp_md *ctx)
{
	struct flow_key key;
	if (parse_key(ctx, &key) == 0) {
		if (!bpf_map_lookup_elem(&flows, &key))
			stat_add(STAT_OVERFLOW_PACKETS, 1);
	}
	return XDP_PASS;
}

SEC("xdp")
int floor_lookup_atomic(struct xdp_md *ctx)
{
	struct flow_key key;
	if (parse_key(ctx, &key) == 0) {
		struct flow_value *v = bpf_map_lookup_elem(&flows, &key);
		if (v) {
			__sync_fetch_and_add(&v->counters.packets, 1);
			__sync_fetch_and_add(&v->counters.bytes, ctx->data_end - ctx->data);
		}
	}
	return XDP_PASS;
}

SEC("xdp")
int floor_lookup_lock(struct xdp_md *ctx)
{
	struct flow_key key;
	if (parse_key(ctx, &key) == 0) {
		struct flow_value *v = bpf_map_lookup_elem(&flows, &key);
		if (v) {
			__u64 len = ctx->data_end - ctx->data;
			bpf_spin_lock(&v->lock);
			v->counters.packets++;
			v->counters.bytes += len;
			bpf_spin_unlock(&v->lock);
		}
	}
	return XDP_PASS;
}

SEC("xdp")
int floor_lookup_lock_clock(struct xdp_md *ctx)
{
	struct flow_key key;
	if (parse_key(ctx, &key) == 0) {
		__u64 now = bpf_ktime_get_coarse_ns();
		struct flow_value *v = bpf_map_lookup_elem(&flows, &key);
		if (v) {
			__u64 len = ctx->data_end - ctx->data;
			bpf_spin_lock(&v->lock);
			v->counters.packets++;
			v->counters.bytes += len;
			v->counters.last_seen_ns = now;
			bpf_spin_unlock(&v->lock);
		}
	}
	return XDP_PASS;
}

/* small_key is an IPv4-only key: 12 bytes instead of 28. */
struct small_key {
	__u32 saddr;
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct small_key);
	__type(value, struct flow_counters);
	__uint(max_entries, 65536);
} small_flows SEC(".maps");

SEC("xdp")
int floor_small_lookup(struct xdp_md *ctx)
{
	struct flow_key key;
	__builtin_memset(&key, 0, sizeof(key));
	if (parse(ctx, &key) == 0) {
		struct small_key sk = {
			.sport = key.sport,
			.dport = key.dport,
			.ifindex = ctx->ingress_ifindex,
		};
		__builtin_memcpy(&sk.saddr, &key.saddr[12], 4);
		if (!bpf_map_lookup_elem(&small_flows, &sk))
			stat_add(STAT_OVERFLOW_PACKETS, 1);
	}
	return XDP_PASS;
}

/* Frames up to 14 + 6 * 256 + 255 bytes are summed whole. */
/* Frames floor_csum found with a valid sum: its result has to be used. */
__u64 csum_valid = 0;
#define CSUM_CHUNK 256
#define CSUM_MAX_CHUNKS 6

/* csum_fold folds a 32-bit one's-complement sum to 16 bits. */
static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int floor_csum(struct xdp_md *ctx)
{
	struct flow_key key;
	if (parse_key(ctx, &key) != 0)
		return XDP_PASS;
	void *data_end = (void *)(long)ctx->data_end;
	void *p = (void *)(long)ctx->data + sizeof(struct ethhdr);
	__s64 sum = 0;
	/* 256-byte chunks through the kernel's csum_partial, then the
	 * remaining 4-byte words; the last 0-3 bytes are left out. */
	for (int i = 0; i < CSUM_MAX_CHUNKS; i++) {
		if (p + CSUM_CHUNK > data_end)
			break;
		sum = bpf_csum_diff(0, 0, p, CSUM_CHUNK, sum);
		p += CSUM_CHUNK;
	}
	__u64 words = (__u32)sum;
	for (int i = 0; i < CSUM_CHUNK / 4; i++) {
		if (p + 4 > data_end)
			break;
		words += *(__u32 *)p;
		p += 4;
	}
	words = (words & 0xffffffff) + (words >> 32);
	words = (words & 0xffffffff) + (words >> 32);
	if (csum_fold((__u32)words) == 0)
		__sync_fetch_and_add(&csum_valid, 1);
	return XDP_PASS;
}

/* min_parse_ipv4 is the minimal parse of the same-key floors: an
 * untagged IPv4 TCP or UDP frame, its ports where the IHL puts them.
 * Nothing else is checked (no VLAN, no IPv6, no length field, no port
 * filter, no fragment): what xdpflow's parse() adds over it is what the
 * floors leave out. Returns the IPv4 header, or NULL. */
static __always_inline struct iphdr *min_parse_ipv4(struct xdp_md *ctx, __be16 **ports)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return NULL;
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		return NULL;
	__be16 *p = (void *)iph + iph->ihl * 4;
	if ((void *)(p + 2) > data_end)
		return NULL;
	*ports = p;
	return iph;
}

/* count_atomic is the floors' counting: two atomic adds and a plain
 * store of the coarse clock, no lock, no dead flag, no key check. A miss
 * counts as an overflow packet (Misses). */
static __always_inline void count_atomic(struct flow_value *v, __u64 len)
{
	if (!v) {
		stat_add(STAT_OVERFLOW_PACKETS, 1);
		return;
	}
	__sync_fetch_and_add(&v->counters.packets, 1);
	__sync_fetch_and_add(&v->counters.bytes, len);
	v->counters.last_seen_ns = bpf_ktime_get_coarse_ns();
}

/* floor_same_key builds the key xdpflow builds for such a frame with the
 * default options (source address IPv4-mapped, destination zeroed, no
 * prefix), so it finds the entry xdpflow inserted. */
SEC("xdp")
int floor_same_key(struct xdp_md *ctx)
{
	__be16 *ports;
	struct iphdr *iph = min_parse_ipv4(ctx, &ports);
	if (!iph)
		return XDP_PASS;
	struct flow_key key = {
		.saddr[10] = 0xff,
		.saddr[11] = 0xff,
		.ifindex = ctx->ingress_ifindex,
		.sport = bpf_ntohs(ports[0]),
		.dport = bpf_ntohs(ports[1]),
		.proto = iph->protocol,
		.family = XDPFLOW_FAMILY_IPV4,
	};
	__builtin_memcpy(&key.saddr[12], &iph->saddr, 4);
	count_atomic(bpf_map_lookup_elem(&flows, &key), ctx->data_end - ctx->data);
	return XDP_PASS;
}

/* flow_key28 is the key of before the grouping: 28 bytes, no destination
 * address, no prefixes. */
struct flow_key28 {
	__u8 saddr[16];
	__u32 ifindex;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key28);
	__type(value, struct flow_value);
	__uint(max_entries, 65536);
} flows28 SEC(".maps");

SEC("xdp")
int floor_same_key28(struct xdp_md *ctx)
{
	__be16 *ports;
	struct iphdr *iph = min_parse_ipv4(ctx, &ports);
	if (!iph)
		return XDP_PASS;
	struct flow_key28 key = {
		.saddr[10] = 0xff,
		.saddr[11] = 0xff,
		.ifindex = ctx->ingress_ifindex,
		.sport = bpf_ntohs(ports[0]),
		.dport = bpf_ntohs(ports[1]),
		.proto = iph->protocol,
		.family = XDPFLOW_FAMILY_IPV4,
	};
	__builtin_memcpy(&key.saddr[12], &iph->saddr, 4);
	count_atomic(bpf_map_lookup_elem(&flows28, &key), ctx->data_end - ctx->data);
	return XDP_PASS;
}
