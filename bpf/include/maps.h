/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map the datapath uses. Policy maps come in two slots (_0, _1): the daemon
 * fills the inactive slot and flips `active`, so a packet sees one whole policy. */
#ifndef APIGUARD_MAPS_H
#define APIGUARD_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"

#define AG_LPM_CAPACITY (1 << 18)
#define AG_BAN_CAPACITY (1 << 18) /* per family; entries are allocated only when used */
#define AG_EV_SLOTS 4096 /* per-CPU direct-mapped event throttle cache */

/* Load-time settings, frozen before the verifier sees the program. */
struct ag_consts {
	__u64 event_interval;	/* ns between two events of one kind for one client */
	__u64 event_rate_interval; /* each event type's GCRA, same units as ag_limit */
	__u64 event_rate_tolerance;
	__u32 nr_cpus;
	__u32 client_capacity;
	__u32 prefix_capacity;
	__u32 bench_cycle;	/* benchmarks only: rewrite the source over this many clients */
};

volatile const struct ag_consts consts;

#define LPM_MAP(name, keytype, cap)                                     \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                    \
		__type(key, keytype);                                   \
		__type(value, __u32);                                   \
		__uint(max_entries, cap);                               \
		__uint(map_flags, BPF_F_NO_PREALLOC);                   \
	} name SEC(".maps")

/* Allow and deny share one trie per family and slot, value enum ag_list: one
 * lookup instead of two. The loader removes deny entries that an allow entry
 * covers (they could never match in "allow first" order), so the longest match
 * gives exactly the allow-then-deny verdict. */
LPM_MAP(lists4_0, struct ag_lpm4, AG_LPM_CAPACITY);
LPM_MAP(lists4_1, struct ag_lpm4, AG_LPM_CAPACITY);
LPM_MAP(lists6_0, struct ag_lpm6, AG_LPM_CAPACITY);
LPM_MAP(lists6_1, struct ag_lpm6, AG_LPM_CAPACITY);

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ag_lpm4);
	__type(value, struct ag_ban);
	__uint(max_entries, AG_BAN_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bans4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ag_lpm6);
	__type(value, struct ag_ban);
	__uint(max_entries, AG_BAN_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bans6 SEC(".maps");

/* Which policy slot is live: one word, flipped by the daemon after it wrote the other. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_config);
	__uint(max_entries, 2);
} config SEC(".maps");

/* slot * AG_PORT_SLOT + (udp ? 65536 : 0) + port -> service id (0: none) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 2 * AG_PORT_SLOT);
} ports SEC(".maps");

/* slot * AG_MAX_SERVICES + id */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_service);
	__uint(max_entries, 2 * AG_MAX_SERVICES);
} services SEC(".maps");

/* Per-service total buckets: shared by every CPU, so they hold under spoofed floods. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_service_state);
	__uint(max_entries, AG_MAX_SERVICES);
} service_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ag_client_key);
	__type(value, struct ag_client_state);
	__uint(max_entries, 1 << 17);
	/* One LRU shared by all CPUs: with per-CPU lists (BPF_F_NO_COMMON_LRU)
	 * each CPU may only use its share of the entries, and one CPU seeing 64k
	 * clients evicted known ones; measured slower for new clients too. */
} clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ag_client_key);
	__type(value, struct ag_service_state);
	__uint(max_entries, 1 << 16);
} prefixes SEC(".maps");

/* Clients the server sent data to (conntrack.h prove_client): they completed
 * a handshake, which a blind spoofer cannot. Value: when, coarse ns. Only the
 * egress side inserts, so spoofed packets cannot churn it; many real clients
 * can (least recently used go first). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ag_client_key);
	__type(value, __u64);
	__uint(max_entries, 1 << 16);
} proven SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_counter);
	__uint(max_entries, AG_ACT_MAX * AG_R_MAX);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, AG_STAT_MAX);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct ev_slot {
	__u64 tag;
	__u64 last;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ev_slot);
	__uint(max_entries, AG_EV_SLOTS);
} event_throttle SEC(".maps");

/* One GCRA word per event type (enum ag_event_type), bounding that type's
 * events per second across all CPUs (events.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, AG_EV_MAX);
} event_budgets SEC(".maps");

/* Per-CPU memory of sources a packet-rate bucket just refused, and until when
 * it will go on refusing them: a one-source flood far over its limit is
 * dropped right after parsing, without the lookups behind the verdict. */
/* Small on purpose: it serves a few heavy sources, and a random-source flood
 * touches a random slot per packet, so a table larger than the first cache
 * levels costs a miss (and a TLB miss in a VM) on every packet. 4096 slots
 * (288 KiB per CPU) cost a 64k-source flood more than the rest of its drop. */
#define AG_REFUSAL_SLOTS 512

struct ag_refusal {
	/* the exact key: a slot is chosen by a hash, but an entry only ever
	 * matches its own source, so no crafted source can borrow a victim's */
	__u8 addr[16];
	__u32 generation;	/* of the policy that refused: a new policy forgets */
	__u16 dport;
	__u8 proto;
	__u8 reason;
	__u64 until;		/* ns: the bucket refuses every packet before this */
	struct ag_client_key client; /* whose state the drops below belong to */
	__u64 packets;		/* dropped here, not yet added to the client's state */
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_refusal);
	__uint(max_entries, AG_REFUSAL_SLOTS);
} refusals SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

#endif
