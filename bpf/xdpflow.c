// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdpflow: count packets and bytes per connection arriving at this host
 * (the XDP program xdpflow) and, where the loader attaches it, leaving it
 * (the TC egress program xdpflow_egress).
 *
 * Neither program drops or alters a packet: every path returns XDP_PASS
 * or TC_ACT_UNSPEC. Counting happens only for well-formed IPv4/IPv6
 * TCP/UDP packets whose transport and local port pass the load-time
 * filters. Both count into one flow table, the direction in the key. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "xdpflow.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#ifndef EEXIST
#define EEXIST 17
#endif
#ifndef E2BIG
#define E2BIG 7
#endif

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define IP_MF_ 0x2000
#define IP_OFFSET_MASK 0x1fff
#define IP6_MF_ 0x0001
#define IP6_OFFSET_MASK 0xfff8
#define VLAN_HLEN_ 4
/* Bound on the length a transmitted skb is parsed with: the verifier
 * accepts packet pointer arithmetic only with a bounded offset. Longer
 * skbs (BIG TCP) carry an IP length of 0 and are not counted anyway. */
#define MAX_SKB_LEN 0xfffff
/* IPv6 extension headers walked before giving up (not counted). */
#define MAX_IPV6_EXT_HEADERS 8
/* Lookups of a key that is being evicted (or published) before the packet
 * is counted as overflow. An eviction deletes the entry within a few
 * hundred ns of marking it dead, so the retries nearly always find the key
 * gone. */
#define MAX_COUNT_ATTEMPTS 32

/* The state word of an entry, flow_value.dead (see "Lossless eviction"). */
#define STATE_DEAD 0x80000000u /* being evicted: no packet starts adding */
#define STATE_NEW 0x40000000u  /* inserted, not yet published */
#define STATE_PINS 0x3fffffffu /* packets adding without the entry's lock */
#define STATE_NOT_LIVE (STATE_DEAD | STATE_NEW)
/* Compare-and-swaps xdpflow_evict tries to mark an entry dead while packets
 * take and release pins, and reads of the state it makes waiting for the
 * pins taken before to be released (a few µs). An idle connection needs
 * one of each. */
#define MAX_MARK_ATTEMPTS 64
#define MAX_RELEASE_READS 4096
/* Epochs an append to a changed list follows, and compare-and-swaps of an
 * entry's epoch a packet tries, before it gives up and sets
 * changed_overflow (see "Changed entries"): one epoch lasts a snapshot,
 * and only the packets of one entry race for its mark. */
#define MAX_APPEND_ATTEMPTS 4

/* Load-time settings, set by the loader through spec.Variables. */
/* Local port set as a 65536-bit bitmap (a received packet's destination
 * port, a transmitted one's source port); ignored when all_ports. */
volatile const __u64 port_bitmap[1024];
volatile const __u8 all_ports = 1;
volatile const __u8 count_tcp = 1;
volatile const __u8 count_udp = 1;
/* A trigger event is sent every new_conns_per_event new connections. */
volatile const __u64 new_conns_per_event = 5;

/* Dimensions: the key fields a series keeps; the others are zeroed, so
 * that connections agreeing on the kept fields are one entry. Set by the
 * loader, they are constants the verifier prunes the other branches of. */
volatile const __u8 keep_saddr = 1;
volatile const __u8 keep_sport = 1;
volatile const __u8 keep_daddr = 0;
volatile const __u8 keep_dport = 1;
volatile const __u8 keep_proto = 1;
volatile const __u8 keep_ifindex = 1;
/* Prefix lengths kept addresses are truncated to, by family (0: whole),
 * with their masks over the 16-byte address. */
volatile const __u8 saddr_prefix4 = 0;
volatile const __u8 saddr_prefix6 = 0;
volatile const __u8 daddr_prefix4 = 0;
volatile const __u8 daddr_prefix6 = 0;
volatile const __u32 saddr_mask4[4];
volatile const __u32 saddr_mask6[4];
volatile const __u32 daddr_mask4[4];
volatile const __u32 daddr_mask6[4];
/* Whether the named CIDRs of the cidrs map replace source and destination
 * addresses, and whether an address outside all of them becomes one
 * "other" series (else it keeps its address, truncated as above). */
volatile const __u8 cidr_saddr = 0;
volatile const __u8 cidr_daddr = 0;
volatile const __u8 cidr_other = 0;
/* List the entries packets change, for xdpflow_dirty (see "Changed
 * entries"); changed_capacity is the size of each list. */
volatile const __u8 track_changes = 0;
volatile const __u32 changed_capacity = 1;

/* The current epoch, started by xdpflow_dirty; the loader sets it to the
 * monotonic clock (bpf_ktime_get_ns) at load, so that it exceeds every
 * epoch an earlier process left in a pinned table. Alone in .data: every
 * packet reads it, and no packet writes it. */
__u64 epoch = 1;
/* Per changed list (the parity of the epoch it belongs to): packets
 * appending now, and keys appended. Set: a change is missing from a list. */
__u32 changed_writers[2] __attribute__((aligned(64)));
__u32 changed_count[2];
__u32 changed_overflow;

/* Connections inserted since load; the every-N trigger is derived from the
 * value returned by the atomic add, never from a re-read. */
__u64 new_connections = 0;

/* Evictions since load, counted after each delete; and evictions + 1 as it
 * was when an insert last found the table full (0: never full). The table
 * frees entries only through xdpflow_evict, so while full_mark equals
 * evictions + 1 it is still full: a new connection then goes straight to
 * overflow instead of failing a costly insert under the bucket lock (a SYN
 * flood into a full table costs about half as much per packet). An insert
 * that failed just before an eviction stored an older generation, which
 * no longer matches, so a freed entry is used again at once. */
__u64 evictions = 0;
__u64 full_mark = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
	__uint(max_entries, 65536); /* set by the loader */
} flows SEC(".maps");

/* The entries xdpflow_dirty copies out, read by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct changed_entry);
	__uint(max_entries, 1); /* set by the loader */
} changed_out SEC(".maps");

/* The changed lists of the two epochs, interleaved: slot 2i + l is entry
 * i of list l (the parity of its epoch). Keys are appended by packets and
 * read by xdpflow_dirty. One map, so that every helper call site sees one
 * map: Linux 6.1's verifier refuses a call site that sees two. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flow_key);
	__uint(max_entries, 2); /* set by the loader: 2 * changed_capacity */
} changed_keys SEC(".maps");

/* Named CIDRs, filled by the loader before the program is attached. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct cidr_key);
	__type(value, struct cidr_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1); /* set by the loader */
} cidrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
} stats SEC(".maps");

/* 256 KiB: about 10,000 events of 24 bytes, enough for the events of a
 * burst to queue while the reader leaves the ring alone (EventReadGap). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Force the generation of BTF for types the loader needs. */
const struct trigger_event *unused_trigger_event __attribute__((unused));
const enum xdpflow_stat *unused_stat __attribute__((unused));
const struct evict_msg *unused_evict_msg __attribute__((unused));
const struct cidr_key *unused_cidr_key __attribute__((unused));
const struct cidr_value *unused_cidr_value __attribute__((unused));
const struct dirty_msg *unused_dirty_msg __attribute__((unused));

static __always_inline void stat_add(__u32 index, __u64 delta)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &index);
	if (v)
		__sync_fetch_and_add(v, delta);
}

static __always_inline int port_counted(__u16 port)
{
	if (all_ports)
		return 1;
	return (port_bitmap[(port >> 6) & 1023] >> (port & 63)) & 1;
}

static __always_inline int proto_counted(__u8 proto)
{
	return (proto == IPPROTO_TCP && count_tcp) || (proto == IPPROTO_UDP && count_udp);
}

/* be16_len reads a big-endian length field as a value the verifier knows
 * to be at most 0xffff: the verifiers of Linux 6.1 and 6.12 do not bound a
 * byte swap's result, and a length added to a packet pointer must be
 * bounded. The barrier keeps clang from dropping the mask it knows to be
 * redundant. */
static __always_inline __u32 be16_len(__be16 field)
{
	__u32 v = bpf_ntohs(field);
	barrier_var(v);
	return v & 0xffff;
}

/* Results of the parse functions: negative means "not counted". */
#define PARSED_PORTS 0
/* A non-first fragment carries no transport header: it is counted with
 * both ports 0, whatever the port filter, so its bytes are not lost. */
#define PARSED_FRAGMENT 1

/* Length checks. A packet is counted only if the kernel's receive path
 * would keep it on length grounds (ip_rcv, ipv6_rcv, tcp_v4_rcv,
 * __udp4_lib_rcv, __udp6_lib_rcv). ip_end is the end of the IP packet as
 * its header states it, never past data_end: bytes after it are link-layer
 * padding (a minimum Ethernet frame carrying a short packet), counted in
 * the frame's bytes but not parsed, and every header the program parses
 * must end by ip_end. Checksums, addresses and sockets are not checked
 * (docs/guarantees.md says why). */

/* The transport payload is whole (not a fragment, or an IPv6 atomic
 * fragment), or this is a first fragment: the transport header is here,
 * but the UDP length counts the whole datagram. */
#define WHOLE 1
#define FIRST_FRAGMENT 0

/* set_ports stores a packet's ports in key: a received packet's source
 * port is the remote one, a transmitted packet's is the local one (see
 * struct flow_key). dir is a constant, folded away. */
static __always_inline void set_ports(struct flow_key *key, int dir, __be16 source, __be16 dest)
{
	if (dir == XDPFLOW_DIR_TRANSMIT) {
		key->sport = bpf_ntohs(dest);
		key->dport = bpf_ntohs(source);
	} else {
		key->sport = bpf_ntohs(source);
		key->dport = bpf_ntohs(dest);
	}
}

/* parse_ports reads the ports of a TCP or UDP header at l4 into key.
 * Returns PARSED_PORTS when the header is valid and ends by ip_end: TCP
 * with a data offset of at least 5 words and its options within this
 * packet (a first fragment must hold the whole TCP header); UDP with a
 * length of at least 8 that, for a whole packet, ends by ip_end. An IPv6
 * UDP length of 0 means "the rest of the payload": the kernel reads it so
 * (the RFC 2675 jumbogram rule, applied at any size). *hdr_end is set to
 * the end of the transport header: the headers a GSO packet repeats in
 * each segment end there. */
static __always_inline int parse_ports(void *l4, void *ip_end, void *data_end, struct flow_key *key, int whole,
				       int dir, void **hdr_end)
{
	if (key->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > data_end)
			return -1;
		if (th->doff < 5 || l4 + th->doff * 4 > ip_end)
			return -1;
		set_ports(key, dir, th->source, th->dest);
		*hdr_end = l4 + th->doff * 4;
		return PARSED_PORTS;
	}
	struct udphdr *uh = l4;
	if ((void *)(uh + 1) > data_end || (void *)(uh + 1) > ip_end)
		return -1;
	__u32 ulen = be16_len(uh->len);
	if (ulen < sizeof(*uh)) {
		if (ulen != 0 || key->family != XDPFLOW_FAMILY_IPV6)
			return -1;
	} else if (whole && l4 + ulen > ip_end) {
		return -1;
	}
	set_ports(key, dir, uh->source, uh->dest);
	*hdr_end = uh + 1;
	return PARSED_PORTS;
}

/* set_addrs stores a packet's addresses (n bytes each) at offset off of
 * key's: a received packet's source is the remote side, a transmitted
 * packet's the local one (see struct flow_key). */
static __always_inline void set_addrs(struct flow_key *key, int dir, int off, const void *source, const void *dest,
				      int n)
{
	if (dir == XDPFLOW_DIR_TRANSMIT) {
		__builtin_memcpy(&key->saddr[off], dest, n);
		__builtin_memcpy(&key->daddr[off], source, n);
	} else {
		__builtin_memcpy(&key->saddr[off], source, n);
		__builtin_memcpy(&key->daddr[off], dest, n);
	}
}

/* parse_ipv4 checks what ip_rcv checks of the header's lengths: IHL at
 * least 5, a total length of at least the header, within the packet
 * (pkt_end: see parse). */
static __always_inline int parse_ipv4(void *l3, void *data_end, void *pkt_end, int dir, struct flow_key *key,
				      void **hdr_end)
{
	struct iphdr *iph = l3;
	if ((void *)(iph + 1) > data_end)
		return -1;
	if (iph->version != 4 || iph->ihl < 5)
		return -1;
	__u32 hdr_len = iph->ihl * 4;
	__u32 tot_len = be16_len(iph->tot_len);
	void *ip_end = l3 + tot_len;
	if (tot_len < hdr_len || ip_end > pkt_end)
		return -1;
	key->proto = iph->protocol;
	if (!proto_counted(key->proto))
		return -1;
	key->family = XDPFLOW_FAMILY_IPV4;
	key->saddr[10] = 0xff;
	key->saddr[11] = 0xff;
	key->daddr[10] = 0xff;
	key->daddr[11] = 0xff;
	set_addrs(key, dir, 12, &iph->saddr, &iph->daddr, 4);
	__u16 frag = bpf_ntohs(iph->frag_off);
	if (frag & IP_OFFSET_MASK)
		return PARSED_FRAGMENT;
	return parse_ports(l3 + hdr_len, ip_end, data_end, key, frag & IP_MF_ ? FIRST_FRAGMENT : WHOLE, dir,
			   hdr_end);
}

/* parse_ipv6 checks what ipv6_rcv checks of the payload length: the
 * packet ends within the frame (pkt_end: see parse). A payload length of
 * 0 announces a jumbogram (RFC 2675: above 65535 bytes, its length in a
 * hop-by-hop option; or a BIG TCP packet on transmit), which no standard
 * frame holds: it is not counted, as nothing the program parses ends
 * within a payload of 0 bytes. */
static __always_inline int parse_ipv6(void *l3, void *data_end, void *pkt_end, int dir, struct flow_key *key,
				      void **hdr_end)
{
	struct ipv6hdr *ip6h = l3;
	if ((void *)(ip6h + 1) > data_end)
		return -1;
	if (ip6h->version != 6)
		return -1;
	void *ip_end = (void *)(ip6h + 1) + be16_len(ip6h->payload_len);
	if (ip_end > pkt_end)
		return -1;
	set_addrs(key, dir, 0, &ip6h->saddr, &ip6h->daddr, 16);
	key->family = XDPFLOW_FAMILY_IPV6;

	void *cursor = ip6h + 1;
	__u8 nexthdr = ip6h->nexthdr;
	int whole = WHOLE;
#pragma unroll
	/* One more pass than extension headers: the last finds the transport. */
	for (int i = 0; i < MAX_IPV6_EXT_HEADERS + 1; i++) {
		switch (nexthdr) {
		case IPPROTO_TCP:
		case IPPROTO_UDP:
			key->proto = nexthdr;
			if (!proto_counted(nexthdr))
				return -1;
			return parse_ports(cursor, ip_end, data_end, key, whole, dir, hdr_end);
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS: {
			struct ipv6_opt_hdr *opt = cursor;
			if ((void *)(opt + 1) > data_end)
				return -1;
			nexthdr = opt->nexthdr;
			cursor += (opt->hdrlen + 1) * 8;
			break;
		}
		case IPPROTO_AH: {
			struct ipv6_opt_hdr *opt = cursor;
			if ((void *)(opt + 1) > data_end)
				return -1;
			nexthdr = opt->nexthdr;
			cursor += (opt->hdrlen + 2) * 4;
			break;
		}
		case IPPROTO_FRAGMENT: {
			struct frag_hdr {
				__u8 nexthdr;
				__u8 reserved;
				__be16 frag_off;
				__be32 identification;
			} *fh = cursor;
			if ((void *)(fh + 1) > data_end)
				return -1;
			nexthdr = fh->nexthdr;
			cursor = fh + 1;
			__u16 frag = bpf_ntohs(fh->frag_off);
			if (frag & IP6_OFFSET_MASK) {
				key->proto = nexthdr;
				if (!proto_counted(nexthdr) || cursor > ip_end)
					return -1;
				return PARSED_FRAGMENT;
			}
			if (frag & IP6_MF_)
				whole = FIRST_FRAGMENT;
			break;
		}
		default:
			return -1;
		}
	}
	return -1; /* too many extension headers */
}

/* parse_packet fills key from the frame at data, read up to data_end, for a
 * packet of direction dir. pkt_end is where the packet ends, for the
 * length checks: data_end for XDP, past it for an skb whose data is not
 * all in its linear part (a GSO packet's payload is in pages). Returns 0
 * when the packet is counted; then *hdr_end is the end of the transport
 * header, unless the packet is a non-first fragment. */
static __always_inline int parse_packet(void *data, void *data_end, void *pkt_end, int dir, struct flow_key *key,
					void **hdr_end)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	void *cursor = eth + 1;
	__u16 proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		struct vlan_hdr {
			__be16 tci;
			__be16 encapsulated_proto;
		} *vh = cursor;
		if ((void *)(vh + 1) > data_end)
			return -1;
		proto = vh->encapsulated_proto;
		cursor = vh + 1;
	}

	int res;
	if (proto == bpf_htons(ETH_P_IP))
		res = parse_ipv4(cursor, data_end, pkt_end, dir, key, hdr_end);
	else if (proto == bpf_htons(ETH_P_IPV6))
		res = parse_ipv6(cursor, data_end, pkt_end, dir, key, hdr_end);
	else
		return -1;
	if (res == PARSED_FRAGMENT)
		return 0;
	if (res != PARSED_PORTS || !port_counted(key->dport))
		return -1;
	return 0;
}

static __always_inline void send_trigger(__u64 now, __u64 total)
{
	struct trigger_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		stat_add(STAT_RINGBUF_DROPS, 1);
		return;
	}
	ev->ktime_ns = now;
	ev->new_connections = total;
	bpf_ringbuf_submit(ev, 0);
	stat_add(STAT_EVENTS, 1);
}

static __always_inline void on_new_connection(__u64 now)
{
	__u64 total = __sync_fetch_and_add(&new_connections, 1) + 1;
	__u64 every = new_conns_per_event;
	if (every && total % every == 0)
		send_trigger(now, total);
}

/* Lossless eviction
 *
 * The receiver evicts an idle connection by running xdpflow_evict on its
 * key (Datapath.Evict) and exports the final counters that run returns,
 * not a value read before. Every packet of the connection is then in
 * exactly one exported value, or in the overflow counters.
 *
 * An entry's state word (flow_value.dead) says whether it is live, being
 * evicted (STATE_DEAD) or not yet published (STATE_NEW), and how many
 * packets are adding to its counters without its lock (pins). It changes
 * only by atomic operations in their fetch forms, which are fully ordered.
 *
 * - A packet adds to the counters only while it holds a pin or the
 *   entry's lock. It takes a pin by a compare-and-swap from a live state,
 *   and releases it after its adds; a packet that loses that race twice
 *   (other CPUs pinning the same entry) takes the lock instead and adds
 *   only if the state it reads under the lock is live. Taking a pin is a
 *   few ns; the lock, a pair of helper calls, costs ~40 ns of a ~120 ns
 *   hit path where returns are expensive (BENCHMARKS.md, "The hit path
 *   against the same-key floor").
 * - xdpflow_evict, holding the lock (so no packet adds under it), marks
 *   the entry dead by a compare-and-swap, waits until the pins taken
 *   before are released, then reads the final counters and deletes the
 *   entry: a packet counted before is in the final counters, a packet
 *   after does not touch the entry. If the pins are not released within
 *   MAX_RELEASE_READS reads (a CPU interrupted while holding one), it
 *   clears the mark and evicts nothing: the entry stays live, and a later
 *   snapshot evicts it.
 * - A packet that finds the entry dead looks the key up again until the
 *   delete that follows has run, then inserts a new entry: a new series,
 *   with a new first-seen time. Nobody can insert the key between the mark
 *   and the delete (the dead entry holds it, so BPF_NOEXIST fails with
 *   EEXIST), so the delete removes exactly the dead entry.
 * - A packet that looked the entry up before the delete may reach add()
 *   after it, when the freed entry may be reused for another key: the
 *   kernel hands a deleted entry to the next insert at once, which copies
 *   its value over it without taking its lock. The state stays dead until
 *   that copy writes STATE_NEW, which the inserting packet clears only
 *   after the insert has returned (publish()), so a packet finds a live
 *   state only in a whole value; add() then compares the entry's own copy
 *   of the key and skips it.
 * - A packet that still finds the entry dead (or new) after
 *   MAX_COUNT_ATTEMPTS lookups (an eviction stalled between its mark and
 *   its delete) goes to the overflow counters: counted, not attributed to
 *   a connection.
 *
 * BPF_MAP_LOOKUP_AND_DELETE_ELEM from user space would not do: a packet
 * that looked the entry up just before the deletion would add to it just
 * after the copy, and be lost (or, once the entry is reused, be counted
 * for another connection). TestEvictRacingPackets holds the program to
 * this; docs/guarantees.md and the Go code point here. */

static __always_inline int same_key(const struct flow_key *a, const struct flow_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	__u32 diff = 0;
#pragma unroll
	for (int i = 0; i < sizeof(struct flow_key) / 4; i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

/* state_read returns v's state, fully ordered: what is read after it was
 * written before the state it returns. An atomic OR of 0, as a plain load
 * is not ordered on every architecture (arm64). */
static __always_inline __u32 state_read(struct flow_value *v)
{
	return __sync_fetch_and_or(&v->dead, 0);
}

/* state_add and state_clear change v's state, fully ordered: clang emits
 * the fetch form, the ordered one, only for a result that is used. */
static __always_inline void state_add(struct flow_value *v, __u32 delta)
{
	__u32 old = __sync_fetch_and_add(&v->dead, delta);
	barrier_var(old);
}

static __always_inline void state_clear(struct flow_value *v, __u32 bits)
{
	__u32 old = __sync_fetch_and_and(&v->dead, ~bits);
	barrier_var(old);
}

/* count_in adds a packet (packets on the wire, len bytes) to v's
 * counters. Its caller holds a pin or the lock, and other CPUs may hold
 * pins too: hence atomic adds. */
static __always_inline void count_in(struct flow_value *v, __u64 packets, __u64 len, __u64 now)
{
	__sync_fetch_and_add(&v->counters.packets, packets);
	__sync_fetch_and_add(&v->counters.bytes, len);
	v->counters.last_seen_ns = now;
}

/* Changed entries
 *
 * With export_changed_only (track_changes), a snapshot reads the counters
 * of the entries packets changed since the last one, not the table: the
 * receiver keeps what it read last of every entry, so an entry no packet
 * changed is what it read last, exactly. The entries changed are listed
 * at packet time, once per epoch each; xdpflow_dirty, run by each
 * snapshot, starts a new epoch and copies out the counters of the entries
 * listed in the epoch it ended. A change is never missed:
 *
 * - A packet, holding its pin or the lock (so that the entry holds its
 *   key and is not evicted), adds to the counters and then reads the
 *   entry's epoch with a fetch form (fully ordered: the adds before it,
 *   the read of the current epoch after it). While the entry's epoch is
 *   older than the current one it read, it compare-and-swaps it to that
 *   one (again from what it finds, if another packet marked the entry
 *   meanwhile); if its swap succeeds, it appends the key to the current
 *   epoch's list once it has released the pin or lock (mark_changed,
 *   append_changed). It leaves the entry alone when it finds the epoch
 *   it read or a later one: the packet that swapped that one in had read
 *   it, so appends to its list or a later one. An inserted entry does the
 *   same before publish(), while nobody else adds to it.
 * - An append (1) adds 1 to its list's writers, (2) reads the epoch again
 *   and, if it is still the one it marked, (3) appends and (4) takes the
 *   1 away, each step an atomic of the fetch form, so fully ordered. If
 *   the epoch has moved on, it takes the 1 away and appends to the new
 *   epoch's list instead.
 * - xdpflow_dirty (1) exchanges the epoch for the next, (2) waits until
 *   the ended epoch's list has no writers, (3) copies out the counters of
 *   the keys listed: an append is either seen as a writer at (2), and
 *   waited for, or it reads the new epoch at its step 2 and goes to the
 *   next list; reads of (3) come after (1).
 * - So every packet's adds are read: a packet that read epoch g made, or
 *   found made (by the swap of another packet of the same entry, its
 *   append pending or done), an append to the list of g or of a later
 *   epoch h; its adds came before its read of g, so before the exchange
 *   that ends h, and the copy of that list, after the exchange, reads
 *   them. A key may be listed twice (an append an epoch overtook goes to
 *   the new list, where the entry's next packet, finding it marked for
 *   the old one, lists it again): harmless, the receiver reads counters,
 *   not deltas.
 * - What a list cannot take (full, an append that met more than
 *   MAX_APPEND_ATTEMPTS epochs, or a mark that lost as many swaps) sets
 *   changed_overflow, which xdpflow_dirty reads and clears after its
 *   wait; so does a wait that times out (a writer interrupted,
 *   MAX_RELEASE_READS reads). The receiver then reads the whole table,
 *   after the exchange, which holds every add before it.
 * - Epochs only grow (the monotonic clock at the switch, or one more),
 *   and a load starts from that clock, so no entry of a pinned table taken
 *   over holds an epoch yet to come; an inserted value holds 0, never an
 *   epoch. Each list belongs to the epochs of one parity.
 *
 * Eviction is unchanged ("Lossless eviction"): the final counters come
 * from xdpflow_evict; a listed key that was evicted is skipped, or, if
 * inserted again since, copied as the new entry it is. */

static __always_inline void set_changed_overflow(void)
{
	__u32 old = __sync_fetch_and_or(&changed_overflow, 1);
	barrier_var(old);
}

/* mark_changed marks v changed in the current epoch after a packet's
 * adds, and returns that epoch when the key is to be appended to its
 * list (0: listed already, by the packet that marked v for this epoch or
 * a later one). The caller holds a pin or v's lock. */
static __always_inline __u64 mark_changed(struct flow_value *v)
{
	__u64 seen = __sync_fetch_and_or(&v->epoch, 0); /* orders the adds before the read below */
	__u64 now = *(volatile __u64 *)&epoch;
#pragma unroll
	for (int i = 0; i < MAX_APPEND_ATTEMPTS; i++) {
		if (seen >= now)
			return 0;
		__u64 was = __sync_val_compare_and_swap(&v->epoch, seen, now);
		if (was == seen)
			return now;
		seen = was; /* marked meanwhile, maybe for an older epoch */
	}
	set_changed_overflow();
	return 0;
}

static __always_inline void writers_add(__u32 list, __u32 delta)
{
	__u32 old = __sync_fetch_and_add(&changed_writers[list & 1], delta);
	barrier_var(old);
}

/* append_changed appends key, marked changed in epoch e, to the list of
 * the current epoch (see "Changed entries"). */
static __always_inline void append_changed(const struct flow_key *key, __u64 e)
{
#pragma clang loop unroll(disable)
	for (int i = 0; i < MAX_APPEND_ATTEMPTS; i++) {
		__u32 list = e & 1;
		writers_add(list, 1);
		__u64 now = *(volatile __u64 *)&epoch;
		if (now == e) {
			__u32 index = __sync_fetch_and_add(&changed_count[list], 1);
			struct flow_key *slot = NULL;
			if (index < changed_capacity) {
				__u32 at = index * 2 + list;
				slot = bpf_map_lookup_elem(&changed_keys, &at);
			}
			if (slot)
				*slot = *key;
			else
				set_changed_overflow();
			writers_add(list, -1);
			return;
		}
		writers_add(list, -1);
		e = now;
	}
	set_changed_overflow();
}

/* add_locked is add() under v's lock, for a packet that lost the race for
 * a pin (see "Lossless eviction"). */
static __always_inline int add_locked(struct flow_value *v, const struct flow_key *key, __u64 packets, __u64 len,
				      __u64 now)
{
	int added = 0;
	__u64 changed = 0;
	bpf_spin_lock(&v->lock);
	if (!(state_read(v) & STATE_NOT_LIVE) && same_key(&v->key, key)) {
		count_in(v, packets, len, now);
		if (track_changes)
			changed = mark_changed(v);
		added = 1;
	}
	bpf_spin_unlock(&v->lock);
	if (track_changes && changed)
		append_changed(key, changed);
	return added;
}

/* add counts one packet in v if v is live and holds key (see "Lossless
 * eviction"): under a pin taken from a live state without pins (the
 * common case), or from the live state that attempt found, else under
 * the lock. */
static __always_inline int add(struct flow_value *v, const struct flow_key *key, __u64 packets, __u64 len,
			       __u64 now)
{
	__u32 s = __sync_val_compare_and_swap(&v->dead, 0, 1);
	if (s != 0) {
		if (s & STATE_NOT_LIVE)
			return 0;
		if (__sync_val_compare_and_swap(&v->dead, s, s + 1) != s)
			return add_locked(v, key, packets, len, now);
	}
	int added = same_key(&v->key, key);
	__u64 changed = 0;
	if (added) {
		count_in(v, packets, len, now);
		if (track_changes)
			changed = mark_changed(v);
	}
	state_add(v, -1); /* release the pin, after the adds */
	if (track_changes && changed)
		append_changed(key, changed);
	return added;
}

/* insert adds key's entry with this first packet, if key has none. The
 * entry is not live until publish(). */
static __always_inline long insert(struct flow_key *key, __u64 packets, __u64 len, __u64 now)
{
	struct flow_value init = {
		.dead = STATE_NEW,
		.key = *key,
		.counters = {
			.packets = packets,
			.bytes = len,
			.first_seen_ns = now,
			.last_seen_ns = now,
		},
	};
	return bpf_map_update_elem(&flows, key, &init, BPF_NOEXIST);
}

/* publish makes key's entry, which this packet inserted, live, marked
 * changed first (see "Changed entries"). An entry that is not live is
 * never evicted, so the lookup finds that entry. */
static __always_inline void publish(const struct flow_key *key)
{
	struct flow_value *v = bpf_map_lookup_elem(&flows, key);
	if (!v)
		return;
	__u64 changed = 0;
	if (track_changes)
		changed = mark_changed(v);
	state_clear(v, STATE_NEW);
	if (track_changes && changed)
		append_changed(key, changed);
}

static __always_inline int table_full(__u64 generation)
{
	return full_mark == generation + 1;
}

/* mark_full records that an insert failed while generation evictions had
 * happened; it writes only on a change, so that a flood of new
 * connections into a full table reads the line on every CPU without
 * bouncing it between them. */
static __always_inline void mark_full(__u64 generation)
{
	if (full_mark != generation + 1)
		full_mark = generation + 1;
}

/* count_slow is count() past its first lookup: the retries, the insert
 * and the overflow. No packet is lost to a race: an insert that finds the
 * key already there (EEXIST) looks it up again, and so does a packet that
 * meets its entry being evicted (see "Lossless eviction"). Whatever cannot
 * be stored in the table (full, or still being evicted after
 * MAX_COUNT_ATTEMPTS) is added to the overflow counters. evicting: the
 * caller's lookup met the entry being evicted or published.
 *
 * A global function, so that the verifier checks it once per program,
 * for any key, rather than once for every way the parse can end: that
 * product is what approached its limit of processed instructions. It
 * works on a copy of the key on its own stack: Linux 6.1 takes a map key
 * from the stack, not from the memory a global function's pointer
 * argument points to. */
__attribute__((noinline)) int count_slow(const struct flow_key *packet_key, __u64 packets, __u64 len, __u64 now,
					 int evicting)
{
	if (!packet_key)
		return 0;
	struct flow_key k = *packet_key;
	struct flow_key *key = &k;

#pragma clang loop unroll(disable)
	for (int attempt = 0; attempt < MAX_COUNT_ATTEMPTS; attempt++) {
		struct flow_value *v = bpf_map_lookup_elem(&flows, key);
		if (v) {
			if (add(v, key, packets, len, now))
				return 0;
			/* Set once this packet met its entry being evicted: the
			 * eviction frees an entry for it, so the full-table hint,
			 * which may not have caught up yet, is not to be trusted. */
			evicting = 1;
			continue; /* being evicted or published, or reused for another key */
		}
		__u64 generation = *(volatile __u64 *)&evictions;
		if (!evicting && table_full(generation))
			break;
		long err = insert(key, packets, len, now);
		if (err == 0) {
			publish(key);
			on_new_connection(now);
			return 0;
		}
		if (err == -E2BIG)
			mark_full(generation);
		if (err != -EEXIST)
			break; /* full, or the bucket lock failed */
	}
	stat_add(STAT_OVERFLOW_PACKETS, packets);
	stat_add(STAT_OVERFLOW_BYTES, len);
	return 0;
}

/* count adds a packet (packets on the wire, len bytes) to key's entry,
 * inserting it if needed. Both programs count through it: the XDP
 * program with packets 1, a constant folded away. The hit path (the
 * entry is there and live) is inline; everything else is count_slow's,
 * which looks the key up again. */
static __always_inline void count(struct flow_key *key, __u64 packets, __u64 len)
{
	/* The coarse clock (one tick, e.g. 4 ms) costs a fraction of the
	 * precise one, and is precise enough for first and last seen. */
	__u64 now = bpf_ktime_get_coarse_ns();
	struct flow_value *v = bpf_map_lookup_elem(&flows, key);
	if (v && add(v, key, packets, len, now))
		return;
	count_slow(key, packets, len, now, v != NULL);
}

static __always_inline void mask_addr(__u8 *addr, const volatile __u32 *mask)
{
	__u32 *words = (__u32 *)addr;
	words[0] &= mask[0];
	words[1] &= mask[1];
	words[2] &= mask[2];
	words[3] &= mask[3];
}

/* aggregate replaces a kept address by the narrowest named CIDR holding
 * it (use_cidrs), by "other" outside them all (cidr_other), or truncates
 * it to its family's prefix length (0: kept whole), recording which in
 * *prefix. */
static __always_inline void aggregate(__u8 *addr, __u8 *prefix, __u8 family, __u8 use_cidrs,
				      __u8 prefix4, __u8 prefix6, const volatile __u32 *mask4,
				      const volatile __u32 *mask6)
{
	if (use_cidrs) {
		struct cidr_key ck = { .prefixlen = 128 };
		__builtin_memcpy(ck.addr, addr, 16);
		struct cidr_value *cv = bpf_map_lookup_elem(&cidrs, &ck);
		if (cv) {
			__u32 *words = (__u32 *)addr;
			words[0] &= cv->mask[0];
			words[1] &= cv->mask[1];
			words[2] &= cv->mask[2];
			words[3] &= cv->mask[3];
			*prefix = cv->prefix;
			return;
		}
		if (cidr_other) {
			__builtin_memset(addr, 0, 16);
			*prefix = XDPFLOW_PREFIX_OTHER;
			return;
		}
	}
	if (family == XDPFLOW_FAMILY_IPV4 && prefix4) {
		mask_addr(addr, mask4);
		*prefix = prefix4;
	} else if (family == XDPFLOW_FAMILY_IPV6 && prefix6) {
		mask_addr(addr, mask6);
		*prefix = prefix6;
	}
}

/* group zeroes the fields the dimensions drop and aggregates the kept
 * addresses, after the filters have read them. */
static __always_inline void group(struct flow_key *key)
{
	if (keep_saddr)
		aggregate(key->saddr, &key->sprefix, key->family, cidr_saddr, saddr_prefix4, saddr_prefix6,
			  saddr_mask4, saddr_mask6);
	else
		__builtin_memset(key->saddr, 0, sizeof(key->saddr));
	if (keep_daddr)
		aggregate(key->daddr, &key->dprefix, key->family, cidr_daddr, daddr_prefix4, daddr_prefix6,
			  daddr_mask4, daddr_mask6);
	else
		__builtin_memset(key->daddr, 0, sizeof(key->daddr));
	if (!keep_saddr && !keep_daddr)
		key->family = 0;
	if (!keep_sport)
		key->sport = 0;
	if (!keep_dport)
		key->dport = 0;
	if (!keep_proto)
		key->proto = 0;
	if (!keep_ifindex)
		key->ifindex = 0;
}

/* packet_key fills key, padding zeroed, from the frame (see
 * parse_packet), without the interface: the caller reads that from its
 * context after the parse and then groups the key (finish_key). Reading
 * it before would keep it in a register through the parse, which doubles
 * the states the verifier walks. Returns 0 when the packet is counted. */
static __always_inline int packet_key(void *data, void *data_end, void *pkt_end, int dir, struct flow_key *key,
				      void **hdr_end)
{
	__builtin_memset(key, 0, sizeof(*key));
	if (parse_packet(data, data_end, pkt_end, dir, key, hdr_end) != 0)
		return -1;
	key->direction = dir;
	return 0;
}

/* finish_key sets the interface the packet arrived on or leaves by, and
 * groups the key. */
static __always_inline void finish_key(struct flow_key *key, __u32 ifindex)
{
	key->ifindex = ifindex;
	group(key);
}

/* parse and parse_key are parse_packet and packet_key for a received
 * frame, as the benchmark programs (bpf/naive.c, bpf/floor.c) call them:
 * parse fills key from the frame, ungrouped, without the interface and
 * direction. */
static __always_inline __attribute__((unused)) int parse(struct xdp_md *ctx, struct flow_key *key)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *hdr_end;
	return parse_packet(data, data_end, data_end, XDPFLOW_DIR_RECEIVE, key, &hdr_end);
}

static __always_inline int parse_key(struct xdp_md *ctx, struct flow_key *key)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *hdr_end;
	if (packet_key(data, data_end, data_end, XDPFLOW_DIR_RECEIVE, key, &hdr_end) != 0)
		return -1;
	finish_key(key, ctx->ingress_ifindex);
	return 0;
}

SEC("xdp")
int xdpflow(struct xdp_md *ctx)
{
	struct flow_key key;
	if (parse_key(ctx, &key) == 0)
		count(&key, 1, ctx->data_end - ctx->data);
	return XDP_PASS;
}

/* Transmit
 *
 * xdpflow_egress sees what this host sends where the stack hands it to the
 * interface's TC egress hook: before a GSO packet (TSO, UDP GSO) is cut
 * into the segments the wire carries, before the driver inserts a VLAN
 * tag it was handed out of band, and after IP fragmentation. It counts
 * what the wire carries: a GSO packet as its segments (gso_segs, or the
 * payload divided by gso_size where the stack left gso_segs 0), each with
 * the headers up to the end of the transport header repeated, plus 4
 * bytes a segment for an out-of-band VLAN tag. A segment of a TCP GSO
 * packet carries the same headers with the same options, so the bytes are
 * exact; a packet the driver or a later hook changes (a tunnel, a VLAN
 * device below) is counted as it was here.
 *
 * The headers must be in the skb's linear part, as the stack puts them
 * for what it sends; the length checks use the whole skb (skb->len). */

/* wire_packets returns how many packets an skb of len bytes, whose
 * repeated headers are hdr_len bytes, is on the wire. */
static __always_inline __u32 wire_packets(struct __sk_buff *skb, __u32 len, __u32 hdr_len)
{
	__u32 size = skb->gso_size;
	if (size == 0)
		return 1;
	__u32 segs = skb->gso_segs;
	if (segs == 0 && len > hdr_len)
		segs = (len - hdr_len + size - 1) / size;
	return segs ? segs : 1;
}

SEC("tc")
int xdpflow_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 len = skb->len;
	if (len > MAX_SKB_LEN)
		return TC_ACT_UNSPEC;
	struct flow_key key;
	void *hdr_end = data;
	if (packet_key(data, data_end, data + len, XDPFLOW_DIR_TRANSMIT, &key, &hdr_end) != 0)
		return TC_ACT_UNSPEC;
	finish_key(&key, skb->ifindex);
	/* A non-first fragment leaves hdr_end at data: it is never GSO. */
	__u32 hdr_len = hdr_end - data;
	__u32 packets = wire_packets(skb, len, hdr_len);
	__u64 bytes = len + (__u64)(packets - 1) * hdr_len;
	if (skb->vlan_present)
		bytes += (__u64)packets * VLAN_HLEN_;
	count(&key, packets, bytes);
	return TC_ACT_UNSPEC;
}

/* mark_dead marks v dead if it is live and holds key, with v's lock held:
 * no other eviction changes its state meanwhile, packets' pins do. */
static __always_inline int mark_dead(struct flow_value *v, const struct flow_key *key)
{
	__u32 s = state_read(v);
	if (s & STATE_NOT_LIVE || !same_key(&v->key, key))
		return 0;
	for (int i = 0; i < MAX_MARK_ATTEMPTS; i++) {
		__u32 seen = __sync_val_compare_and_swap(&v->dead, s, s | STATE_DEAD);
		if (seen == s)
			return 1;
		if (seen & STATE_NOT_LIVE)
			return 0;
		s = seen; /* a pin was taken or released meanwhile */
	}
	return 0;
}

/* pins_released reports whether the pins of v, marked dead, have all been
 * released, waiting for up to MAX_RELEASE_READS reads. Once it has, the
 * counters read after hold every packet added under a pin. */
static __always_inline int pins_released(struct flow_value *v)
{
	for (int i = 0; i < MAX_RELEASE_READS; i++) {
		if (!(*(volatile __u32 *)&v->dead & STATE_PINS))
			break;
	}
	return !(state_read(v) & STATE_PINS);
}

/* xdpflow_evict removes one connection from the flow table and returns its
 * final counters, losing no packet (see "Lossless eviction"). The loader
 * runs it with BPF_PROG_TEST_RUN on a struct evict_msg; it is never
 * attached to an interface. found = 0 means the key is not in the table,
 * or could not be evicted now: then it stays in the table, live. */
SEC("xdp")
int xdpflow_evict(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct evict_msg *msg = data;
	if ((void *)(msg + 1) > data_end)
		return XDP_ABORTED;

	struct flow_key key = msg->key;
	struct flow_value *v = bpf_map_lookup_elem(&flows, &key);
	if (!v) {
		msg->found = 0;
		return XDP_PASS;
	}
	struct flow_counters final;
	int found = 0;
	bpf_spin_lock(&v->lock);
	if (mark_dead(v, &key)) {
		if (pins_released(v)) {
			final = v->counters;
			found = 1;
		} else {
			state_clear(v, STATE_DEAD); /* evicted by a later snapshot */
		}
	}
	bpf_spin_unlock(&v->lock);
	if (!found) {
		msg->found = 0;
		return XDP_PASS;
	}
	/* Counted after the delete: see evictions. */
	if (bpf_map_delete_elem(&flows, &key) == 0)
		__sync_fetch_and_add(&evictions, 1);
	msg->found = 1;
	msg->counters = final;
	return XDP_PASS;
}

/* copy_listed copies the entry of one key of the list being read (the
 * parity of msg->epoch's predecessor, in msg->list) to changed_out. */
static long copy_listed(void *map, const __u32 *slot, const struct flow_key *key, struct dirty_msg *msg)
{
	if (*slot / 2 >= msg->listed)
		return 1;
	if ((*slot & 1) != msg->list)
		return 0; /* the other list's */
	struct flow_value *v = bpf_map_lookup_elem(&flows, key);
	if (!v)
		return 0; /* evicted: its final counters came from xdpflow_evict */
	__u32 out = msg->copied;
	struct changed_entry *e = bpf_map_lookup_elem(&changed_out, &out);
	if (!e)
		return 1;
	e->key = *key;
	e->counters = v->counters;
	msg->copied++;
	return 0;
}

/* writers_gone reports whether list has no writers, waiting for up to
 * MAX_RELEASE_READS reads; once it has, what they appended is read after. */
static __always_inline int writers_gone(__u32 list)
{
	__u32 *w = &changed_writers[list & 1];
	for (int i = 0; i < MAX_RELEASE_READS; i++) {
		if (!*(volatile __u32 *)w)
			break;
	}
	return __sync_fetch_and_or(w, 0) == 0;
}

/* xdpflow_dirty starts a new epoch and copies the entries listed as
 * changed in the epoch it ends to changed_out (see "Changed entries"), or
 * reports that the list misses some (overflow): then the loader reads the
 * whole table. The loader runs it with BPF_PROG_TEST_RUN on a struct
 * dirty_msg, one run at a time; it is never attached to an interface.
 * Counters are read without the entry's lock, as a batch lookup of the
 * table reads them. */
SEC("xdp")
int xdpflow_dirty(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct dirty_msg *msg = data;
	if ((void *)(msg + 1) > data_end)
		return XDP_ABORTED;

	__u64 ended = epoch;
	__u64 next = bpf_ktime_get_ns();
	if (next <= ended)
		next = ended + 1;
	if (!((next ^ ended) & 1))
		next++; /* the other list */
	__u64 old = __sync_lock_test_and_set(&epoch, next);
	barrier_var(old);

	struct dirty_msg m = { .epoch = next };
	__u32 list = ended & 1;
	if (!writers_gone(list)) {
		m.overflow = 1; /* the list is left as it is: cleared when its writers are gone */
		*msg = m;
		return XDP_PASS;
	}
	m.overflow = __sync_fetch_and_and(&changed_overflow, 0) != 0;
	m.listed = __sync_fetch_and_and(&changed_count[list], 0);
	if (m.listed > changed_capacity) {
		m.overflow = 1;
		m.listed = changed_capacity;
	}
	m.list = list;
	if (!m.overflow)
		bpf_for_each_map_elem(&changed_keys, copy_listed, &m, 0);
	*msg = m;
	return XDP_PASS;
}
