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
 * remembered (refusals.h). */
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

/* Global: the verifier checks the limits once, not once for every way the
 * guard can reach them. */
__attribute__((noinline)) int apply_limits(const struct pkt *p, const struct ag_config *cfg,
					   __u32 slot, __u32 svc_id, struct verdict *v)
{
	__u32 idx = policy_index(slot, svc_id);
	const struct ag_service *svc = bpf_map_lookup_elem(&services, &idx);
	int syn, shared_syn, proven_svc;
	const struct ag_limit *lc, *lp, *lt;
	struct ag_service_state *ss = NULL, *ps = NULL;
	struct ag_client_state *cs = NULL;
	struct ag_client_key ckey, pkey;
	int kind = AG_KIND_MAX, client_on, prefix_on, total_on;
	__u32 level = AG_LEVEL_SERVICE;
	struct ag_cost cost;
	__u32 cbits;
	__u64 now;

	if (!p || !cfg || !v)
		return 0;
	syn = p->proto == IPPROTO_TCP && tcp_syn(p->tcp_flags);
	cbits = key_bits(p->family, cfg->client_bits4, cfg->client_bits6);
	cost.packets = 1;
	cost.bytes = p->len;
	v->service = svc_id;
	v->reason = AG_R_OK;
	if (!svc)
		return 0;
	lc = svc->limits[AG_LEVEL_CLIENT];
	lp = svc->limits[AG_LEVEL_PREFIX];
	lt = svc->limits[AG_LEVEL_SERVICE];
	client_on = level_limited(lc);
	prefix_on = level_limited(lp);
	total_on = level_limited(lt);
	/* The precise clock costs as much as the rest of a drop (a TSC read in
	 * a VM): a service without limits only needs it for last_seen, which
	 * the coarse one (a tick) serves. */
	if (prefix_on || total_on || client_on || (p->frag && svc->fragments.interval))
		v->now = now = v->now ? v->now : bpf_ktime_get_ns();	/* synproxy.h peeked */
	else
		now = bpf_ktime_get_coarse_ns();

	if (p->frag) {
		/* frag.h: a first fragment also pays for the later ones that
		 * went ahead of it; the service's fragment budget comes first */
		if (p->frag == AG_FRAG_FIRST)
			frag_take_pending(p, &cost);
		if (frag_over_budget(svc, svc_id, &cost, now)) {
			v->action = AG_ACT_DROP;
			v->monitor |= svc->monitor;
			v->reason = AG_R_FRAG_BUDGET;
			v->event = AG_EV_LIMITED;
			v->ev_bits = 0;	/* one bucket for the whole service */
			return 0;
		}
	}

	/* A proven client (proven.h) is not refused by the shared
	 * new-connection buckets; its SYNs are still charged there (below). */
	shared_syn = syn;
	proven_svc = syn && service_in(cfg->proven_services, svc_id);
	if (proven_svc && proven_client(cfg, p, svc_id, now, &ckey))
		shared_syn = 0;

	if (total_on) {
		ss = bpf_map_lookup_elem(&service_state, &svc_id);
		if (ss && (kind = peek_level(ss->tat, lt, &cost, shared_syn, now)) != AG_KIND_MAX)
			goto limited;
	}
	if (prefix_on) {
		level = AG_LEVEL_PREFIX;
		client_key(&pkey, p->addr, key_bits(p->family, cfg->prefix_bits4, cfg->prefix_bits6), svc_id);
		ps = bpf_map_lookup_elem(&prefixes, &pkey);
		if (ps && (kind = peek_level(ps->tat, lp, &cost, shared_syn, now)) != AG_KIND_MAX)
			goto limited;
	}
	/* synproxy.h: a handshake's ACK is judged here, between the checks
	 * that cost a flood nothing and the client's state */
	if (v->peek)
		return 0;

	/* Every service client has an entry: it carries the per-client counters
	 * behind "top clients" even when the service sets no client limit. */
	level = AG_LEVEL_CLIENT;
	if (!proven_svc)	/* else built for the proof above */
		client_key(&ckey, p->addr, cbits, svc_id);
	cs = bpf_map_lookup_elem(&clients, &ckey);
	if (!cs) {
		struct ag_client_state init = { .first_seen = seen_at(now), .last_seen = seen_at(now),
						 .packets = cost.packets, .bytes = cost.bytes };

		kind = charge_new(init.tat, lc, &cost, syn, now);
		init.drops = kind != AG_KIND_MAX;
		cs = insert_state(&clients, &ckey, &init, AG_STAT_CLIENT_INSERT,
				  AG_STAT_CLIENT_INSERT_FAIL, consts.client_capacity, v);
		if (!cs && kind != AG_KIND_MAX)
			goto limited;
	}
	if (cs) {
		cs->last_seen = seen_at(now);
		/* clients.h: telemetry, not a limit; plain adds (may undercount) */
		cs->packets += cost.packets;
		cs->bytes += cost.bytes;
		/* a service without client limits reads no TAT */
		if (client_on && (kind = limit_level(cs->tat, lc, &cost, syn, now)) != AG_KIND_MAX)
			goto limited;
	}

	if (prefix_on) {
		level = AG_LEVEL_PREFIX;
		if (!ps) {
			struct ag_service_state init = {};

			kind = charge_new(init.tat, lp, &cost, syn, now);
			ps = insert_state(&prefixes, &pkey, &init, AG_STAT_PREFIX_INSERT,
					  AG_STAT_PREFIX_INSERT_FAIL, consts.prefix_capacity, v);
			if (!ps && kind != AG_KIND_MAX)
				goto limited;
		}
		if (ps && (kind = limit_level(ps->tat, lp, &cost, shared_syn, now)) != AG_KIND_MAX)
			goto limited;
	}
	if (ss) {
		level = AG_LEVEL_SERVICE;
		if ((kind = limit_level(ss->tat, lt, &cost, shared_syn, now)) != AG_KIND_MAX)
			goto limited;
	}
	if (syn && !shared_syn) {
		if (ps)
			gcra_take(&ps->tat[AG_KIND_CPS], &lp[AG_KIND_CPS], 1, now, 1);
		if (ss)
			gcra_take(&ss->tat[AG_KIND_CPS], &lt[AG_KIND_CPS], 1, now, 1);
	}
	return 0;

limited:
	/* one event per limited bucket: a client, a prefix, or the whole service */
	if (level == AG_LEVEL_CLIENT)
		v->ev_bits = cbits;
	else if (level == AG_LEVEL_PREFIX)
		v->ev_bits = key_bits(p->family, cfg->prefix_bits4, cfg->prefix_bits6);
	else
		v->ev_bits = 0;
	v->action = AG_ACT_DROP;
	v->monitor |= svc->monitor;
	v->reason = limit_reason(level, kind);
	v->event = kind == AG_KIND_CPS ? AG_EV_SYN_LIMITED : AG_EV_LIMITED;
	if (cs)
		v->count = __sync_fetch_and_add(&cs->drops, 1) + 1;
	/* Only packet-rate refusals hold for every packet of this source until a
	 * known time. cs set means ckey was built: the drops can be handed to that
	 * client. */
	if (kind == AG_KIND_PPS && !v->monitor && cs) {
		if (level == AG_LEVEL_CLIENT)
			remember_refusal(p, cfg->generation, cs->tat[AG_KIND_PPS], &lc[AG_KIND_PPS], cs, &ckey, v);
		else if (level == AG_LEVEL_PREFIX && ps)
			remember_refusal(p, cfg->generation, ps->tat[AG_KIND_PPS], &lp[AG_KIND_PPS], cs, &ckey, v);
		else if (level == AG_LEVEL_SERVICE && ss)
			remember_refusal(p, cfg->generation, ss->tat[AG_KIND_PPS], &lt[AG_KIND_PPS], cs, &ckey, v);
	}
	return 0;
}

#endif
