/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ring-buffer events, throttled in the kernel: at most one event per
 * (client, type[, port]) per event_interval on each CPU, and a GCRA budget per
 * event type across CPUs. Each type has its own budget so that a flood of one
 * kind cannot blind the detector to another: a random-source SYN flood to
 * closed ports spends the no_service budget, one event per spoofed source,
 * and the limited events of a real flooder still get through. What is held
 * back is counted, never silently lost. */
#ifndef APIGUARD_EVENTS_H
#define APIGUARD_EVENTS_H

#include "types.h"
#include "maps.h"
#include "limit.h"
#include "parse.h"

static __always_inline __u64 event_tag(const __u8 addr[16], __u8 type, __u16 port, __u32 service)
{
	const __u32 *w = (const __u32 *)addr;
	__u64 h = ((__u64)service << 24 | (__u64)type << 16 | port) * 0x9e3779b97f4a7c15ULL;

	h ^= (__u64)w[0] * 0xc2b2ae3d27d4eb4fULL;
	h ^= (__u64)w[1] * 0x165667b19e3779f9ULL;
	h ^= (__u64)w[2] * 0x27d4eb2f165667c5ULL;
	h ^= (__u64)w[3] * 0x94d049bb133111ebULL;
	return h ^ (h >> 29);
}

/* Returns 1 when this event should be suppressed. */
static __always_inline int event_throttled(const __u8 addr[16], __u8 type, __u16 port,
					   __u32 service, __u64 now)
{
	__u64 tag = event_tag(addr, type, port, service);
	__u32 idx = tag & (AG_EV_SLOTS - 1);
	struct ev_slot *s = bpf_map_lookup_elem(&event_throttle, &idx);
	__u32 budget_idx = type;
	__u64 *budget;
	struct ag_limit l = {
		.interval = consts.event_rate_interval,
		.tolerance = consts.event_rate_tolerance,
	};

	if (!s)
		return 1;
	if (s->tag == tag && now - s->last < consts.event_interval)
		return 1;
	budget = bpf_map_lookup_elem(&event_budgets, &budget_idx);
	if (!budget || !gcra(budget, &l, 1, now))
		return 1;
	s->tag = tag;
	s->last = now;
	return 0;
}

/* The event's source is masked to bits: a prefix or service limit is one
 * bucket, so it yields one event per interval however many sources feed it. */
static __always_inline void emit_event(const struct pkt *p, __u8 type, __u8 reason,
				       __u8 action, __u32 service, __u64 count, __u32 bits,
				       __u64 now)
{
	/* a limit's drop already read the clock; one helper call less per drop */
	if (!now)
		now = bpf_ktime_get_coarse_ns();
	/* no-service events are keyed by port too: a scan is many ports, one client */
	__u16 port = type == AG_EV_NO_SERVICE ? p->dport : 0;
	struct ag_event *e;
	__u8 addr[16] __attribute__((aligned(8)));

	mask_addr(addr, p->addr, bits);
	if (event_throttled(addr, type, port, service, now)) {
		stat_inc(AG_STAT_EVENT_SUPPRESSED);
		return;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		stat_inc(AG_STAT_EVENT_LOST);
		return;
	}
	e->ts = now;
	__builtin_memcpy(e->addr, addr, 16);
	e->count = count;
	e->service = service;
	e->dport = p->dport;
	e->type = type;
	e->reason = reason;
	e->family = p->family;
	e->proto = p->proto;
	e->tcp_flags = p->tcp_flags;
	e->action = action;
	__builtin_memset(e->_pad, 0, sizeof(e->_pad));
	bpf_ringbuf_submit(e, 0);
	stat_inc(AG_STAT_EVENT_SENT);
}

#endif
