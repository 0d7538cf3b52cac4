/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The refusal memory: per CPU, the sources a packet-rate bucket just refused,
 * and until when it will go on refusing them. A one-source flood far over its
 * limit is dropped right after parsing, without the lookups behind the verdict.
 *
 * Contract: exact. An entry drops a packet only for its own source, protocol
 * and port (a slot is chosen by a public hash, but an entry only ever matches
 * its own key, so no crafted source can borrow a victim's), under the policy
 * generation that refused it (a new policy forgets), and only before the time
 * the bucket has room again (tat + interval - tolerance): the bucket would
 * refuse those packets too. Only packet-rate refusals are remembered: bytes
 * depend on the size, connections only on SYNs. The check runs before the
 * allow list: a source that could be refused is not allow-listed in this
 * policy. The drops an entry makes are handed to its client's state when the
 * entry is reused; readers of client state add the pending ones
 * (loader/stats.go). */
#ifndef APIGUARD_REFUSALS_H
#define APIGUARD_REFUSALS_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "addr.h"
#include "clients.h"
#include "parse.h"

/* Small on purpose: it serves a few heavy sources, and a random-source flood
 * touches a random slot per packet, so a table larger than the first cache
 * levels costs a miss (and a TLB miss in a VM) on every packet. 4096 slots
 * (288 KiB per CPU) cost a 64k-source flood more than the rest of its drop. */
#ifndef AG_REFUSAL_SLOTS
#define AG_REFUSAL_SLOTS 512
#endif

struct ag_refusal {
	__u8 addr[16];		/* the exact key */
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
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} refusals SEC(".maps");

static __always_inline struct ag_refusal *refusal_slot(const struct pkt *p)
{
	__u32 idx = addr_hash(p->addr, (__u64)p->proto << 16 | p->dport) & (AG_REFUSAL_SLOTS - 1);

	return bpf_map_lookup_elem(&refusals, &idx);
}

static __always_inline int refusal_matches(const struct ag_refusal *r, const struct pkt *p,
					   __u32 generation)
{
	const __u64 *a = (const __u64 *)r->addr, *b = (const __u64 *)p->addr;

	return r->generation == generation && r->dport == p->dport && r->proto == p->proto &&
	       a[0] == b[0] && a[1] == b[1];
}

/* Drops the packet when its source is remembered as refused. TCP and UDP
 * only, and not a later fragment: it has no ports of its own yet (frag.h). */
static __always_inline int refused(const struct pkt *p, const struct ag_config *cfg, struct verdict *v)
{
	struct ag_refusal *r;

	if ((p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP) || p->frag == AG_FRAG_LATER)
		return 0;
	r = refusal_slot(p);
	if (!r || !r->until || !refusal_matches(r, p, cfg->generation) || bpf_ktime_get_ns() >= r->until)
		return 0;
	r->packets++;
	r->bytes += p->len;
	v->action = AG_ACT_DROP;
	v->reason = r->reason;
	v->service = r->client.service;
	return 1;
}

/* Adds the drops a refusal entry made to its client's state: the entry is
 * about to be reused. */
static __always_inline void flush_refusal(struct ag_refusal *r, struct ag_client_state *cs)
{
	if (!r->packets)
		return;
	if (!cs)
		cs = bpf_map_lookup_elem(&clients, &r->client);
	if (cs) {
		__sync_fetch_and_add(&cs->packets, r->packets);
		__sync_fetch_and_add(&cs->bytes, r->bytes);
		__sync_fetch_and_add(&cs->drops, r->packets);
	}
	r->packets = 0;
	r->bytes = 0;
}

/* Remembers a packet-rate refusal by the bucket (tat, l) of client ckey
 * (state cs), and hands the drops the entry it replaces made to that entry's
 * client. */
static __always_inline void remember_refusal(const struct pkt *p, __u32 generation, __u64 tat,
					     const struct ag_limit *l, struct ag_client_state *cs,
					     const struct ag_client_key *ckey, const struct verdict *v)
{
	struct ag_refusal *r = refusal_slot(p);

	if (!r)
		return;
	flush_refusal(r, refusal_matches(r, p, generation) ? cs : NULL);
	__builtin_memcpy(r->addr, p->addr, 16);
	r->generation = generation;
	r->dport = p->dport;
	r->proto = p->proto;
	r->reason = v->reason;
	/* a packet conforms once now >= tat + interval - tolerance */
	r->until = tat + (l->interval >> 16) - l->tolerance;
	r->client = *ckey;
}

#endif
