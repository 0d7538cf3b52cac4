/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The limits stage: a service's per-client, per-prefix and total buckets for
 * packets, bytes and new connections (SYN), and its fragment budget.
 *
 * Contract: apply_limits() runs after the service match and the ACL, for a
 * packet of service svc_id, and leaves v untouched but for service, reason
 * (AG_R_OK, or the bucket that refused) and, on a refusal, a drop with its
 * event. Cheapest refusal first: a flood over the service total, or from a
 * known prefix over its limit, is dropped by a read-only check before any
 * per-client state is created or charged, so a random-source flood costs an
 * array read, not an LRU insert per packet. Then the client, prefix and
 * service buckets are charged in that order, and a packet-rate refusal is
 * remembered (refusals.h). The two stages are limits_peek() and
 * limits_charge(), which resumes from the struct limits_ctx the first
 * filled: the SYN proxy (synproxy.h sp_judge) checks a handshake's cookie
 * between them. */
#ifndef APIGUARD_LIMITS_H
#define APIGUARD_LIMITS_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "addr.h"
#include "config.h"
#include "counters.h"
#include "gcra.h"
#include "parse.h"
#include "clients.h"
#include "refusals.h"
#include "frag.h"
#include "proven.h"

static __always_inline __u8 limit_reason(__u32 level, __u32 kind)
{
	return AG_R_CLIENT_PPS + level * AG_KIND_MAX + kind;
}

/* The limits' keys and the entries they insert, built in the caller's
 * memory: apply_limits' stack, or the SYN proxy's per-CPU scratch (its judge
 * calls the cookie check between the stages, and three frames of the guard
 * share the 512-byte stack). */
struct limits_mem {
	struct ag_client_key ckey, pkey;
	union {			/* one insert at a time */
		struct ag_client_state client;
		struct ag_service_state prefix;
	};
	struct ag_cost cost;
	__u64 now;
	__u32 svc_id;
	__u32 cbits;
	__u8 syn, shared_syn, proven_svc, client_on, prefix_on;
	__u8 _pad[3];
};

/* What the limits' read-only stage found, for the charging stage to resume
 * from without a second lookup: a caller between the two (synproxy.h, a
 * handshake's ACK judged there) keeps it on its own stack, as map-value
 * pointers cannot cross a global function's boundary. */
struct limits_ctx {
	const struct ag_service *svc;	/* its limits, by level */
	struct ag_service_state *ss, *ps;
	struct ag_client_state *cs;	/* the entry found; NULL when the charge inserted it */
	struct limits_mem *m;	/* keys, entries to insert, what the packet costs */
};

/* A refusal by the bucket kind of level: the verdict, its event, and for a
 * packet-rate refusal the memory of it (refusals.h). */
static __always_inline void limits_refuse(const struct pkt *p, const struct ag_config *cfg, struct verdict *v,
					  struct limits_ctx *lx, __u32 level, int kind)
{
	/* one event per limited bucket: a client, a prefix, or the whole service */
	if (level == AG_LEVEL_CLIENT)
		v->ev_bits = lx->m->cbits;
	else if (level == AG_LEVEL_PREFIX)
		v->ev_bits = key_bits(p->family, cfg->prefix_bits4, cfg->prefix_bits6);
	else
		v->ev_bits = 0;
	v->action = AG_ACT_DROP;
	v->monitor |= lx->svc->monitor;
	v->reason = limit_reason(level, kind);
	v->event = kind == AG_KIND_CPS ? AG_EV_SYN_LIMITED : AG_EV_LIMITED;
	if (lx->cs)
		v->count = __sync_fetch_and_add(&lx->cs->drops, 1) + 1;
	/* Only packet-rate refusals hold for every packet of this source until a
	 * known time. cs set means ckey was built: the drops can be handed to that
	 * client. */
	if (kind == AG_KIND_PPS && !v->monitor && lx->cs) {
		if (level == AG_LEVEL_CLIENT)
			remember_refusal(p, cfg->generation, lx->cs->tat[AG_KIND_PPS], &lx->svc->limits[AG_LEVEL_CLIENT][AG_KIND_PPS],
					 lx->cs, &lx->m->ckey, v);
		else if (level == AG_LEVEL_PREFIX && lx->ps)
			remember_refusal(p, cfg->generation, lx->ps->tat[AG_KIND_PPS], &lx->svc->limits[AG_LEVEL_PREFIX][AG_KIND_PPS],
					 lx->cs, &lx->m->ckey, v);
		else if (level == AG_LEVEL_SERVICE && lx->ss)
			remember_refusal(p, cfg->generation, lx->ss->tat[AG_KIND_PPS], &lx->svc->limits[AG_LEVEL_SERVICE][AG_KIND_PPS],
					 lx->cs, &lx->m->ckey, v);
	}
}

/* The read-only stage: the fragment budget (a charge, but one that comes
 * before everything), then the service total and a known prefix, which cost
 * a flood nothing. Fills lx. Returns 1 when it decided the verdict (a drop,
 * or a service without limits' definition: a pass). */
static __always_inline int limits_peek(const struct pkt *p, const struct ag_config *cfg, __u32 slot,
				       __u32 svc_id, struct verdict *v, struct limits_ctx *lx)
{
	__u32 idx = policy_index(slot, svc_id);
	const struct ag_service *svc = bpf_map_lookup_elem(&services, &idx);
	int kind, total_on;
	__u64 now;

	lx->m->syn = p->proto == IPPROTO_TCP && tcp_syn(p->tcp_flags);
	lx->m->cbits = key_bits(p->family, cfg->client_bits4, cfg->client_bits6);
	lx->m->cost.packets = 1;
	lx->m->cost.bytes = p->len;
	lx->m->svc_id = svc_id;
	lx->ss = NULL;
	lx->ps = NULL;
	lx->cs = NULL;
	v->service = svc_id;
	v->reason = AG_R_OK;
	if (!svc)
		return 1;
	lx->svc = svc;
	lx->m->client_on = level_limited(lx->svc->limits[AG_LEVEL_CLIENT]);
	lx->m->prefix_on = level_limited(lx->svc->limits[AG_LEVEL_PREFIX]);
	total_on = level_limited(lx->svc->limits[AG_LEVEL_SERVICE]);
	/* The precise clock costs as much as the rest of a drop (a TSC read in
	 * a VM): a service without limits only needs it for last_seen, which
	 * the coarse one (a tick) serves. */
	if (lx->m->prefix_on || total_on || lx->m->client_on || (p->frag && svc->fragments.interval))
		v->now = now = bpf_ktime_get_ns();
	else
		now = bpf_ktime_get_coarse_ns();
	lx->m->now = now;

	if (p->frag) {
		/* frag.h: a first fragment also pays for the later ones that
		 * went ahead of it; the service's fragment budget comes first */
		if (p->frag == AG_FRAG_FIRST)
			frag_take_pending(p, &lx->m->cost);
		if (frag_over_budget(svc, svc_id, &lx->m->cost, now)) {
			v->action = AG_ACT_DROP;
			v->monitor |= svc->monitor;
			v->reason = AG_R_FRAG_BUDGET;
			v->event = AG_EV_LIMITED;
			v->ev_bits = 0;	/* one bucket for the whole service */
			return 1;
		}
	}

	/* A proven client (proven.h) is not refused by the shared
	 * new-connection buckets; its SYNs are still charged there (below). */
	lx->m->shared_syn = lx->m->syn;
	lx->m->proven_svc = lx->m->syn && service_in(cfg->proven_services, svc_id);
	if (lx->m->proven_svc && proven_client(cfg, p, svc_id, now, &lx->m->ckey))
		lx->m->shared_syn = 0;

	if (total_on) {
		lx->ss = bpf_map_lookup_elem(&service_state, &svc_id);
		if (lx->ss && (kind = peek_level(lx->ss->tat, lx->svc->limits[AG_LEVEL_SERVICE], &lx->m->cost, lx->m->shared_syn, now)) != AG_KIND_MAX) {
			limits_refuse(p, cfg, v, lx, AG_LEVEL_SERVICE, kind);
			return 1;
		}
	}
	if (lx->m->prefix_on) {
		client_key(&lx->m->pkey, p->addr, key_bits(p->family, cfg->prefix_bits4, cfg->prefix_bits6), svc_id);
		lx->ps = bpf_map_lookup_elem(&prefixes, &lx->m->pkey);
		if (lx->ps && (kind = peek_level(lx->ps->tat, lx->svc->limits[AG_LEVEL_PREFIX], &lx->m->cost, lx->m->shared_syn, now)) != AG_KIND_MAX) {
			limits_refuse(p, cfg, v, lx, AG_LEVEL_PREFIX, kind);
			return 1;
		}
	}
	return 0;
}

/* The charging stage, resumed from what limits_peek left in lx: the client's
 * entry (made when absent), then the prefix's and the service's buckets.
 * Returns 1 when a bucket refused (the verdict decided), else 0. */
static __always_inline int limits_charge(const struct pkt *p, const struct ag_config *cfg, struct verdict *v,
					 struct limits_ctx *lx)
{
	struct ag_client_state *cs;
	struct ag_service_state *ps = lx->ps;
	__u64 now = lx->m->now;
	int kind;

	/* Every service client has an entry: it carries the per-client counters
	 * behind "top clients" even when the service sets no client limit. */
	if (!lx->m->proven_svc)	/* else built for the proof above */
		client_key(&lx->m->ckey, p->addr, lx->m->cbits, lx->m->svc_id);
	cs = bpf_map_lookup_elem(&clients, &lx->m->ckey);
	if (!cs) {
		struct ag_client_state *init = &lx->m->client;

		*init = (struct ag_client_state){ .first_seen = seen_at(now), .last_seen = seen_at(now),
						  .packets = lx->m->cost.packets, .bytes = lx->m->cost.bytes };
		kind = charge_new(init->tat, lx->svc->limits[AG_LEVEL_CLIENT], &lx->m->cost, lx->m->syn, now);
		init->drops = kind != AG_KIND_MAX;
		cs = insert_state(&clients, &lx->m->ckey, init, AG_STAT_CLIENT_INSERT,
				  AG_STAT_CLIENT_INSERT_FAIL, consts.client_capacity, v);
		if (!cs && kind != AG_KIND_MAX) {
			limits_refuse(p, cfg, v, lx, AG_LEVEL_CLIENT, kind);
			return 1;
		}
	}
	lx->cs = cs;
	if (cs) {
		cs->last_seen = seen_at(now);
		/* clients.h: telemetry, not a limit; plain adds (may undercount) */
		cs->packets += lx->m->cost.packets;
		cs->bytes += lx->m->cost.bytes;
		/* a service without client limits reads no TAT */
		if (lx->m->client_on &&
		    (kind = limit_level(cs->tat, lx->svc->limits[AG_LEVEL_CLIENT], &lx->m->cost, lx->m->syn, now)) != AG_KIND_MAX) {
			limits_refuse(p, cfg, v, lx, AG_LEVEL_CLIENT, kind);
			return 1;
		}
	}

	if (lx->m->prefix_on) {
		if (!ps) {
			struct ag_service_state *init = &lx->m->prefix;

			*init = (struct ag_service_state){};
			kind = charge_new(init->tat, lx->svc->limits[AG_LEVEL_PREFIX], &lx->m->cost, lx->m->syn, now);
			ps = insert_state(&prefixes, &lx->m->pkey, init, AG_STAT_PREFIX_INSERT,
					  AG_STAT_PREFIX_INSERT_FAIL, consts.prefix_capacity, v);
			if (!ps && kind != AG_KIND_MAX) {
				limits_refuse(p, cfg, v, lx, AG_LEVEL_PREFIX, kind);
				return 1;
			}
			lx->ps = ps;
		}
		if (ps && (kind = limit_level(ps->tat, lx->svc->limits[AG_LEVEL_PREFIX], &lx->m->cost, lx->m->shared_syn, now)) != AG_KIND_MAX) {
			limits_refuse(p, cfg, v, lx, AG_LEVEL_PREFIX, kind);
			return 1;
		}
	}
	if (lx->ss && (kind = limit_level(lx->ss->tat, lx->svc->limits[AG_LEVEL_SERVICE], &lx->m->cost, lx->m->shared_syn, now)) != AG_KIND_MAX) {
		limits_refuse(p, cfg, v, lx, AG_LEVEL_SERVICE, kind);
		return 1;
	}
	if (lx->m->syn && !lx->m->shared_syn) {
		if (ps)
			gcra_take(&ps->tat[AG_KIND_CPS], &lx->svc->limits[AG_LEVEL_PREFIX][AG_KIND_CPS], 1, now, 1);
		if (lx->ss)
			gcra_take(&lx->ss->tat[AG_KIND_CPS], &lx->svc->limits[AG_LEVEL_SERVICE][AG_KIND_CPS], 1, now, 1);
	}
	return 0;
}

/* Global: the verifier checks the limits once, not once for every way the
 * guard can reach them. The SYN proxy's judge (synproxy.h) runs the same two
 * stages with the cookie check between them, in its own global function. */
__attribute__((noinline)) int apply_limits(const struct pkt *p, const struct ag_config *cfg,
					   __u32 slot, __u32 svc_id, struct verdict *v)
{
	struct limits_mem m;
	struct limits_ctx lx = { .m = &m };

	if (!p || !cfg || !v)
		return 0;
	if (!limits_peek(p, cfg, slot, svc_id, v, &lx))
		limits_charge(p, cfg, v, &lx);
	return 0;
}

#endif
