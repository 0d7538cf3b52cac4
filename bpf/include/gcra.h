/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* GCRA, the limiter: one 64-bit theoretical arrival time (TAT) per bucket,
 * updated with a compare-and-swap so that every CPU shares one exact budget.
 *
 * Contract: a bucket is a TAT word and its struct ag_limit (interval 0: no
 * limit, everything conforms). gcra() charges or refuses; gcra_peek() only
 * reads; charge_new() charges a private copy before it is published. All take
 * now from one clock per packet (CLOCK_MONOTONIC ns). No state but the TATs:
 * a bucket that was never charged (TAT 0) is full. */
#ifndef APIGUARD_GCRA_H
#define APIGUARD_GCRA_H

#include "types.h"
#include "counters.h"

#ifndef AG_CAS_TRIES
#define AG_CAS_TRIES 4	/* then give up and refuse: other CPUs keep winning */
#endif

/* What a packet costs the buckets: one packet and its length, except a first
 * fragment, which also pays for the later fragments that came before it (frag.h). */
struct ag_cost {
	__u32 packets;
	__u32 bytes;
};

/* Takes cost units from the bucket. Returns 1 when they conform and are
 * charged, else 0. With force (a proven client's SYN on a shared bucket) they
 * are never refused: the bucket fills, so others see the load, but never past
 * full, so the charge cannot lock them out for longer than a full burst. */
static __always_inline int gcra_take(__u64 *tat, const struct ag_limit *l, __u64 cost, __u64 now, int force)
{
	__u64 interval = l->interval;
	__u64 inc, old, base, next;

	if (!interval)
		return 1;
	inc = (cost * interval) >> 16;
#pragma unroll
	for (int i = 0; i < AG_CAS_TRIES; i++) {
		old = *(volatile __u64 *)tat;
		base = old > now ? old : now;
		next = base + inc;
		if (next - now > l->tolerance) {
			if (!force)
				return 0;
			next = now + l->tolerance;
			if (next <= old)
				return 1;	/* full already */
		}
		if (__sync_val_compare_and_swap(tat, old, next) == old)
			return 1;
	}
	/* Other CPUs keep winning the race: refuse rather than admit uncharged. */
	stat_inc(AG_STAT_CAS_CONTENDED);
	return 0;
}

static __always_inline int gcra(__u64 *tat, const struct ag_limit *l, __u64 cost, __u64 now)
{
	return gcra_take(tat, l, cost, now, 0);
}

/* Checks one level's buckets; returns the kind that refused, or AG_KIND_MAX. */
static __always_inline int limit_level(__u64 *tat, const struct ag_limit *lim,
				       const struct ag_cost *c, int syn, __u64 now)
{
	if (!gcra(&tat[AG_KIND_PPS], &lim[AG_KIND_PPS], c->packets, now))
		return AG_KIND_PPS;
	if (!gcra(&tat[AG_KIND_BPS], &lim[AG_KIND_BPS], c->bytes, now))
		return AG_KIND_BPS;
	if (syn && !gcra(&tat[AG_KIND_CPS], &lim[AG_KIND_CPS], 1, now))
		return AG_KIND_CPS;
	return AG_KIND_MAX;
}

/* Would cost units conform? Reads only: used to drop floods before any state
 * is created or charged. */
static __always_inline int gcra_peek(const __u64 *tat, const struct ag_limit *l, __u64 cost, __u64 now)
{
	__u64 old, base;

	if (!l->interval)
		return 1;
	old = *(volatile const __u64 *)tat;
	base = old > now ? old : now;
	return base + ((cost * l->interval) >> 16) - now <= l->tolerance;
}

static __always_inline int peek_level(const __u64 *tat, const struct ag_limit *lim,
				      const struct ag_cost *c, int syn, __u64 now)
{
	if (!gcra_peek(&tat[AG_KIND_PPS], &lim[AG_KIND_PPS], c->packets, now))
		return AG_KIND_PPS;
	if (!gcra_peek(&tat[AG_KIND_BPS], &lim[AG_KIND_BPS], c->bytes, now))
		return AG_KIND_BPS;
	if (syn && !gcra_peek(&tat[AG_KIND_CPS], &lim[AG_KIND_CPS], 1, now))
		return AG_KIND_CPS;
	return AG_KIND_MAX;
}

/* The first packet of a new entry, charged on a private copy before insertion:
 * nobody else can see it yet, so no CAS is needed. An empty bucket holds a full
 * burst, so this only refuses when one packet exceeds the whole burst. */
static __always_inline int charge_new(__u64 *tat, const struct ag_limit *lim,
				      const struct ag_cost *c, int syn, __u64 now)
{
	__u64 cost[AG_KIND_MAX] = { c->packets, c->bytes, syn };

#pragma unroll
	for (int k = 0; k < AG_KIND_MAX; k++) {
		__u64 inc;

		if (!lim[k].interval || !cost[k])
			continue;
		inc = (cost[k] * lim[k].interval) >> 16;
		if (inc > lim[k].tolerance)
			return k;
	}
#pragma unroll
	for (int k = 0; k < AG_KIND_MAX; k++) {
		if (lim[k].interval && cost[k])
			tat[k] = now + ((cost[k] * lim[k].interval) >> 16);
	}
	return AG_KIND_MAX;
}

/* 1 when any bucket of the level has a limit (a 64-bit interval whose low
 * bits are all zero must not read as none). */
static __always_inline int level_limited(const struct ag_limit *lim)
{
	return (lim[AG_KIND_PPS].interval | lim[AG_KIND_BPS].interval | lim[AG_KIND_CPS].interval) != 0;
}

#endif
