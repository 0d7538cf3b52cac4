// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* apiguard datapath: one pipeline, two entry points (XDP and TC ingress).
 *
 *   parse -> allow -> deny -> bans -> [later fragment: its first fragment's ports]
 *         -> TCP flag sanity -> service match -> limits
 *
 * guard() decides; the single exit records the (action, reason) counter, turns a
 * drop into a counted pass in monitor mode and emits at most one throttled event. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "include/types.h"
#include "include/parse.h"
#include "include/maps.h"
#include "include/limit.h"
#include "include/events.h"
#include "include/frag.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keep the generated Go types even where no map names them. */
const enum ag_action ag_action_unused __attribute__((unused));
const enum ag_reason ag_reason_unused __attribute__((unused));
const enum ag_stat ag_stat_unused __attribute__((unused));
const enum ag_event_type ag_event_type_unused __attribute__((unused));
const enum ag_kind ag_kind_unused __attribute__((unused));
const enum ag_level ag_level_unused __attribute__((unused));
const enum ag_list ag_list_unused __attribute__((unused));
const struct ag_refusal *ag_refusal_unused __attribute__((unused));
const struct ag_event *ag_event_unused __attribute__((unused));

struct verdict {
	__u8 action;
	__u8 reason;
	__u8 event;		/* enum ag_event_type, 0 for none */
	__u8 monitor;		/* a drop becomes a counted pass */
	__u8 ev_bits;		/* the event names the source masked to this many bits */
	__u32 service;
	__u64 count;
	__u8 conn;		/* conntrack.h: 1 + policy slot of a service with an ACL or caps */
	__u8 proof;		/* proof.h: an ACK to a TCP service, which may complete a handshake */
	__u64 now;		/* the precise clock, when the verdict read it; else 0 */
};

/* conntrack: source ACLs and connection caps (needs struct verdict) */
#include "include/conntrack.h"

static __always_inline void *lpm_lookup(const struct pkt *p, void *map4, void *map6)
{
	if (p->family == 4) {
		struct ag_lpm4 k = { .prefixlen = 32 };

		__builtin_memcpy(k.addr, &p->addr[12], 4);
		return bpf_map_lookup_elem(map4, &k);
	}
	struct ag_lpm6 k6 = { .prefixlen = 128 };

	__builtin_memcpy(k6.addr, p->addr, 16);
	return bpf_map_lookup_elem(map6, &k6);
}

static __always_inline void *slot_lookup(__u32 slot, const struct pkt *p,
					 void *m4_0, void *m6_0, void *m4_1, void *m6_1)
{
	if (slot)
		return lpm_lookup(p, m4_1, m6_1);
	return lpm_lookup(p, m4_0, m6_0);
}

/* How many nested bans an address is looked up through when the narrowest
 * ones have expired (and are not swept yet): a host ban inside a prefix ban
 * inside a range is three. */
#ifndef AG_BAN_DEPTH
#define AG_BAN_DEPTH 4
#endif

/* An expired ban was the narrowest around the source: is a wider one in
 * force? The lookup goes on from just above the expired one's length. Global,
 * so the verifier walks the loop once rather than once for every way the guard
 * can reach it; only a source inside an expired ban not yet swept pays the call. */
__attribute__((noinline)) int banned_wider(const struct pkt *p, __u32 below)
{
	struct ag_lpm6 k = {};
	const struct ag_ban *ban;
	__u64 now = bpf_ktime_get_coarse_ns();

	if (!p)
		return 0;
	/* ag_lpm4 is ag_lpm6 cut short: the same key serves both tries */
	if (p->family == 4)
		__builtin_memcpy(k.addr, &p->addr[12], 4);
	else
		__builtin_memcpy(k.addr, p->addr, 16);
	for (int i = 0; i < AG_BAN_DEPTH - 1; i++) {
		/* 0: nothing wider (or a ban written before lengths were kept) */
		if (!below || below > 128)
			return 0;
		k.prefixlen = below - 1;
		if (p->family == 4)
			ban = bpf_map_lookup_elem(&bans4, &k);
		else
			ban = bpf_map_lookup_elem(&bans6, &k);
		if (!ban)
			return 0;
		if (!ban->expires || ban->expires > now)
			return 1;
		if (ban->prefixlen >= below)
			return 0;
		below = ban->prefixlen;
	}
	return 0;
}

/* Is the source inside a ban in force? The trie gives the narrowest ban; an
 * expired one must not shadow a wider ban still in force (the detector's
 * expired host ban inside its aggregate prefix ban, until the sweeper comes). */
static __always_inline int banned(const struct pkt *p)
{
	const struct ag_ban *ban = lpm_lookup(p, &bans4, &bans6);

	if (!ban)
		return 0;
	if (!ban->expires || ban->expires > bpf_ktime_get_coarse_ns())
		return 1;
	return banned_wider(p, ban->prefixlen);
}

static __always_inline int tcp_flags_bad(__u8 f)
{
	if (!(f & (TCPF_FIN | TCPF_SYN | TCPF_RST | TCPF_ACK)))
		return 1;		/* NULL, and PSH/URG-only probes */
	if ((f & TCPF_SYN) && (f & (TCPF_FIN | TCPF_RST)))
		return 1;		/* SYN+FIN, SYN+RST */
	if ((f & TCPF_FIN) && (f & TCPF_RST))
		return 1;
	if ((f & (TCPF_FIN | TCPF_PSH | TCPF_URG)) && !(f & TCPF_ACK))
		return 1;		/* XMAS (FIN+PSH+URG) and FIN/PSH/URG without ACK */
	return 0;
}

static __always_inline __u8 limit_reason(__u32 level, __u32 kind)
{
	return AG_R_CLIENT_PPS + level * AG_KIND_MAX + kind;
}

/* Per-CPU count of inserts above the map's share of this CPU: past it, inserts evict. */
static __always_inline int under_pressure(__u32 stat_insert, __u32 capacity)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &stat_insert);

	return n && *n * consts.nr_cpus > capacity;
}

static __always_inline __u32 refusal_slot(const struct pkt *p)
{
	const __u32 *w = (const __u32 *)p->addr;
	__u64 h = ((__u64)p->proto << 16 | p->dport) * 0x9e3779b97f4a7c15ULL;

	h ^= (__u64)w[0] * 0xc2b2ae3d27d4eb4fULL;
	h ^= (__u64)w[1] * 0x165667b19e3779f9ULL;
	h ^= (__u64)w[2] * 0x27d4eb2f165667c5ULL;
	h ^= (__u64)w[3] * 0x94d049bb133111ebULL;
	return (h ^ (h >> 31)) & (AG_REFUSAL_SLOTS - 1);
}

static __always_inline int refusal_matches(const struct ag_refusal *r, const struct pkt *p,
					   __u32 generation)
{
	const __u64 *a = (const __u64 *)r->addr, *b = (const __u64 *)p->addr;

	return r->generation == generation && r->dport == p->dport && r->proto == p->proto &&
	       a[0] == b[0] && a[1] == b[1];
}

/* Drops the packet when a packet-rate bucket refused this very source for
 * this port moments ago and will refuse it until a known time. Exact: the
 * bucket would refuse it too. It runs before the allow list: a source that
 * could be refused is not allow-listed in this policy, and a policy change
 * (new generation) forgets every entry. */
static __always_inline int refused(const struct pkt *p, __u32 generation, struct verdict *v)
{
	__u32 idx = refusal_slot(p);
	struct ag_refusal *r = bpf_map_lookup_elem(&refusals, &idx);

	if (!r || !r->until || !refusal_matches(r, p, generation) || bpf_ktime_get_ns() >= r->until)
		return 0;
	r->packets++;
	r->bytes += p->len;
	v->action = AG_ACT_DROP;
	v->reason = r->reason;
	v->service = r->client.service;
	return 1;
}

/* Adds the drops a refusal entry made to its client's state: the entry is
 * about to be reused. (Readers of client state add the pending ones too.) */
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

/* Remembers a packet-rate refusal, and hands the drops the entry it replaces
 * made to that entry's client. */
static __always_inline void remember_refusal(const struct pkt *p, __u32 generation, __u64 tat,
					     const struct ag_limit *l, struct ag_client_state *cs,
					     const struct ag_client_key *ckey, struct verdict *v)
{
	__u32 idx = refusal_slot(p);
	struct ag_refusal *r = bpf_map_lookup_elem(&refusals, &idx);

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

static __always_inline void key_for(struct ag_client_key *key, const struct pkt *p,
				    __u32 bits4, __u32 bits6, __u32 svc_id)
{
	mask_addr(key->addr, p->addr, p->family == 4 ? 96 + bits4 : bits6);
	key->service = svc_id;
	key->_pad = 0;
}

/* Inserts a new entry whose first packet is already charged. Returns the entry
 * another CPU inserted first (the caller charges it normally), or NULL. */
static __always_inline void *insert_state(void *map, struct ag_client_key *key, void *init,
					  __u32 stat_insert, __u32 stat_fail, __u32 capacity,
					  struct verdict *v)
{
	long err = bpf_map_update_elem(map, key, init, BPF_NOEXIST);

	if (!err) {
		stat_inc(stat_insert);
		if (under_pressure(stat_insert, capacity)) {
			v->event = AG_EV_MAP_PRESSURE;
			v->ev_bits = 0; /* about the map, not a client */
		}
		return NULL;
	}
	if (err == -17 /* EEXIST */)
		return bpf_map_lookup_elem(map, key);
	stat_inc(stat_fail);
	return NULL;
}

/* Limits, cheapest refusal first. A flood that is over the service total, or
 * comes from a known prefix that is over its limit, is dropped by a read-only
 * check before any per-client state is created or charged: a random-source
 * flood costs an array read, not an LRU insert per packet. Then the client,
 * prefix and service buckets are charged in that order. */
static __always_inline void apply_limits(const struct pkt *p, const struct ag_config *cfg,
					 __u32 slot, __u32 svc_id, struct verdict *v)
{
	__u32 idx = slot * AG_MAX_SERVICES + svc_id;
	const struct ag_service *svc = bpf_map_lookup_elem(&services, &idx);
	int syn = p->proto == IPPROTO_TCP && (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN;
	int shared_syn, proven_svc;
	const struct ag_limit *lc, *lp, *lt;
	struct ag_service_state *ss = NULL, *ps = NULL;
	struct ag_client_state *cs = NULL;
	struct ag_client_key ckey, pkey;
	int kind = AG_KIND_MAX, prefix_on, total_on;
	__u32 level = AG_LEVEL_SERVICE;
	struct ag_cost cost = { .packets = 1, .bytes = p->len };
	__u64 now;

	v->service = svc_id;
	v->reason = AG_R_OK;
	if (!svc)
		return;
	lc = svc->limits[AG_LEVEL_CLIENT];
	lp = svc->limits[AG_LEVEL_PREFIX];
	lt = svc->limits[AG_LEVEL_SERVICE];
	prefix_on = level_limited(lp);
	total_on = level_limited(lt);
	/* The precise clock costs as much as the rest of a drop (a TSC read in
	 * a VM): a service without limits only needs it for last_seen, which
	 * the coarse one (a tick) serves. */
	if (prefix_on || total_on || level_limited(lc) || (p->frag && svc->fragments.interval))
		v->now = now = bpf_ktime_get_ns();
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
			return;
		}
	}

	/* A client the server sent data to recently (conntrack.h prove_client)
	 * is not refused by the shared new-connection buckets: a spoofed SYN
	 * flood fills them, and must not lock out the clients the server
	 * already talks to. Its SYNs are still charged there (below). */
	shared_syn = syn;
	proven_svc = syn && ((cfg->proven_services >> svc_id) & 1);
	if (proven_svc) {
		__u64 *seen;

		key_for(&ckey, p, cfg->client_bits4, cfg->client_bits6, svc_id);
		seen = bpf_map_lookup_elem(&proven, &ckey);
		if (seen && now - *seen < cfg->proven_ttl) {
			shared_syn = 0;
			stat_inc(AG_STAT_PROVEN_SYN);
		}
	}

	if (total_on) {
		ss = bpf_map_lookup_elem(&service_state, &svc_id);
		if (ss && (kind = peek_level(ss->tat, lt, &cost, shared_syn, now)) != AG_KIND_MAX)
			goto limited;
	}
	if (prefix_on) {
		level = AG_LEVEL_PREFIX;
		key_for(&pkey, p, cfg->prefix_bits4, cfg->prefix_bits6, svc_id);
		ps = bpf_map_lookup_elem(&prefixes, &pkey);
		if (ps && (kind = peek_level(ps->tat, lp, &cost, shared_syn, now)) != AG_KIND_MAX)
			goto limited;
	}

	/* Every service client has an entry: it carries the per-client counters
	 * behind "top clients" even when the service sets no client limit. */
	level = AG_LEVEL_CLIENT;
	if (!proven_svc)	/* else built for the proof above */
		key_for(&ckey, p, cfg->client_bits4, cfg->client_bits6, svc_id);
	cs = bpf_map_lookup_elem(&clients, &ckey);
	if (!cs) {
		struct ag_client_state init = { .first_seen = now, .last_seen = now,
						 .packets = cost.packets, .bytes = cost.bytes };

		kind = charge_new(init.tat, lc, &cost, syn, now);
		init.drops = kind != AG_KIND_MAX;
		cs = insert_state(&clients, &ckey, &init, AG_STAT_CLIENT_INSERT,
				  AG_STAT_CLIENT_INSERT_FAIL, consts.client_capacity, v);
		if (!cs && kind != AG_KIND_MAX)
			goto limited;
	}
	if (cs) {
		cs->last_seen = now;
		__sync_fetch_and_add(&cs->packets, cost.packets);
		__sync_fetch_and_add(&cs->bytes, cost.bytes);
		kind = limit_level(cs->tat, lc, &cost, syn, now);
		if (kind != AG_KIND_MAX)
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
	return;

limited:
	/* one event per limited bucket: a client, a prefix, or the whole service */
	if (level == AG_LEVEL_CLIENT)
		v->ev_bits = p->family == 4 ? 96 + cfg->client_bits4 : cfg->client_bits6;
	else if (level == AG_LEVEL_PREFIX)
		v->ev_bits = p->family == 4 ? 96 + cfg->prefix_bits4 : cfg->prefix_bits6;
	else
		v->ev_bits = 0;
	v->action = AG_ACT_DROP;
	v->monitor |= svc->monitor;
	v->reason = limit_reason(level, kind);
	v->event = kind == AG_KIND_CPS ? AG_EV_SYN_LIMITED : AG_EV_LIMITED;
	if (cs)
		v->count = __sync_fetch_and_add(&cs->drops, 1) + 1;
	/* Only packet-rate refusals hold for every packet of this source until a
	 * known time; bytes depend on the size, connections only on SYNs. */
	/* cs set means ckey was built: the drops can be handed to that client */
	if (kind == AG_KIND_PPS && !v->monitor && cs) {
		if (level == AG_LEVEL_CLIENT)
			remember_refusal(p, cfg->generation, cs->tat[AG_KIND_PPS], &lc[AG_KIND_PPS], cs, &ckey, v);
		else if (level == AG_LEVEL_PREFIX && ps)
			remember_refusal(p, cfg->generation, ps->tat[AG_KIND_PPS], &lp[AG_KIND_PPS], cs, &ckey, v);
		else if (level == AG_LEVEL_SERVICE && ss)
			remember_refusal(p, cfg->generation, ss->tat[AG_KIND_PPS], &lt[AG_KIND_PPS], cs, &ckey, v);
	}
}

static __always_inline void guard(struct pkt *p, int parsed, struct verdict *v)
{
	__u32 zero = 0, slot, port_idx, *svc_id, *list;
	const struct ag_config *cfg;
	const __u32 *slotp;

	v->action = AG_ACT_PASS;
	v->reason = AG_R_OK;
	v->count = 1;
	v->ev_bits = 128;

	slotp = bpf_map_lookup_elem(&active, &zero);
	slot = slotp && *slotp ? 1 : 0;
	cfg = bpf_map_lookup_elem(&config, &slot);
	if (!cfg)
		return;
	v->monitor = cfg->monitor;

	if (parsed == AG_R_NOT_IP) {
		/* ARP and friends keep the host reachable, unless a deny entry names
		 * an ARP sender */
		v->reason = AG_R_NOT_IP;
		if (p->arp) {
			list = slot_lookup(slot, p, &lists4_0, &lists6_0, &lists4_1, &lists6_1);
			if (list && *list == AG_LIST_DENY) {
				v->action = AG_ACT_DROP;
				v->reason = AG_R_DENY;
				v->event = AG_EV_DENY_HIT;
			}
		}
		return;
	}
	if (parsed != AG_R_OK) {
		v->action = AG_ACT_DROP;
		v->reason = parsed;
		return;
	}
	if ((p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) && p->frag != AG_FRAG_LATER &&
	    refused(p, cfg->generation, v))
		return;
	list = slot_lookup(slot, p, &lists4_0, &lists6_0, &lists4_1, &lists6_1);
	if (list && *list == AG_LIST_ALLOW) {
		v->reason = AG_R_ALLOW;
		return;
	}
	if (list && *list == AG_LIST_DENY) {
		v->action = AG_ACT_DROP;
		v->reason = AG_R_DENY;
		v->event = AG_EV_DENY_HIT;
		return;
	}
	if (p->family == 6 && pkt_is_icmp(p) && p->icmp_type >= AG_ICMPV6_NDP_FIRST &&
	    p->icmp_type <= AG_ICMPV6_NDP_LAST) {
		v->reason = AG_R_NDP;
		return;
	}
	if (banned(p)) {
		v->action = AG_ACT_DROP;
		v->reason = AG_R_BAN;
		v->event = AG_EV_BAN_HIT;
		return;
	}
	/* frag.h: a later fragment goes on as its first fragment did, or is an
	 * orphan that belongs to no service */
	if (p->frag == AG_FRAG_LATER && !frag_recall(p)) {
		v->reason = AG_R_FRAGMENT;
		if (cfg->default_drop)
			v->action = AG_ACT_DROP;
		if (!cfg->default_drop || v->monitor)
			frag_note_orphan(p);
		return;
	}
	/* frag.h: the kernel keeps a datagram's first first fragment */
	if (p->frag == AG_FRAG_FIRST && frag_twin(p)) {
		v->action = AG_ACT_DROP;
		v->reason = AG_R_FRAGMENT;
		return;
	}
	if (pkt_is_icmp(p)) {
		v->reason = AG_R_ICMP;
		return;
	}
	/* a later fragment has no flags: its first fragment's were checked */
	if (p->proto == IPPROTO_TCP && p->frag != AG_FRAG_LATER && cfg->tcp_flag_sanity &&
	    tcp_flags_bad(p->tcp_flags)) {
		v->action = AG_ACT_DROP;
		v->reason = AG_R_TCP_FLAGS;
		v->event = AG_EV_BAD_FLAGS;
		return;
	}

	svc_id = NULL;
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
		port_idx = slot * AG_PORT_SLOT + (p->proto == IPPROTO_UDP ? 65536 : 0) + p->dport;
		svc_id = bpf_map_lookup_elem(&ports, &port_idx);
	}
	if (!svc_id || !*svc_id || *svc_id >= AG_MAX_SERVICES) {
		/* DHCP and DHCPv6 replies keep the host's address, even under default drop */
		if (p->proto == IPPROTO_UDP && ((p->sport == 67 && p->dport == 68) ||
						(p->sport == 547 && p->dport == 546))) {
			v->reason = AG_R_HOST;
			return;
		}
		v->reason = AG_R_NO_SERVICE;
		if (cfg->default_drop)
			v->action = AG_ACT_DROP;
		if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN)
			v->event = AG_EV_NO_SERVICE;
		return;
	}
	/* conntrack: a refused source costs no bucket; services without an ACL or caps cost one bit test */
	if (conn_acl_refused(p, cfg, slot, *svc_id, v))
		return;
	apply_limits(p, cfg, slot, *svc_id, v);
	conn_mark(p, cfg, slot, *svc_id, v); /* conntrack: capped services go to conn_track_ingress */
	/* proof: an ACK that may complete a handshake goes to proof_track_ingress */
	v->proof = cfg->prove_sources && p->proto == IPPROTO_TCP &&
		   (p->tcp_flags & (TCPF_SYN | TCPF_RST | TCPF_ACK)) == TCPF_ACK;
	if (p->frag != AG_FRAG_LATER) /* no TCP header: nothing for the state machine */
		conn_mark(p, cfg, slot, *svc_id, v); /* conntrack: capped services go to conn_track_ingress */
}

/* The single exit: monitor conversion, the counter, the event. */
static __always_inline int record(const struct pkt *p, struct verdict *v)
{
	__u32 idx;
	struct ag_counter *c;

	if (v->action == AG_ACT_DROP && v->monitor)
		v->action = AG_ACT_MONITOR;
	idx = v->action * AG_R_MAX + v->reason;
	c = bpf_map_lookup_elem(&counters, &idx);
	if (c) {
		c->packets += 1;
		c->bytes += p->len;
	}
	if (v->event)
		emit_event(p, v->event, v->reason, v->action, v->service, v->count, v->ev_bits, v->now);
	return v->action;
}

/* Benchmarks only (dead code otherwise: the constant is frozen before verification).
 * prog.Run reuses one buffer, so the source is redrawn per run to make the client
 * maps work like they do under many clients; baseline_pass pays the same draw. */
static __always_inline void bench_cycle_source(struct pkt *p)
{
	__u32 i;

	if (!consts.bench_cycle)
		return;
	i = bpf_get_prandom_u32() % consts.bench_cycle;
	p->addr[13] = i >> 16;
	p->addr[14] = i >> 8;
	p->addr[15] = i;
}

/* ctx and tc (a constant) are for the conntrack hook's parse */
static __always_inline int run_guard(void *ctx, int tc, void *data, void *data_end, __u32 len)
{
	struct pkt p = { .len = len };
	struct verdict v = {};
	int parsed;

	parsed = parse_packet(data, data_end, &p);
	bench_cycle_source(&p);
	guard(&p, parsed, &v);
	conn_track_ingress(ctx, tc, &p, &v); /* conntrack: the client's side of capped services */
	proof_track_ingress(ctx, tc, &p, &v); /* proof: handshakes completing */
	/* frag.h: a first fragment let through leads its later fragments (an
	 * allow-listed source's pass the allow list on their own; one that could
	 * not be read, in monitor mode, has no ports to lend) */
	if (p.frag == AG_FRAG_FIRST && parsed == AG_R_OK && (v.action == AG_ACT_PASS || v.monitor) &&
	    v.reason != AG_R_ALLOW)
		frag_remember(&p);
	return record(&p, &v);
}

SEC("xdp")
int apiguard_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return run_guard(ctx, 0, data, data_end, data_end - data) == AG_ACT_DROP ? XDP_DROP : XDP_PASS;
}

SEC("tc")
int apiguard_tc(struct __sk_buff *skb)
{
	void *data, *data_end;

	/* headers may sit in paged data on some drivers: make the first bytes linear */
	if (skb->data + 128 > skb->data_end)
		bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	return run_guard(skb, 1, data, data_end, skb->len) == AG_ACT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Benchmark baseline: the trivial program every prog.Run figure is measured against. */
SEC("xdp")
int baseline_pass(struct xdp_md *ctx)
{
	struct pkt p = {};

	bench_cycle_source(&p);
	/* keep the draw: the compiler must not drop it as dead */
	asm volatile("" : : "r"(p.addr[15]) : "memory");
	return XDP_PASS;
}

/* A segment without a socket: forwarded (from a container or a VM behind
 * another interface; trusted, with data: docs/conntrack.md), or a SYN
 * cookie's SYN-ACK (which came in through no interface). One that came in
 * through a guarded interface (the very one it leaves by, or another) was
 * routed through by a host that forwards: a host on that link wrote it, with
 * any source port and destination it liked; no service of this host sent
 * it. */
static __always_inline __u8 sender_unowned(struct __sk_buff *skb)
{
	__u32 iif = skb->ingress_ifindex;

	if (iif && (iif == skb->ifindex || bpf_map_lookup_elem(&guarded_ifaces, &iif)))
		return AG_SENDER_FORGED;
	return AG_SENDER_FORWARDED;
}

/* Who sent a segment leaving through the egress hook (proof.h). Proven
 * clients and proven sources take a segment from a local socket only when the
 * socket is a TCP connection past its handshake: not a raw or packet socket
 * forging a service's segments (CAP_NET_RAW is enough for either), not a
 * request or TIME_WAIT socket (or the per-CPU control socket that sends
 * resets and their ACKs), and not a Fast Open child whose handshake never
 * completed. Such a child is created by a SYN with data and may answer it at
 * once; closed, it moves on to FIN_WAIT1 without any ACK from its peer, so
 * its state alone proves nothing. What does is an RTT sample: the kernel
 * takes one only from an acceptable ACK of what the socket sent (the SYN-ACK
 * first), which a blind spoofer cannot write. Forwarded packets have no
 * socket here (sender_unowned). */
static __always_inline __u8 sender_of(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	struct bpf_tcp_sock *tp;

	if (!sk)
		return sender_unowned(skb);
	if (sk->state == BPF_TCP_NEW_SYN_RECV)
		return AG_SENDER_REQUEST;	/* the kernel's SYN-ACK (or its ACK to a half-open connection) */
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return AG_SENDER_FORGED;	/* a TIME_WAIT socket */
	/* Type 0 is no real socket: BPF_PROG_TEST_RUN gives its skbs a
	 * placeholder of type 0, and every socket that sends has a type. */
	if (!sk->type)
		return sender_unowned(skb);
	if (sk->family != 2 /* AF_INET */ && sk->family != 10 /* AF_INET6 */)
		return AG_SENDER_FORGED;	/* a packet socket writing whole frames */
	if (sk->type != 1 /* SOCK_STREAM */ || sk->protocol != IPPROTO_TCP)
		return AG_SENDER_FORGED;
	switch (sk->state) {
	case BPF_TCP_ESTABLISHED:
	case BPF_TCP_FIN_WAIT1:
	case BPF_TCP_FIN_WAIT2:
	case BPF_TCP_CLOSE_WAIT:
	case BPF_TCP_LAST_ACK:
	case BPF_TCP_CLOSING:
		break;
	default:
		return AG_SENDER_FORGED;
	}
	tp = bpf_tcp_sock(sk);
	if (!tp || !tp->srtt_us)
		return AG_SENDER_FORGED;	/* its peer never acknowledged anything */
	return AG_SENDER_CONNECTED;
}

/* conntrack: TC egress on the guarded interface, the server's side of capped
 * services' connections, of proven clients (include/conntrack.h) and of
 * proven sources (include/proof.h). It never drops; TC_ACT_UNSPEC lets any
 * later program or filter decide. */
SEC("tc")
int apiguard_egress(struct __sk_buff *skb)
{
	/* TCP builds its headers in the linear area: pull only when they are not
	 * (a pull on a cloned skb copies its head) */
	if (skb->data + 128 > skb->data_end && skb->data_end - skb->data < skb->len)
		bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128);
	conn_track_egress((void *)(long)skb->data, (void *)(long)skb->data_end, sender_of(skb));
	return TC_ACT_UNSPEC;
}

/* conntrack: the flow sweeper, run by the daemon through BPF_PROG_TEST_RUN. It
 * releases idle flows and deletes closed ones after their linger with the same
 * CAS as the datapath, and writes struct ag_sweep into the packet buffer. */
SEC("xdp")
int apiguard_flow_sweep(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ag_sweep s = { .now = bpf_ktime_get_coarse_ns() };
	__u32 zero = 0;
	const __u32 *slotp = bpf_map_lookup_elem(&active, &zero);

	s.slot = slotp && *slotp ? 1 : 0;
	bpf_for_each_map_elem(&flows, flow_sweep_one, &s, 0);
	if (data + sizeof(s) <= data_end)
		__builtin_memcpy(data, &s, sizeof(s));
	return XDP_PASS;
}
