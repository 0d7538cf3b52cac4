/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ring-buffer events, throttled in the kernel: at most one event per
 * (client, type[, port]) per event_interval on each CPU, and a GCRA budget per
 * event type across CPUs. Each type has its own budget so that a flood of one
 * kind cannot blind the detector to another: a random-source SYN flood to
 * closed ports spends the no_service budget, one event per spoofed source,
 * and the limited events of a real flooder still get through. What is held
 * back is counted, never silently lost.
 *
 * Contract: emit_event() is called only from the single exit (apiguard.c
 * record()), at most once per packet, for the event its verdict names. The
 * record (struct ag_event) is what userspace/events decodes. */
#ifndef APIGUARD_EVENTS_H
#define APIGUARD_EVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "addr.h"
#include "config.h"
#include "counters.h"
#include "gcra.h"
#include "parse.h"

#ifndef AG_EV_SLOTS
#define AG_EV_SLOTS 4096	/* per-CPU direct-mapped throttle cache */
#endif

struct ag_event {
	__u64 ts;		/* ns, CLOCK_MONOTONIC */
	__u8 addr[16];
	__u64 count;		/* for limit events: the client's drops so far; else 1 */
	__u32 service;
	__u16 dport;
	__u8 type;		/* enum ag_event_type */
	__u8 reason;		/* enum ag_reason */
	__u8 family;		/* 4 or 6 */
	__u8 proto;		/* IPPROTO_* */
	__u8 tcp_flags;
	__u8 action;		/* enum ag_action */
	__u8 _pad[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
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
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} event_throttle SEC(".maps");

/* One GCRA word per event type (enum ag_event_type), bounding that type's
 * events per second across all CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, AG_EV_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} event_budgets SEC(".maps");

/* Returns 1 when this event should be suppressed. */
static __always_inline int event_throttled(const __u8 addr[16], __u8 type, __u16 port,
					   __u32 service, __u64 now)
{
	__u64 tag = addr_hash(addr, (__u64)service << 24 | (__u64)type << 16 | port);
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

/* The event's source is masked to v->ev_bits: a prefix or service limit is one
 * bucket, so it yields one event per interval however many sources feed it.
 * Global: the verifier checks it once, not once per verdict that names an event. */
__attribute__((noinline)) int emit_event(const struct pkt *p, const struct verdict *v)
{
	struct ag_event *e;
	__u8 addr[16] __attribute__((aligned(8)));
	__u16 port;
	__u64 now;

	if (!p || !v)
		return 0;
	/* a limit's drop already read the clock; one helper call less per drop */
	now = v->now ? v->now : bpf_ktime_get_coarse_ns();
	/* no-service events are keyed by port too: a scan is many ports, one client */
	port = v->event == AG_EV_NO_SERVICE ? p->dport : 0;
	mask_addr(addr, p->addr, v->ev_bits);
	if (event_throttled(addr, v->event, port, v->service, now)) {
		stat_inc(AG_STAT_EVENT_SUPPRESSED);
		return 0;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		stat_inc(AG_STAT_EVENT_LOST);
		return 0;
	}
	e->ts = now;
	__builtin_memcpy(e->addr, addr, 16);
	e->count = v->count;
	e->service = v->service;
	e->dport = p->dport;
	e->type = v->event;
	e->reason = v->reason;
	e->family = p->family;
	e->proto = p->proto;
	e->tcp_flags = p->tcp_flags;
	e->action = v->action;
	__builtin_memset(e->_pad, 0, sizeof(e->_pad));
	bpf_ringbuf_submit(e, 0);
	stat_inc(AG_STAT_EVENT_SENT);
	return 0;
}

#endif
