/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Types shared by the XDP program (bpf/xdpflow.c) and its Go loader.
 * Every struct is laid out without implicit padding: any padding is an
 * explicit field that the program zeroes, so one connection is one key. */
#ifndef XDPFLOW_H
#define XDPFLOW_H

#include <linux/types.h>

/* Address families stored in flow_key.family. */
#define XDPFLOW_FAMILY_IPV4 4
#define XDPFLOW_FAMILY_IPV6 6

/* Values of flow_key.sprefix and .dprefix besides a prefix length. */
#define XDPFLOW_PREFIX_WHOLE 0    /* the whole address */
#define XDPFLOW_PREFIX_OTHER 0xff /* outside every CIDR, address zeroed */

/* Values of flow_key.direction. */
#define XDPFLOW_DIR_RECEIVE 0  /* counted by the XDP program */
#define XDPFLOW_DIR_TRANSMIT 1 /* counted by the TC egress program */

/* flow_key identifies one series: one direction of a connection of this
 * host, or the connections that share the fields kept by the load-time
 * dimensions (the others are zeroed) and their aggregated addresses.
 *
 * The sides are named as a received packet names them, in both
 * directions: "source" is the remote side and "destination" this host's.
 * A transmitted packet's destination address and port are stored in
 * saddr and sport, its source address and port in daddr and dport. So the
 * port filter, the dimensions and the aggregation mean the same side in
 * both directions, and the two directions of one connection differ only
 * in direction. */
struct flow_key {
	/* Remote (source) and local (destination) addresses. IPv4 is stored
	 * IPv4-mapped (::ffff:a.b.c.d). */
	__u8 saddr[16];
	__u8 daddr[16];
	/* Interface the packet arrived on or leaves by. */
	__u32 ifindex;
	/* Remote and local ports in host byte order. Both are 0 for a
	 * non-first fragment, whose transport header is in an earlier
	 * packet. */
	__u16 sport;
	__u16 dport;
	/* IPPROTO_TCP or IPPROTO_UDP. */
	__u8 proto;
	/* XDPFLOW_FAMILY_IPV4 or XDPFLOW_FAMILY_IPV6; 0 when neither address
	 * is kept. */
	__u8 family;
	/* The prefix length (of the family: up to 32 or 128) the address was
	 * aggregated to, XDPFLOW_PREFIX_WHOLE or XDPFLOW_PREFIX_OTHER. */
	__u8 sprefix;
	__u8 dprefix;
	/* XDPFLOW_DIR_RECEIVE or XDPFLOW_DIR_TRANSMIT. */
	__u8 direction;
	/* Zero: explicit, so the key has no implicit padding. */
	__u8 pad[3];
};

/* cidr_key and cidr_value are an entry of the cidrs LPM trie: a named
 * CIDR, IPv4 as IPv4-mapped (prefixlen 96 + the IPv4 prefix length). */
struct cidr_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct cidr_value {
	/* The prefix's mask over the 16-byte address. */
	__u32 mask[4];
	/* The prefix length of the family. */
	__u8 prefix;
	__u8 pad[3];
};

/* flow_counters are the counts of one connection. */
struct flow_counters {
	/* Received: frames as XDP sees them. Transmitted: packets on the
	 * wire, a GSO packet counting as the segments it is cut into. */
	__u64 packets;
	/* Frame bytes from the Ethernet header to the end of the payload (no
	 * FCS): received, as XDP sees them; transmitted, as the wire carries
	 * them, with the headers of a GSO packet repeated in each segment
	 * and a VLAN tag the driver inserts (bpf/xdpflow.c, "Transmit"). */
	__u64 bytes;
	/* bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC_COARSE) of the first
	 * and the latest packet. */
	__u64 first_seen_ns;
	__u64 last_seen_ns;
};

/* flow_value is the flow table's value. Counters change only under a pin
 * or the lock, and only while the value is live and holds the key it was
 * looked up by: that is what makes eviction lossless ("Lossless eviction"
 * in bpf/xdpflow.c). */
struct flow_value {
	/* Taken by xdpflow_evict, and by a packet that lost the race for a
	 * pin to packets on other CPUs. */
	struct bpf_spin_lock lock;
	/* The entry's state, changed only atomically: being evicted (set by
	 * xdpflow_evict, which then waits for the pins to be released and
	 * takes the final counters; the entry is deleted right after), not
	 * yet published (set in the inserted value, cleared by the inserting
	 * packet), and the number of packets adding to the counters without
	 * the lock (pins). STATE_* in bpf/xdpflow.c. */
	__u32 dead;
	/* The entry's own key: an entry deleted and reused for another key
	 * while a packet held a pointer to it is recognised and skipped. */
	struct flow_key key;
	/* The epoch in which a packet last marked the entry changed, when
	 * the loader asks for change tracking (export_changed_only): an
	 * entry whose epoch is not the current one is appended to the
	 * current epoch's changed list by its next packet ("Changed
	 * entries" in bpf/xdpflow.c). 0 in an inserted value: never an
	 * epoch. */
	__u64 epoch;
	struct flow_counters counters;
};

/* evict_msg is the data of one BPF_PROG_TEST_RUN of xdpflow_evict: the
 * loader fills key, the program fills found and counters. */
struct evict_msg {
	struct flow_key key;
	/* 1: evicted, counters are final. 0: not in the table, or not
	 * evictable now (packets held pins too long): still in the table. */
	__u32 found;
	__u32 pad;
	struct flow_counters counters;
};

/* changed_entry is one element of changed_out. */
struct changed_entry {
	struct flow_key key;
	struct flow_counters counters;
};

/* dirty_msg is the data of one BPF_PROG_TEST_RUN of xdpflow_dirty, all
 * of it filled by the program: it starts a new epoch and copies the
 * entries of the one it ends to changed_out. */
struct dirty_msg {
	/* The epoch started. */
	__u64 epoch;
	/* 1: some change of the epoch ended is not in its list (a list was
	 * full, or a packet was still appending): read the whole table. */
	__u32 overflow;
	/* Keys in the list of the epoch ended, duplicates included. */
	__u32 listed;
	/* Entries copied to changed_out, from index 0: the listed keys
	 * still in the table. */
	__u32 copied;
	/* The list read: the parity of the epoch ended (set by xdpflow_dirty). */
	__u32 list;
};

/* trigger_event is sent on the ring buffer every N new connections. */
struct trigger_event {
	__u64 ktime_ns;
	/* Connections inserted since load, including this one. */
	__u64 new_connections;
};

/* Indexes of the per-CPU statistics array. */
enum xdpflow_stat {
	/* Packets and bytes not attributed because the map was full. */
	STAT_OVERFLOW_PACKETS = 0,
	STAT_OVERFLOW_BYTES,
	/* Trigger events that could not be reserved on the ring buffer. */
	STAT_RINGBUF_DROPS,
	/* Trigger events submitted. */
	STAT_EVENTS,
	STAT_MAX,
};

#endif /* XDPFLOW_H */
