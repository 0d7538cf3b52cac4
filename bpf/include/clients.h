/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The limiter's state: a bucket set per client key, per client prefix and per
 * service, each with its TATs (gcra.h).
 *
 * Contract: clients and prefixes are LRU tables keyed by struct ag_client_key
 * (addr.h client_key(), with the policy's client or prefix lengths); a flood
 * of random sources evicts their entries, which is counted (inserts per CPU,
 * AG_EV_MAP_PRESSURE past the table's share), never silent, and which the
 * service totals, an array no flood can evict, survive. Every client of a
 * service has an entry, limited or not: it carries the per-client counters
 * behind "top clients". */
#ifndef APIGUARD_CLIENTS_H
#define APIGUARD_CLIENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "config.h"
#include "counters.h"

/* 56 bytes on purpose: with its 24-byte key behind the LRU's 48-byte element
 * header, an entry is 128 bytes, so a known client costs one aligned pair of
 * cache lines (one miss with the adjacent-line prefetcher) where 64 bytes of
 * value made it three lines. The sightings pay for it: 32 bits of
 * CLOCK_MONOTONIC >> AG_SEEN_SHIFT (67 ms units; the reader takes them as the
 * latest such time, which is right for any age under 4.5 years). */
struct ag_client_state {
	__u64 tat[AG_KIND_MAX];	/* GCRA theoretical arrival times, ns */
	/* packets and bytes are telemetry ("clients top", status), never read by a
	 * limit, a flag or a ban: the pass path adds without a locked instruction. Two
	 * CPUs adding to one client at the same instant may lose one of the two
	 * adds (one packet, or the batch a refusal entry hands over: refusals.h
	 * flush_refusal), so they can only undercount, and only for a client
	 * whose packets reach several CPUs at once (RSS keeps one flow on one
	 * queue). drops and the TATs, which the limits and events read, stay
	 * atomic. */
	__u64 packets;
	__u64 bytes;
	__u64 drops;
	__u32 first_seen;	/* CLOCK_MONOTONIC >> AG_SEEN_SHIFT */
	__u32 last_seen;
};

static __always_inline __u32 seen_at(__u64 now)
{
	return now >> AG_SEEN_SHIFT;
}

struct ag_service_state {
	__u64 tat[AG_KIND_MAX];
};

/* One LRU shared by all CPUs: with per-CPU lists (BPF_F_NO_COMMON_LRU) each
 * CPU may only use its share of the entries, and one CPU seeing 64k clients
 * evicted known ones; measured slower for new clients too. The loader sizes it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ag_client_key);
	__type(value, struct ag_client_state);
	__uint(max_entries, AG_CLIENT_CAPACITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ag_client_key);
	__type(value, struct ag_service_state);
	__uint(max_entries, AG_PREFIX_CAPACITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} prefixes SEC(".maps");

/* Per-service total buckets: shared by every CPU, so they hold under spoofed floods. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_service_state);
	__uint(max_entries, AG_MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} service_state SEC(".maps");

/* Counts an insert on this CPU; true when this CPU's inserts are above its
 * share of the map: past it, inserts evict. */
static __always_inline int count_insert(__u32 stat_insert, __u32 capacity)
{
	return stat_inc_read(stat_insert) * consts.nr_cpus > capacity;
}

/* Inserts a new entry whose first packet is already charged. Returns the entry
 * another CPU inserted first (the caller charges it normally), or NULL. */
static __always_inline void *insert_state(void *map, struct ag_client_key *key, void *init,
					  __u32 stat_insert, __u32 stat_fail, __u32 capacity,
					  struct verdict *v)
{
	long err = bpf_map_update_elem(map, key, init, BPF_NOEXIST);

	if (!err) {
		if (count_insert(stat_insert, capacity)) {
			v->event = AG_EV_MAP_PRESSURE;
			v->ev_bits = 0; /* about the map, not a client */
		}
		return NULL;
	}
	if (err == -AG_EEXIST)
		return bpf_map_lookup_elem(map, key);
	stat_inc(stat_fail);
	return NULL;
}

#endif
