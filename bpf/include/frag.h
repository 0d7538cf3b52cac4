/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IP fragments. A later fragment carries no ports, so on its own it belongs to
 * no service; the kernel still reassembles it with its first fragment and
 * delivers the whole datagram to the first fragment's port. This header makes
 * every fragment pay where its datagram goes.
 *
 * Contract (the order of calls in guard() and run_guard()):
 *   - a first fragment let through (passed, or a drop monitor mode passed),
 *     unless allow-listed, is remembered by frag_remember(): its datagram's key
 *     (source, destination, protocol for IPv4, identification) -> its ports;
 *   - a first fragment, after the allow list, deny list and bans, is refused
 *     when its datagram's first fragment was let through with another
 *     protocol or other ports (frag_twin());
 *   - a later fragment, after the allow list, deny list and bans, calls
 *     frag_recall(): when its first fragment was remembered less than
 *     AG_FRAG_TTL_NS ago it takes that fragment's protocol and ports and is
 *     judged like it (service, allowFrom, limits: packets and its full bytes,
 *     never a new connection); otherwise it is an orphan (AG_R_FRAGMENT) and
 *     defaultAction decides;
 *   - an orphan that passes is recorded against its datagram by
 *     frag_note_orphan(), and frag_take_pending() adds what such orphans
 *     carried to the cost of the first fragment when it arrives after them:
 *     sending the large fragments first and the small first fragment last buys
 *     nothing;
 *   - any fragment of a service with a fragment budget spends it first
 *     (frag_over_budget(): one shared bucket per service).
 *
 * Keys are exact (no hash stands for an address), so no source can charge, or
 * borrow, the datagrams of another: only a packet forging the victim's own
 * source address reaches its entries, and such a packet can charge the victim
 * anyway. IPv6 reassembles by addresses and identification alone (the next
 * header of later fragments is not used, RFC 8200 4.5), so its key leaves the
 * protocol out and the entry holds the first fragment's. The table is an LRU:
 * a flood of first fragments evicts older datagrams, whose later fragments then
 * become orphans; inserts are counted (AG_STAT_FRAG_INSERT). */
#ifndef APIGUARD_FRAG_H
#define APIGUARD_FRAG_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "counters.h"
#include "gcra.h"
#include "parse.h"

#ifndef AG_FRAG_CAPACITY
/* The kernel holds at most 4 MB of fragments per namespace (ipfrag_high_thresh):
 * a few thousand datagrams. */
#define AG_FRAG_CAPACITY (1 << 14)
#endif
/* IPv6's reassembly timeout (IPv4's is 30 s): an older entry's datagram is gone. */
#define AG_FRAG_TTL_NS ((__u64)AG_FRAG_TTL_SECONDS * 1000000000ULL)
/* No datagram is longer: the kernel discards what reaches past it, so orphans
 * beyond it buy nothing, and a bounded cost keeps the GCRA products in 64 bits. */
#define AG_FRAG_MAX_DATAGRAM 65535

struct ag_frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id;
	__u8 proto;		/* IPv4 only; 0 for IPv6 */
	__u8 _pad[3];
};

struct ag_frag {
	__u64 seen;		/* coarse ns: the first fragment, or the first orphan */
	__u32 pending_packets;	/* orphans let through before the first fragment */
	__u32 pending_bytes;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 first;		/* the first fragment was let through: ports are set */
	__u8 _pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ag_frag_key);
	__type(value, struct ag_frag);
	__uint(max_entries, AG_FRAG_CAPACITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

/* Per service: the GCRA word of its fragment budget (ag_service.fragments). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, AG_MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frag_budget SEC(".maps");

static __always_inline void frag_key(struct ag_frag_key *k, const struct pkt *p)
{
	__builtin_memcpy(k->src, p->addr, 16);
	__builtin_memcpy(k->dst, p->dst, 16);
	k->id = p->frag_id;
	k->proto = p->family == 4 ? p->proto : 0;
	k->_pad[0] = k->_pad[1] = k->_pad[2] = 0;
}

static __always_inline int frag_fresh(const struct ag_frag *f, __u64 now)
{
	return now - f->seen < AG_FRAG_TTL_NS;
}

/* A later fragment: 1 when its first fragment was let through (p takes its
 * protocol and ports), 0 for an orphan. */
static __always_inline int frag_recall(struct pkt *p)
{
	struct ag_frag_key k;
	struct ag_frag *f;

	frag_key(&k, p);
	f = bpf_map_lookup_elem(&frags, &k);
	if (!f || !f->first || !frag_fresh(f, bpf_ktime_get_coarse_ns()))
		return 0;
	p->proto = f->proto;
	p->sport = f->sport;
	p->dport = f->dport;
	return 1;
}

/* A first fragment of a datagram whose first fragment was let through with
 * another protocol or other ports: 1. The kernel keeps the first one it got
 * (another that fits inside it is a duplicate and dropped; one that does not
 * discards the datagram), so this one's ports would only be lent to later
 * fragments the host delivers to the first one's port: a tiny first fragment
 * to a limited service, then a twin to a port without limits, and the full
 * later fragments escaped the limits. Refused instead (a sender reusing an id
 * for another flow within AG_FRAG_TTL_NS loses that datagram). */
static __always_inline int frag_twin(const struct pkt *p)
{
	struct ag_frag_key k;
	struct ag_frag *f;

	frag_key(&k, p);
	f = bpf_map_lookup_elem(&frags, &k);
	if (!f || !f->first || !frag_fresh(f, bpf_ktime_get_coarse_ns()))
		return 0;
	return f->proto != p->proto || f->sport != p->sport || f->dport != p->dport;
}

/* An orphan that passes: its packet and bytes wait for the first fragment. */
static __always_inline void frag_note_orphan(const struct pkt *p)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	struct ag_frag init = { .seen = now, .pending_packets = 1, .pending_bytes = p->len };
	struct ag_frag_key k;
	struct ag_frag *f;

	frag_key(&k, p);
	f = bpf_map_lookup_elem(&frags, &k);
	if (f && frag_fresh(f, now)) {
		if (f->pending_bytes < AG_FRAG_MAX_DATAGRAM) {
			__sync_fetch_and_add(&f->pending_packets, 1);
			__sync_fetch_and_add(&f->pending_bytes, p->len);
		}
		return;
	}
	if (!bpf_map_update_elem(&frags, &k, &init, BPF_ANY))
		stat_inc(AG_STAT_FRAG_INSERT);
}

/* A first fragment about to be charged: adds the orphans of its datagram that
 * went ahead of it to its cost, once. */
static __always_inline void frag_take_pending(const struct pkt *p, struct ag_cost *c)
{
	struct ag_frag_key k;
	struct ag_frag *f;
	__u32 n, b;

	frag_key(&k, p);
	f = bpf_map_lookup_elem(&frags, &k);
	if (!f || !frag_fresh(f, bpf_ktime_get_coarse_ns()))
		return;
	n = __sync_lock_test_and_set(&f->pending_packets, 0);
	b = __sync_lock_test_and_set(&f->pending_bytes, 0);
	c->packets += n;
	c->bytes += b;
}

/* A first fragment let through: its later fragments follow it. */
static __always_inline void frag_remember(const struct pkt *p)
{
	struct ag_frag_key k;
	struct ag_frag f = {
		.seen = bpf_ktime_get_coarse_ns(),
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.first = 1,
	};

	frag_key(&k, p);
	if (!bpf_map_update_elem(&frags, &k, &f, BPF_ANY))
		stat_inc(AG_STAT_FRAG_INSERT);
}

/* Any fragment to a service with a budget: 1 when the budget refuses it. */
static __always_inline int frag_over_budget(const struct ag_service *svc, __u32 svc_id,
					    const struct ag_cost *c, __u64 now)
{
	__u64 *tat;

	if (!svc->fragments.interval)
		return 0;
	tat = bpf_map_lookup_elem(&frag_budget, &svc_id);
	return tat && !gcra(tat, &svc->fragments, c->packets, now);
}

#endif
