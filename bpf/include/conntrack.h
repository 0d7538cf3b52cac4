/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection filtering: source ACLs (acl.h) and TCP connection caps, with the
 * connections to capped services followed in the kernel. docs/conntrack.md has
 * the design, its trade-offs and the figures.
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
 * the RST's sequence number, adopts the connection again. */
#ifndef APIGUARD_CONNTRACK_H
#define APIGUARD_CONNTRACK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"
#include "parse.h"
#include "limit.h"
#include "acl.h"
#include "proof.h"

#define AG_FLOW_CAPACITY (1 << 18)	/* default; the loader sizes the tables */
#define AG_HALF_ONE (1ULL << 32)	/* count words: established low, half-open high */
#define AG_COUNT_DEAD (~0ULL)		/* a client count entry being deleted */
#define AG_DEFAULT_LINGER 10000000000ULL
#define AG_EEXIST 17

enum ag_flow_state {
	AG_FLOW_SYN_SENT = 1,	/* half-open */
	AG_FLOW_SYN_RECV,	/* half-open; seq is the server's ISN */
	AG_FLOW_ESTABLISHED,	/* established */
	AG_FLOW_FIN_WAIT,	/* established: the client sent FIN, the server has not closed */
	AG_FLOW_CLOSED,		/* the server sent FIN or RST */
	AG_FLOW_RESET,		/* the client sent RST; seq is its sequence number */
	AG_FLOW_EXPIRED,	/* idle past its timeout */
	AG_FLOW_DEAD,		/* the sweeper is deleting it */
};

const enum ag_flow_state ag_flow_state_unused __attribute__((unused));

/* Per service and policy slot. A service with neither an ACL nor caps has no
 * entry in use: its bit in ag_config.conn_services is clear. */
struct ag_conn_service {
	__u64 established_timeout;	/* ns without a packet before an established flow is released */
	__u64 half_open_timeout;	/* ns from the SYN before an unfinished handshake is */
	__u64 closed_timeout;		/* ns a closed flow lingers to absorb the teardown */
	__u32 id;
	__u32 client_established;	/* caps; 0 = none */
	__u32 client_half_open;
	__u32 total_established;
	__u32 total_half_open;
	__u8 acl;		/* only sources in the acl trie may reach the service */
	__u8 track;		/* follow connections: the service has caps */
	__u8 monitor;		/* refusals are counted and passed */
	__u8 fail_closed;	/* flow table full: drop new connections (else pass them untracked) */
	__u8 client_bits4;	/* the client count key: the policy's client key lengths */
	__u8 client_bits6;
	__u8 _pad[2];
};

struct ag_flow_key {
	__u8 client[16];
	__u8 server[16];
	__u16 cport;
	__u16 sport;
};

struct ag_flow {
	__u64 deadline;		/* coarse ns: idle deadline; once uncounted, end of the linger */
	__u64 created;
	__u32 state;		/* enum ag_flow_state, changed by CAS only */
	__u32 seq;		/* SYN_RECV: server ISN; RESET: the client's RST sequence */
	__u8 service;		/* whose counts the flow holds */
	__u8 client_bits;	/* prefix length of its client count key (IPv4 as 96 + n) */
	__u8 adopted;		/* picked up from the server's packets, not from a SYN */
	__u8 _pad[5];
};

/* Written into the sweep program's packet buffer for the loader to read back. */
struct ag_sweep {
	__u64 now;
	__u32 walked;
	__u32 expired;
	__u32 deleted;
	__u32 slot;
	struct ag_client_key ck;	/* scratch */
};

/* slot * AG_MAX_SERVICES + service id */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_conn_service);
	__uint(max_entries, 2 * AG_MAX_SERVICES);
} conn_services SEC(".maps");

/* No preallocation: a deleted element is freed after an RCU grace period, so a
 * CPU still holding a pointer to it can never touch a reused element. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ag_flow_key);
	__type(value, struct ag_flow);
	__uint(max_entries, AG_FLOW_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} flows SEC(".maps");

/* (client key, service) -> count word. Not an LRU: an evicted count would let
 * its client past the cap. At most one entry per counted flow, so it is sized
 * like the flow table and can only be full when that is. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ag_client_key);
	__type(value, __u64);
	__uint(max_entries, AG_FLOW_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} conn_clients SEC(".maps");

/* service id -> count word of the whole service */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, AG_MAX_SERVICES);
} conn_totals SEC(".maps");

/* What tracking needs beyond struct pkt, parsed again from the packet only for
 * capped services (ingress) or TCP (egress). */
struct ct_tcp {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 seq;
	__u32 ack;
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 flags;
	__u8 data;	/* the segment carries payload (or is a BIG TCP aggregate) */
};

static __always_inline void v4_mapped(__u8 out[16], const void *a4)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(&out[12], a4, 4);
}

/* Returns 0 for a TCP packet whose header is in reach (first fragments too). */
static __always_inline int ct_parse(void *data, void *data_end, struct ct_tcp *t)
{
	struct cursor c = { .pos = data, .end = data_end };
	struct tcphdr *th;
	__u32 l4len = 0;	/* IP payload: TCP header + data */
	int big = 0;		/* a length of 0: a BIG TCP aggregate, data by nature */
	__u16 proto;

	if (parse_eth(&c, &proto) != AG_R_OK)
		return -1;
	if (proto == ETH_P_IP) {
		struct iphdr *iph = cursor_pull(&c, sizeof(*iph));
		__u32 hlen;

		if (!iph || iph->ihl < 5 || iph->protocol != IPPROTO_TCP)
			return -1;
		if (bpf_ntohs(iph->frag_off) & 0x1fff)
			return -1;
		hlen = iph->ihl * 4;
		if ((void *)iph + hlen > c.end)
			return -1;
		if (!iph->tot_len)
			big = 1;
		else if (bpf_ntohs(iph->tot_len) > hlen)
			l4len = bpf_ntohs(iph->tot_len) - hlen;
		c.pos = (void *)iph + hlen;
		t->family = 4;
		v4_mapped(t->saddr, &iph->saddr);
		v4_mapped(t->daddr, &iph->daddr);
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = cursor_pull(&c, sizeof(*ip6));
		__u8 next;

		if (!ip6)
			return -1;
		t->family = 6;
		__builtin_memcpy(t->saddr, &ip6->saddr, 16);
		__builtin_memcpy(t->daddr, &ip6->daddr, 16);
		next = ip6->nexthdr;
		l4len = bpf_ntohs(ip6->payload_len);
		big = !l4len;
#pragma unroll
		for (int i = 0; i < AG_MAX_EXT_HDRS; i++) {
			struct ipv6_ext *e;
			__u32 len;

			if (next == IPPROTO_TCP)
				break;
			if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS &&
			    next != IPPROTO_AH && next != IPPROTO_FRAGMENT)
				return -1;
			e = c.pos;
			if ((void *)e + 8 > c.end)	/* every extension header is at least 8 bytes */
				return -1;
			if (next == IPPROTO_FRAGMENT) {
				if (bpf_ntohs(((struct ipv6_frag *)e)->frag_off) & 0xfff8)
					return -1;
				len = 8;
			} else if (next == IPPROTO_AH) {
				len = (e->len + 2) * 4;
			} else {
				len = (e->len + 1) * 8;
			}
			next = e->nexthdr;
			if (!cursor_pull(&c, len))
				return -1;
			l4len = l4len > len ? l4len - len : 0;
		}
		if (next != IPPROTO_TCP)
			return -1;
	} else {
		return -1;
	}
	th = cursor_pull(&c, sizeof(*th));
	if (!th)
		return -1;
	t->sport = bpf_ntohs(th->source);
	t->dport = bpf_ntohs(th->dest);
	t->seq = bpf_ntohl(th->seq);
	t->ack = bpf_ntohl(th->ack_seq);
	t->flags = ((__u8 *)th)[13];
	/* a length that does not add up is no data */
	t->data = big || l4len > th->doff * 4;
	return 0;
}

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
	mask_addr(ck->addr, key->client, f->client_bits);
	ck->service = f->service;
	ck->_pad = 0;
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

static __always_inline __u8 client_bits(const struct ag_conn_service *cs, __u8 family)
{
	return family == 4 ? 96 + cs->client_bits4 : cs->client_bits6;
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

/* The service's ACL and caps, when its bit in cfg says it has any. */
static __always_inline const struct ag_conn_service *conn_service(const struct ag_config *cfg,
								  __u32 slot, __u32 svc)
{
	__u32 idx = slot * AG_MAX_SERVICES + svc;

	if (!((cfg->conn_services >> svc) & 1))
		return NULL;
	return bpf_map_lookup_elem(&conn_services, &idx);
}

/* The ACL check proper, global so the verifier checks it once. Returns 0 when
 * the source may reach the service, else 1 (2 when the service is in monitor
 * mode). */
__attribute__((noinline)) int conn_acl(const struct pkt *p, __u32 slot, __u32 svc)
{
	__u32 idx = slot * AG_MAX_SERVICES + (svc & (AG_MAX_SERVICES - 1));
	const struct ag_conn_service *cs = bpf_map_lookup_elem(&conn_services, &idx);

	if (!p || !cs || !cs->acl || acl_allows(p->addr, slot, svc))
		return 0;
	return cs->monitor ? 2 : 1;
}

/* Before the service's limits: a source outside its ACL is refused without
 * charging any bucket. Returns 1 when refused. */
static __always_inline int conn_acl_refused(const struct pkt *p, const struct ag_config *cfg,
					    __u32 slot, __u32 svc, struct verdict *v)
{
	int r;

	if (!((cfg->conn_services >> svc) & 1))
		return 0;
	r = conn_acl(p, slot, svc);
	if (!r)
		return 0;
	v->action = AG_ACT_DROP;
	v->reason = AG_R_ACL;
	v->event = AG_EV_ACL_HIT;
	v->service = svc;
	if (r == 2)
		v->monitor = 1;
	return 1;
}

/* After the limits: marks a TCP packet that reaches a capped service, by its
 * policy slot, for conn_track_ingress. */
static __always_inline void conn_mark(const struct pkt *p, const struct ag_config *cfg,
				      __u32 slot, __u32 svc, struct verdict *v)
{
	if (p->proto == IPPROTO_TCP && (v->action == AG_ACT_PASS || v->monitor) &&
	    ((cfg->conn_services >> svc) & 1))
		v->conn = 1 + slot;
}

/* The ingress state machine's working memory. The guard's stack is nearly
 * full (512 bytes for the whole call chain), so it lives in a per-CPU array:
 * XDP and TC ingress never nest on one CPU. */
struct ct_work {
	/* from the guard */
	__u8 client[16];	/* the guard's view of the source (benchmarks redraw it) */
	__u8 family;
	__u8 passing;		/* the guard let it through (else: a monitored drop) */
	/* the verdict, read and written */
	__u8 action;
	__u8 reason;
	__u8 event;
	__u8 ev_bits;
	__u8 monitor;
	__u8 _pad;
	/* scratch */
	struct ct_tcp t;
	struct ag_flow_key key;
	struct ag_flow init;
	struct ag_client_key ck;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ct_work);
	__uint(max_entries, 1);
} ct_scratch SEC(".maps");

static __always_inline void ct_refuse(struct ct_work *w, __u8 reason, __u8 bits)
{
	w->action = AG_ACT_DROP;
	w->reason = reason;
	w->event = AG_EV_CONN_LIMITED;
	/* a client cap's event names the client key, a service cap's the service */
	w->ev_bits = reason <= AG_R_CONN_CLIENT_HALF_OPEN ? bits : 0;
}

/* A SYN for a connection the table does not follow: caps, then a flow. */
static __always_inline void conn_admit(struct ct_work *w, struct ag_flow *f, __u32 st,
				       const struct ag_conn_service *cs, __u64 now)
{
	struct ag_flow *init = &w->init;
	/* what monitor mode or an earlier monitored drop lets through is counted */
	int force = !w->passing || w->monitor || cs->monitor;
	__u8 reason = 0;
	int r;

	__builtin_memset(init, 0, sizeof(*init));
	init->deadline = now + cs->half_open_timeout;
	init->created = now;
	init->state = AG_FLOW_SYN_SENT;
	init->service = cs->id;
	init->client_bits = client_bits(cs, w->family);
	if (st == AG_FLOW_DEAD) {
		stat_inc(AG_STAT_FLOW_BUSY);
		goto full;
	}
	mask_addr(w->ck.addr, w->client, init->client_bits);
	w->ck.service = cs->id;
	w->ck._pad = 0;
	if (!conn_take(&w->ck, cs->id, AG_HALF_ONE, cs, force, &reason)) {
		if (reason && reason != AG_R_FLOW_TABLE_FULL) {
			ct_refuse(w, reason, init->client_bits);
			w->monitor |= cs->monitor;
			return;
		}
		goto full;
	}
	r = flow_put(&w->key, f, st, init, &w->ck);
	if (r > 0) {
		stat_inc(AG_STAT_FLOW_NEW);
		if (reason && w->passing) {
			/* over a cap in monitor mode: counted as a would-be drop */
			ct_refuse(w, reason, init->client_bits);
			w->monitor = 1;
		}
		return;
	}
	if (r < 0)
		return;	/* another CPU has the same SYN in hand: it decides */
full:
	if (!w->passing)
		return;
	w->reason = AG_R_FLOW_TABLE_FULL;
	w->event = AG_EV_FLOW_TABLE_FULL;
	w->ev_bits = 0;
	if (cs->fail_closed) {
		w->action = AG_ACT_DROP;
		w->monitor |= cs->monitor;
	}
}

/* The client's side of the state machine, on a parsed packet in w->t. */
static __always_inline void conn_ingress(struct ct_work *w, const struct ag_conn_service *cs)
{
	struct ag_flow_key *key = &w->key;
	const struct ct_tcp *t = &w->t;
	struct ag_flow *f;
	__u32 st = 0;
	__u64 now;

	__builtin_memcpy(key->client, w->client, 16);
	__builtin_memcpy(key->server, t->daddr, 16);
	key->cport = t->sport;
	key->sport = t->dport;
	now = bpf_ktime_get_coarse_ns();
	f = bpf_map_lookup_elem(&flows, key);
	if (f)
		st = flow_state_now(key, f, now, cs->closed_timeout, &w->ck);
	if (!flow_counted(st) || !f) {
		/* only a SYN starts following a connection; anything else passes
		 * as it is (never cut), and the server's reply adopts it if live */
		if ((t->flags & (TCPF_SYN | TCPF_ACK | TCPF_RST)) == TCPF_SYN)
			conn_admit(w, f, st, cs, now);
		return;
	}
	if (t->flags & TCPF_RST) {
		flow_release(key, f, st, AG_FLOW_RESET, t->seq, now + cs->closed_timeout, &w->ck);
		return;
	}
	if (t->flags & TCPF_SYN)
		return;	/* a retransmission, or a reused port the server sorts out */
	if (st == AG_FLOW_SYN_RECV) {
		/* only an ACK of the server's ISN completes the handshake (or of
		 * data sent right behind it, TCP Fast Open): a blind ACK has one
		 * chance in 65536 to turn a spoofed SYN into an established slot,
		 * and then the server's RST to it releases the slot */
		if (!(t->flags & TCPF_ACK) || t->ack - (f->seq + 1) >= (1U << 16))
			return;
		if (flow_promote(key, f, st, t->flags & TCPF_FIN ? AG_FLOW_FIN_WAIT : AG_FLOW_ESTABLISHED, &w->ck))
			f->deadline = now + cs->established_timeout;
		return;
	}
	if (st == AG_FLOW_ESTABLISHED && (t->flags & TCPF_FIN))
		__sync_val_compare_and_swap(&f->state, st, AG_FLOW_FIN_WAIT);
	if (st >= AG_FLOW_ESTABLISHED)
		flow_refresh(f, now, cs->established_timeout);
}

/* Global functions, one per context type: the verifier checks each once, not
 * once for every verdict the guard can reach the hook with. */
__attribute__((noinline)) int conn_ingress_xdp(struct xdp_md *ctx, struct ct_work *w,
					       const struct ag_conn_service *cs)
{
	if (!w || !cs)
		return 0;
	if (ct_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &w->t))
		return 0;
	conn_ingress(w, cs);
	return 0;
}

__attribute__((noinline)) int conn_ingress_skb(struct __sk_buff *skb, struct ct_work *w,
					       const struct ag_conn_service *cs)
{
	if (!w || !cs)
		return 0;
	if (ct_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &w->t))
		return 0;
	conn_ingress(w, cs);
	return 0;
}

/* proof.h's ingress side, global for the same reason: an ACK whose 4-tuple
 * matched an expected handshake's tag is parsed again for its acknowledgment
 * number. The slot is looked up here, not passed in: its lock needs a map
 * value. */
__attribute__((noinline)) int proof_acked_xdp(struct xdp_md *ctx, __u32 idx)
{
	const struct ag_config *cfg = active_config();
	struct ag_handshake *slot = bpf_map_lookup_elem(&handshakes, &idx);
	struct ct_tcp t;

	if (!slot || !cfg || ct_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &t))
		return 0;
	handshake_acked(cfg, slot, t.saddr, t.sport, t.dport, t.family, t.flags, t.ack);
	return 0;
}

__attribute__((noinline)) int proof_acked_skb(struct __sk_buff *skb, __u32 idx)
{
	const struct ag_config *cfg = active_config();
	struct ag_handshake *slot = bpf_map_lookup_elem(&handshakes, &idx);
	struct ct_tcp t;

	if (!slot || !cfg || ct_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &t))
		return 0;
	handshake_acked(cfg, slot, t.saddr, t.sport, t.dport, t.family, t.flags, t.ack);
	return 0;
}

/* Ingress, after the guard: an ACK the guard passes to a TCP service, when
 * the policy proves sources, may complete a handshake the egress program saw
 * begin. Most cost a hash and a read of a small table. */
static __always_inline void proof_track_ingress(void *ctx, int tc, const struct pkt *p, const struct verdict *v)
{
	int idx;

	if (!v->proof || v->action != AG_ACT_PASS)
		return;
	idx = handshake_expected(p->addr, p->sport, p->dport);
	if (idx < 0)
		return;
	if (tc)
		proof_acked_skb(ctx, idx);
	else
		proof_acked_xdp(ctx, idx);
}

/* Ingress, after the guard: a capped service's TCP packet goes through the
 * state machine, which may refuse a SYN. tc is a constant: it picks the
 * function for the program's context type. */
static __always_inline void conn_track_ingress(void *ctx, int tc, const struct pkt *p,
					       struct verdict *v)
{
	const struct ag_conn_service *cs;
	struct ct_work *w;
	__u32 zero = 0, idx;

	if (!v->conn)
		return;	/* no ACL or caps, or dropped: the server never sees it */
	idx = (v->conn - 1) * AG_MAX_SERVICES + (v->service & (AG_MAX_SERVICES - 1));
	cs = bpf_map_lookup_elem(&conn_services, &idx);
	if (!cs || !cs->track)
		return;
	w = bpf_map_lookup_elem(&ct_scratch, &zero);
	if (!w)
		return;
	__builtin_memcpy(w->client, p->addr, 16);
	w->family = p->family;
	w->passing = v->action == AG_ACT_PASS;
	w->action = v->action;
	w->reason = v->reason;
	w->event = v->event;
	w->ev_bits = v->ev_bits;
	w->monitor = v->monitor;
	if (tc)
		conn_ingress_skb(ctx, w, cs);
	else
		conn_ingress_xdp(ctx, w, cs);
	v->action = w->action;
	v->reason = w->reason;
	v->event = w->event;
	v->ev_bits = w->ev_bits;
	v->monitor = w->monitor;
}

/* Is the client in the allow list of this slot? Allowed clients skip the guard,
 * so their connections are neither capped nor adopted. */
static __always_inline int client_allowed(const __u8 addr[16], __u8 family, __u32 slot)
{
	__u32 *list;

	if (family == 4) {
		struct ag_lpm4 k = { .prefixlen = 32 };

		__builtin_memcpy(k.addr, &addr[12], 4);
		list = bpf_map_lookup_elem(slot ? (void *)&lists4_1 : (void *)&lists4_0, &k);
	} else {
		struct ag_lpm6 k6 = { .prefixlen = 128 };

		__builtin_memcpy(k6.addr, addr, 16);
		list = bpf_map_lookup_elem(slot ? (void *)&lists6_1 : (void *)&lists6_0, &k6);
	}
	return list && *list == AG_LIST_ALLOW;
}

/* The server sent this client data on a connection: the client completed a
 * handshake, so it may skip the service's shared new-connection limits for a
 * while. Only data counts: a bare ACK is what the kernel answers a half-open
 * connection's out-of-window segment with (and a challenge ACK, and a
 * TIME_WAIT ACK), and a blind spoofer can elicit those. Written at most once a
 * second per client. */
static __always_inline void prove_client(const struct ag_config *cfg, const struct ct_tcp *t, __u32 svc)
{
	struct ag_client_key ck;
	__u64 now, *seen;

	if ((t->flags & (TCPF_SYN | TCPF_RST)) || !(t->flags & TCPF_ACK) || !t->data)
		return;
	mask_addr(ck.addr, t->daddr, t->family == 4 ? 96 + cfg->client_bits4 : cfg->client_bits6);
	ck.service = svc;
	ck._pad = 0;
	now = bpf_ktime_get_coarse_ns();
	seen = bpf_map_lookup_elem(&proven, &ck);
	if (seen && now - *seen < 1000000000ULL)
		return;
	bpf_map_update_elem(&proven, &ck, &now, BPF_ANY);
}

/* Egress: the server's side. It never drops: replies always leave. sender
 * (enum ag_sender) says who put the segment on the wire: a forged one (a raw
 * socket forging server data) proves neither a client nor a source. */
static __always_inline void conn_track_egress(void *data, void *data_end, __u8 sender)
{
	__u32 zero = 0, slot, idx, *svc_id;
	const struct ag_conn_service *cs;
	const struct ag_config *cfg;
	struct ag_client_key ck;
	const __u32 *slotp;
	struct ag_flow_key key;
	struct ag_flow *f;
	struct ct_tcp t;
	__u32 st = 0;
	__u64 now;
	__u8 fl;

	slotp = bpf_map_lookup_elem(&active, &zero);
	slot = slotp && *slotp ? 1 : 0;
	cfg = bpf_map_lookup_elem(&config, &slot);
	if (!cfg || !(cfg->conn_services | cfg->proven_services | cfg->prove_sources))
		return;
	if (ct_parse(data, data_end, &t))
		return;
	idx = slot * AG_PORT_SLOT + t.sport;
	svc_id = bpf_map_lookup_elem(&ports, &idx);
	if (!svc_id || !*svc_id || *svc_id >= AG_MAX_SERVICES)
		return;
	if (cfg->prove_sources) {
		expect_handshake(t.daddr, t.dport, t.sport, t.seq, t.flags, sender);
		prove_source(cfg, t.daddr, t.family, t.flags, t.data, sender);
	}
	if ((sender == AG_SENDER_CONNECTED || sender == AG_SENDER_FORWARDED) &&
	    ((cfg->proven_services >> *svc_id) & 1))
		prove_client(cfg, &t, *svc_id);
	if (!((cfg->conn_services >> *svc_id) & 1))
		return;
	idx = slot * AG_MAX_SERVICES + *svc_id;
	cs = bpf_map_lookup_elem(&conn_services, &idx);
	if (!cs || !cs->track)
		return;

	__builtin_memcpy(key.client, t.daddr, 16);
	__builtin_memcpy(key.server, t.saddr, 16);
	key.cport = t.dport;
	key.sport = t.sport;
	fl = t.flags;
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
				f->seq = t.seq;	/* before the CAS: whoever sees SYN_RECV sees the ISN */
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
	if (st == AG_FLOW_RESET && f && t.ack == f->seq)
		return;		/* sent before the server read the (valid) reset */
	if ((fl & TCPF_SYN) && st)
		return;		/* SYN-ACK retransmissions of a handshake that timed out */
	if (client_allowed(key.client, t.family, slot))
		return;
	{
		struct ag_flow init = {
			.created = now,
			.state = fl & TCPF_SYN ? AG_FLOW_SYN_RECV : AG_FLOW_ESTABLISHED,
			.seq = t.seq,
			.service = cs->id,
			.client_bits = client_bits(cs, t.family),
			.adopted = 1,
		};
		__u8 reason = 0;

		init.deadline = now + (fl & TCPF_SYN ? cs->half_open_timeout : cs->established_timeout);
		mask_addr(ck.addr, key.client, init.client_bits);
		ck.service = cs->id;
		ck._pad = 0;
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
		__u32 idx = s->slot * AG_MAX_SERVICES + (f->service & (AG_MAX_SERVICES - 1));
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
