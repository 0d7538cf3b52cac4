/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What the datapath counts: packets and bytes per verdict, and its own health
 * (enum ag_stat). Both per CPU: no atomic, no shared cache line.
 *
 * Contract: every packet is counted once, by count_verdict() from the single
 * exit (apiguard.c record()), in two per-CPU arrays: `counters` by (action,
 * reason), and `service_counters` by (service id, action, reason), where id 0
 * holds every packet no service owns (no_service, allow, bans, parse errors,
 * ...). counter_index() is the one place that says where a verdict's counter
 * sits; the readers are loader/stats.go and loader/svccount.go. The service
 * dimension costs one more array lookup (bounded: AG_MAX_SERVICES ids, the
 * policy's 63 and "none"); the loader zeroes an id's row when a new service
 * takes the id (loader/svcstate.go), so counts never carry over. */
#ifndef APIGUARD_COUNTERS_H
#define APIGUARD_COUNTERS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"

struct ag_counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_counter);
	__uint(max_entries, AG_ACT_MAX * AG_R_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

/* service id * AG_ACT_MAX * AG_R_MAX + counter_index() */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_counter);
	__uint(max_entries, AG_MAX_SERVICES * AG_ACT_MAX * AG_R_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} service_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, AG_STAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

/* Counts one more and returns this CPU's count of the statistic: one lookup
 * where an increment and a read would take two. */
static __always_inline __u64 stat_inc_read(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	return v ? ++*v : 0;
}

static __always_inline __u32 counter_index(const struct verdict *v)
{
	return v->action * AG_R_MAX + v->reason;
}

static __always_inline void count_add(void *map, __u32 idx, __u32 len)
{
	struct ag_counter *c = bpf_map_lookup_elem(map, &idx);

	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
}

/* v->service is the id a stage that knew the service set (acl.h, limits.h,
 * refusals.h), else 0: "none". The mask keeps a bad id inside the map, as
 * policy_index() does. */
static __always_inline void count_verdict(const struct verdict *v, __u32 len)
{
	__u32 idx = counter_index(v);

	count_add(&counters, idx, len);
	count_add(&service_counters,
		  (v->service & (AG_MAX_SERVICES - 1)) * (AG_ACT_MAX * AG_R_MAX) + idx, len);
}

#endif
