/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking: TCP connection caps, with the connections to capped
 * services followed in the kernel (types in conntrack_types.h, maps in
 * conntrack_map.h; source ACLs are acl.h). docs/conntrack.md has the design,
 * its trade-offs and the figures.
 *
 * The ingress guard sees client -> server packets; apiguard_egress, a TC egress
 * program on the same interface, sees the server's replies. A bounded hash
 * table follows each connection:
 *
 *   client SYN -> SYN_SENT -> server SYN-ACK -> SYN_RECV -> client ACK of the
 *   server's ISN -> ESTABLISHED -> client FIN -> FIN_WAIT
 *
 * and from any of those: server FIN or RST -> CLOSED, client RST -> RESET,
 * idle past the timeout -> EXPIRED. SYN_SENT and SYN_RECV hold a half-open
 * slot, ESTABLISHED and FIN_WAIT an established one, in the client's count and
 * in the service's total. A client's FIN does not free its slot: the server's
 * FIN does (a forged FIN would otherwise buy a connection past the cap).
 *
 * Exactly once: every state change is a compare-and-swap of the state word,
 * and only the CPU that wins it moves the counts. Whoever gets there first (the
 * datapath on either direction, a lazy timeout on lookup, or the sweeper)
 * releases a flow's slot; the others lose the CAS and do nothing. Entries are
 * deleted only by the sweeper, after a linger, and only after it won a CAS to
 * DEAD, which no other transition leaves: a delete never races a reuse.
 *
 * The server's own packets are trusted: a reply on a connection the table does
 * not follow (begun before its service had caps, or when the table was full)
 * adopts it as established. A client's RST frees the slot at once; if it was
 * forged (out of window) the server's challenge ACK, which does not acknowledge
 * the RST's sequence number, adopts the connection again.
 *
 * Contract: the ingress pipeline marks a capped service's TCP packet it let
 * through (or drop that monitor mode passes) with conn_mark() and hands it to
 * conn_ingress() after the verdict, which may refuse a SYN; the egress program
 * hands the server's segments of a capped service to conn_egress(); the
 * sweeper program walks the table with flow_sweep_one(). */
#ifndef APIGUARD_CONNTRACK_H
#define APIGUARD_CONNTRACK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "addr.h"
#include "config.h"
#include "counters.h"
#include "gcra.h"
#include "parse.h"
#include "conntrack_types.h"
#include "conntrack_map.h"
#include "lists.h"

static __always_inline int flow_counted(__u32 st)
{
	return st >= AG_FLOW_SYN_SENT && st <= AG_FLOW_FIN_WAIT;
}

/* The count unit a state holds. */
static __always_inline __u64 flow_unit(__u32 st)
{
	return st <= AG_FLOW_SYN_RECV ? AG_HALF_ONE : 1;
}

/* Takes unit in the count word *w unless a cap refuses. Returns -1 when
 * nothing could be taken (the entry is being deleted, or other CPUs kept
 * winning), else 0 or the cap that refused: 1 established (which bounds
 * established and half-open together, since every handshake may complete),
 * 2 half-open. The unit is taken when 0 is returned, and with force also over
 * a cap (monitor mode and adoption count what they let through). */
static __always_inline int count_take(__u64 *w, __u64 unit, __u32 max_est, __u32 max_half, int force)
{
#pragma unroll
	for (int i = 0; i < AG_CAS_TRIES; i++) {
		__u64 old = *(volatile __u64 *)w;
		__u32 est = old, half = old >> 32;
		int refuse = 0;

		if (old == AG_COUNT_DEAD)
			return -1;
		if (max_est && est + half >= max_est)
			refuse = 1;
		else if (max_half && half >= max_half)
			refuse = 2;
		if (refuse && !force)
			return refuse;
		if (__sync_val_compare_and_swap(w, old, old + unit) == old)
			return refuse;
	}
	stat_inc(AG_STAT_CAS_CONTENDED);
	return -1;
}

/* Gives back unit of a client's count; the last one out deletes the entry,
 * unless a SYN took a slot in between (the CAS to DEAD then fails). */
static __always_inline void client_put(struct ag_client_key *ck, __u64 unit)
{
	__u64 *w = bpf_map_lookup_elem(&conn_clients, ck);

	if (!w) {
		stat_inc(AG_STAT_FLOW_COUNT_MISSING);
		return;
	}
	if (__sync_fetch_and_add(w, -unit) != unit)
		return;
	if (__sync_val_compare_and_swap(w, 0, AG_COUNT_DEAD) == 0)
		bpf_map_delete_elem(&conn_clients, ck);
}

static __always_inline void total_add(__u32 svc, __u64 delta)
{
	__u64 *w = bpf_map_lookup_elem(&conn_totals, &svc);

	if (w)
		__sync_fetch_and_add(w, delta);
}

static __always_inline void conn_put(struct ag_client_key *ck, __u32 svc, __u64 unit)
{
	client_put(ck, unit);
	total_add(svc, -unit);
}

static __always_inline __u8 cap_reason(int refused, int client)
{
	if (client)
		return refused == 1 ? AG_R_CONN_CLIENT_ESTABLISHED : AG_R_CONN_CLIENT_HALF_OPEN;
	return refused == 1 ? AG_R_CONN_SERVICE_ESTABLISHED : AG_R_CONN_SERVICE_HALF_OPEN;
}

/* Takes a slot of unit for a connection of ck's client to service svc, in the
 * client's count and the service total, checking cs's caps (none when cs is
 * NULL). The first cap that refuses is named in *reason (AG_R_CONN_*), or
 * AG_R_FLOW_TABLE_FULL when the count table had no room. Returns 1 when the
 * slot is taken: with force that includes a slot over a cap. */
static __always_inline int conn_take(struct ag_client_key *ck, __u32 svc, __u64 unit,
				     const struct ag_conn_service *cs, int force, __u8 *reason)
{
	__u32 ce = 0, ch = 0, te = 0, th = 0;
	__u64 *cw, *tw, init = unit;
	long err;
	int r;

	if (cs) {
		ce = cs->client_established;
		ch = cs->client_half_open;
		te = cs->total_established;
		th = cs->total_half_open;
	}
	tw = bpf_map_lookup_elem(&conn_totals, &svc);
	if (!tw)
		return 0;
	cw = bpf_map_lookup_elem(&conn_clients, ck);
	if (!cw) {
		/* a client with no connection: caps are at least 1, nothing refuses it */
		err = bpf_map_update_elem(&conn_clients, ck, &init, BPF_NOEXIST);
		if (!err)
			goto client_done;
		if (err != -AG_EEXIST) {
			stat_inc(AG_STAT_FLOW_TABLE_FULL);
			*reason = AG_R_FLOW_TABLE_FULL;
			return 0;
		}
		cw = bpf_map_lookup_elem(&conn_clients, ck);
		if (!cw) {
			stat_inc(AG_STAT_FLOW_BUSY);
			return 0;
		}
	}
	r = count_take(cw, unit, ce, ch, force);
	if (r < 0) {
		stat_inc(AG_STAT_FLOW_BUSY);
		return 0;
	}
	if (r) {
		*reason = cap_reason(r, 1);
		if (!force)
			return 0;
	}
client_done:
	r = count_take(tw, unit, te, th, force);
	if (r && !*reason && r > 0)
		*reason = cap_reason(r, 0);
	if (r < 0 || (r > 0 && !force)) {
		client_put(ck, unit);
		return 0;
	}
	return 1;
}

static __always_inline void flow_client_key(struct ag_client_key *ck, const struct ag_flow_key *key,
					    const struct ag_flow *f)
{
	client_key(ck, key->client, f->client_bits, f->service);
}

/* Moves a counted flow to an uncounted state and gives its slot back, if this
 * CPU wins the CAS from old. The count's key is read first: a counted flow's
 * fields do not change, and once it is uncounted a reuse may rewrite them. */
static __always_inline int flow_release(const struct ag_flow_key *key, struct ag_flow *f,
					__u32 old, __u32 to, __u32 seq, __u64 linger_until,
					struct ag_client_key *ck)
{
	__u32 svc = f->service & (AG_MAX_SERVICES - 1);

	flow_client_key(ck, key, f);
	if (__sync_val_compare_and_swap(&f->state, old, to) != old)
		return 0;
	f->deadline = linger_until;
	f->seq = seq;
	conn_put(ck, svc, flow_unit(old));
	return 1;
}

/* A half-open flow completes its handshake: its slot moves to established. */
static __always_inline int flow_promote(const struct ag_flow_key *key, struct ag_flow *f,
					__u32 old, __u32 to, struct ag_client_key *ck)
{
	__u32 svc = f->service & (AG_MAX_SERVICES - 1);
	__u64 *w;

	flow_client_key(ck, key, f);
	if (__sync_val_compare_and_swap(&f->state, old, to) != old)
		return 0;
	w = bpf_map_lookup_elem(&conn_clients, ck);
	if (w)
		__sync_fetch_and_add(w, 1 - AG_HALF_ONE);
	else
		stat_inc(AG_STAT_FLOW_COUNT_MISSING);
	total_add(svc, 1 - AG_HALF_ONE);
	return 1;
}

/* The flow's state, after releasing it first if it sat idle past its deadline. */
static __always_inline __u32 flow_state_now(const struct ag_flow_key *key, struct ag_flow *f,
					    __u64 now, __u64 linger, struct ag_client_key *ck)
{
	__u32 st = *(volatile __u32 *)&f->state;

	if (flow_counted(st) && f->deadline < now) {
		if (flow_release(key, f, st, AG_FLOW_EXPIRED, 0, now + linger, ck))
			stat_inc(AG_STAT_FLOW_EXPIRED);
		st = *(volatile __u32 *)&f->state;
	}
	return st;
}

/* Established flows stay alive while packets flow either way. The deadline is
 * written only when it moves by a sixteenth of the timeout, so a busy flow
 * costs a read, not a cache line bouncing between the ingress and egress CPUs. */
static __always_inline void flow_refresh(struct ag_flow *f, __u64 now, __u64 timeout)
{
	__u64 want = now + timeout;

	if (want > f->deadline + (timeout >> 4))
		f->deadline = want;
}

/* Creates the flow with its slot already taken, or takes over key's uncounted
 * entry f (a reused port). On failure the slot is given back; returns 1 on
 * success, 0 when the table is full, -1 when the entry was busy. */
static __always_inline int flow_put(struct ag_flow_key *key, struct ag_flow *f, __u32 st,
				    struct ag_flow *init, struct ag_client_key *ck)
{
	long err;

	if (!f) {
		err = bpf_map_update_elem(&flows, key, init, BPF_NOEXIST);
		if (!err)
			return 1;
		conn_put(ck, init->service, flow_unit(init->state));
		if (err == -AG_EEXIST) {
			stat_inc(AG_STAT_FLOW_BUSY);
			return -1;
		}
		stat_inc(AG_STAT_FLOW_TABLE_FULL);
		return 0;
	}
	if (st == AG_FLOW_DEAD)
		goto busy;
	f->created = init->created;
	f->deadline = init->deadline;
	f->seq = init->seq;
	f->service = init->service;
	f->client_bits = init->client_bits;
	f->adopted = init->adopted;
	if (__sync_val_compare_and_swap(&f->state, st, init->state) == st)
		return 1;
busy:
	conn_put(ck, init->service, flow_unit(init->state));
	stat_inc(AG_STAT_FLOW_BUSY);
	return -1;
}

static __always_inline __u32 flow_bits(const struct ag_conn_service *cs, __u8 family)
{
	return key_bits(family, cs->client_bits4, cs->client_bits6);
}

static __always_inline void conn_refuse(struct verdict *v, __u8 reason, __u8 bits)
{
	v->action = AG_ACT_DROP;
	v->reason = reason;
	v->event = AG_EV_CONN_LIMITED;
	/* a client cap's event names the client key, a service cap's the service */
	v->ev_bits = reason <= AG_R_CONN_CLIENT_HALF_OPEN ? bits : 0;
}

/* A SYN for a connection the table does not follow: caps, then a flow.
 * passing: the guard let the packet through (else a drop monitor mode passes). */
static __always_inline void conn_admit(const struct pkt *p, struct verdict *v, struct ct_work *w,
				       struct ag_flow *f, __u32 st, const struct ag_conn_service *cs,
				       __u64 now, int passing)
{
	struct ag_flow *init = &w->init;
	/* what monitor mode or an earlier monitored drop lets through is counted */
	int force = !passing || v->monitor || cs->monitor;
	__u8 reason = 0;
	int r;

	__builtin_memset(init, 0, sizeof(*init));
	init->deadline = now + cs->half_open_timeout;
	init->created = now;
	init->state = AG_FLOW_SYN_SENT;
	init->service = cs->id;
	init->client_bits = flow_bits(cs, p->family);
	if (st == AG_FLOW_DEAD) {
		stat_inc(AG_STAT_FLOW_BUSY);
		goto full;
	}
	client_key(&w->ck, p->addr, init->client_bits, cs->id);
	if (!conn_take(&w->ck, cs->id, AG_HALF_ONE, cs, force, &reason)) {
		if (reason && reason != AG_R_FLOW_TABLE_FULL) {
			conn_refuse(v, reason, init->client_bits);
			v->monitor |= cs->monitor;
			return;
		}
		goto full;
	}
	r = flow_put(&w->key, f, st, init, &w->ck);
	if (r > 0) {
		stat_inc(AG_STAT_FLOW_NEW);
		if (reason && passing) {
			/* over a cap in monitor mode: counted as a would-be drop */
			conn_refuse(v, reason, init->client_bits);
			v->monitor = 1;
		}
		return;
	}
	if (r < 0)
		return;	/* another CPU has the same SYN in hand: it decides */
full:
	if (!passing)
		return;
	v->reason = AG_R_FLOW_TABLE_FULL;
	v->event = AG_EV_FLOW_TABLE_FULL;
	v->ev_bits = 0;
	if (cs->fail_closed) {
		v->action = AG_ACT_DROP;
		v->monitor |= cs->monitor;
	}
}

/* The client's side of the state machine. */
static __always_inline void conn_follow(const struct pkt *p, struct verdict *v, struct ct_work *w,
					const struct ag_conn_service *cs)
{
	struct ag_flow_key *key = &w->key;
	int passing = v->action == AG_ACT_PASS;
	struct ag_flow *f;
	__u32 st = 0;
	__u64 now;

	__builtin_memcpy(key->client, p->addr, 16);
	__builtin_memcpy(key->server, p->dst, 16);
	key->cport = p->sport;
	key->sport = p->dport;
	now = bpf_ktime_get_coarse_ns();
	f = bpf_map_lookup_elem(&flows, key);
	if (f)
		st = flow_state_now(key, f, now, cs->closed_timeout, &w->ck);
	if (!flow_counted(st) || !f) {
		/* only a SYN starts following a connection; anything else passes
		 * as it is (never cut), and the server's reply adopts it if live */
		if ((p->tcp_flags & (TCPF_SYN | TCPF_ACK | TCPF_RST)) == TCPF_SYN)
			conn_admit(p, v, w, f, st, cs, now, passing);
		return;
	}
	if (p->tcp_flags & TCPF_RST) {
		flow_release(key, f, st, AG_FLOW_RESET, p->seq, now + cs->closed_timeout, &w->ck);
		return;
	}
	if (p->tcp_flags & TCPF_SYN)
		return;	/* a retransmission, or a reused port the server sorts out */
	if (st == AG_FLOW_SYN_RECV) {
		/* only an ACK of the server's ISN completes the handshake (or of
		 * data sent right behind it, TCP Fast Open): a blind ACK has one
		 * chance in 65536 to turn a spoofed SYN into an established slot,
		 * and then the server's RST to it releases the slot */
		if (!(p->tcp_flags & TCPF_ACK) || p->ack - (f->seq + 1) >= (1U << 16))
			return;
		if (flow_promote(key, f, st, p->tcp_flags & TCPF_FIN ? AG_FLOW_FIN_WAIT : AG_FLOW_ESTABLISHED, &w->ck))
			f->deadline = now + cs->established_timeout;
		return;
	}
	if (st == AG_FLOW_ESTABLISHED && (p->tcp_flags & TCPF_FIN))
		__sync_val_compare_and_swap(&f->state, st, AG_FLOW_FIN_WAIT);
	if (st >= AG_FLOW_ESTABLISHED)
		flow_refresh(f, now, cs->established_timeout);
}

/* After the limits: marks a TCP packet with a header (not a later fragment)
 * that reaches a capped service, passed or monitored, for conn_ingress(). */
static __always_inline void conn_mark(const struct pkt *p, const struct ag_config *cfg, __u32 svc,
				      struct verdict *v)
{
	v->conn = pkt_has_tcp(p) && (v->action == AG_ACT_PASS || v->monitor) &&
		  service_in(cfg->conn_services, svc);
}

/* Ingress, after the verdict: a marked packet goes through the state machine,
 * which may refuse a SYN. Global: the verifier checks it once, not once for
 * every verdict the guard can reach it with. */
__attribute__((noinline)) int conn_ingress(const struct pkt *p, struct verdict *v, __u32 slot)
{
	const struct ag_conn_service *cs;
	struct ct_work *w;
	__u32 idx;

	if (!p || !v || !v->conn)
		return 0;	/* no caps, or dropped: the server never sees it */
	idx = policy_index(slot, v->service);
	cs = bpf_map_lookup_elem(&conn_services, &idx);
	if (!cs || !cs->track)
		return 0;
	w = ct_work();
	if (!w)
		return 0;
	conn_follow(p, v, w, cs);
	return 0;
}

/* Ingress, a handshake the SYN proxy completed (synproxy.h: a valid cookie,
 * the source real): its SYN never reached the state machine, so the
 * connection takes its established slot here, where a cap refuses it as it
 * would the SYN, before the listener ever sees it. A connection the table
 * follows already (the same handshake ACK again) keeps its slot. Returns the
 * reason that refuses it, with its event in v, or 0 (then the slot is taken,
 * or the table had no room and the service fails open). */
static __always_inline __u8 conn_handshake(const struct pkt *p, struct verdict *v, __u32 slot, __u32 svc)
{
	__u32 idx = policy_index(slot, svc), st = 0;
	const struct ag_conn_service *cs;
	struct ag_flow *f, *init;
	struct ct_work *w;
	__u8 reason = 0;
	__u64 now;

	cs = bpf_map_lookup_elem(&conn_services, &idx);
	if (!cs || !cs->track)
		return 0;
	w = ct_work();
	if (!w)
		return 0;
	__builtin_memcpy(w->key.client, p->addr, 16);
	__builtin_memcpy(w->key.server, p->dst, 16);
	w->key.cport = p->sport;
	w->key.sport = p->dport;
	now = bpf_ktime_get_coarse_ns();
	f = bpf_map_lookup_elem(&flows, &w->key);
	if (f)
		st = flow_state_now(&w->key, f, now, cs->closed_timeout, &w->ck);
	if (f && flow_counted(st))
		return 0;
	if (st == AG_FLOW_DEAD) {
		stat_inc(AG_STAT_FLOW_BUSY);
		return 0;
	}
	init = &w->init;
	__builtin_memset(init, 0, sizeof(*init));
	init->created = now;
	init->deadline = now + cs->established_timeout;
	init->state = AG_FLOW_ESTABLISHED;
	init->service = cs->id;
	init->client_bits = flow_bits(cs, p->family);
	client_key(&w->ck, p->addr, init->client_bits, cs->id);
	if (!conn_take(&w->ck, cs->id, flow_unit(AG_FLOW_ESTABLISHED), cs, cs->monitor, &reason)) {
		if (reason && reason != AG_R_FLOW_TABLE_FULL) {
			conn_refuse(v, reason, init->client_bits);
			return reason;
		}
		if (!cs->fail_closed)
			return 0;
		v->event = AG_EV_FLOW_TABLE_FULL;
		v->ev_bits = 0;
		return AG_R_FLOW_TABLE_FULL;
	}
	if (flow_put(&w->key, f, st, init, &w->ck) > 0)
		stat_inc(AG_STAT_FLOW_NEW);
	return 0;
}

/* Egress: the server's segment s of a capped service. It never drops:
 * replies always leave. */
static __always_inline void conn_egress(const struct pkt *s, const struct ag_conn_service *cs, __u32 slot)
{
	struct ag_client_key ck;
	struct ag_flow_key key;
	struct ag_flow *f;
	__u32 st = 0;
	__u64 now;
	__u8 fl = s->tcp_flags;

	__builtin_memcpy(key.client, s->dst, 16);
	__builtin_memcpy(key.server, s->addr, 16);
	key.cport = s->dport;
	key.sport = s->sport;
	now = bpf_ktime_get_coarse_ns();
	f = bpf_map_lookup_elem(&flows, &key);
	if (f)
		st = flow_state_now(&key, f, now, cs->closed_timeout, &ck);

	if (flow_counted(st) && f) {
		if (fl & (TCPF_RST | TCPF_FIN)) {
			flow_release(&key, f, st, AG_FLOW_CLOSED, 0, now + cs->closed_timeout, &ck);
			return;
		}
		if ((fl & (TCPF_SYN | TCPF_ACK)) == (TCPF_SYN | TCPF_ACK)) {
			if (st == AG_FLOW_SYN_SENT) {
				f->seq = s->seq;	/* before the CAS: whoever sees SYN_RECV sees the ISN */
				__sync_val_compare_and_swap(&f->state, st, AG_FLOW_SYN_RECV);
			}
			return;
		}
		if (st >= AG_FLOW_ESTABLISHED)
			flow_refresh(f, now, cs->established_timeout);
		return;
	}

	/* Not followed: the server speaking on a connection proves it is alive. */
	if ((fl & (TCPF_RST | TCPF_FIN)) || !(fl & TCPF_ACK))
		return;
	if (st == AG_FLOW_CLOSED || st == AG_FLOW_DEAD)
		return;		/* the teardown's last packets */
	if (st == AG_FLOW_RESET && f && s->ack == f->seq)
		return;		/* sent before the server read the (valid) reset */
	if ((fl & TCPF_SYN) && st)
		return;		/* SYN-ACK retransmissions of a handshake that timed out */
	/* allowed clients skip the guard: their connections are neither capped nor adopted */
	if (list_of(key.client, s->family, slot) == AG_LIST_ALLOW)
		return;
	{
		struct ag_flow init = {
			.created = now,
			.state = fl & TCPF_SYN ? AG_FLOW_SYN_RECV : AG_FLOW_ESTABLISHED,
			.seq = s->seq,
			.service = cs->id,
			.client_bits = flow_bits(cs, s->family),
			.adopted = 1,
		};
		__u8 reason = 0;

		init.deadline = now + (fl & TCPF_SYN ? cs->half_open_timeout : cs->established_timeout);
		client_key(&ck, key.client, init.client_bits, cs->id);
		if (!conn_take(&ck, cs->id, flow_unit(init.state), NULL, 1, &reason))
			return;
		if (flow_put(&key, f, st, &init, &ck) > 0)
			stat_inc(AG_STAT_FLOW_ADOPTED);
	}
}

/* The sweeper's callback: releases idle flows and deletes closed ones whose
 * linger is over. */
static long flow_sweep_one(void *map, struct ag_flow_key *key, struct ag_flow *f, struct ag_sweep *s)
{
	__u32 st = *(volatile __u32 *)&f->state;
	__u64 linger = AG_DEFAULT_LINGER;

	s->walked++;
	if (f->deadline >= s->now)
		return 0;
	if (flow_counted(st)) {
		__u32 idx = policy_index(s->slot, f->service);
		const struct ag_conn_service *cs = bpf_map_lookup_elem(&conn_services, &idx);

		if (cs && cs->track && cs->closed_timeout)
			linger = cs->closed_timeout;
		if (flow_release(key, f, st, AG_FLOW_EXPIRED, 0, s->now + linger, &s->ck)) {
			s->expired++;
			stat_inc(AG_STAT_FLOW_EXPIRED);
		}
		return 0;
	}
	if (__sync_val_compare_and_swap(&f->state, st, AG_FLOW_DEAD) == st) {
		bpf_map_delete_elem(&flows, key);
		s->deleted++;
		stat_inc(AG_STAT_FLOW_DELETED);
	}
	return 0;
}

#endif
