/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking's maps: per-service settings (per policy slot), the
 * flow table, and the count words of clients and services.
 *
 * Contract: the flow table and the client counts are plain hashes, not LRUs:
 * an evicted count would let its client past its cap. At most one count entry
 * per counted flow, so the count table is sized like the flow table (the
 * loader sizes both) and can only be full when that is. No preallocation: a
 * deleted element is freed after an RCU grace period, so a CPU still holding
 * a pointer to it never touches a reused one. */
#ifndef APIGUARD_CONNTRACK_MAP_H
#define APIGUARD_CONNTRACK_MAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "config.h"
#include "conntrack_types.h"

/* policy_index(slot, service id) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_conn_service);
	__uint(max_entries, 2 * AG_MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conn_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ag_flow_key);
	__type(value, struct ag_flow);
	__uint(max_entries, AG_FLOW_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

/* (client key, service) -> count word */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ag_client_key);
	__type(value, __u64);
	__uint(max_entries, AG_FLOW_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conn_clients SEC(".maps");

/* service id -> count word of the whole service */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, AG_MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conn_totals SEC(".maps");

/* Per-packet scratch, not state: never pinned, never read back. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ct_work);
	__uint(max_entries, 1);
} ct_scratch SEC(".maps");

/* A service's ACL and caps in slot; NULL when it has neither (no lookup). */
static __always_inline const struct ag_conn_service *conn_service(const struct ag_config *cfg,
								  __u32 slot, __u32 svc)
{
	__u32 idx = policy_index(slot, svc);

	if (!service_in(cfg->conn_services, svc))
		return NULL;
	return bpf_map_lookup_elem(&conn_services, &idx);
}

static __always_inline struct ct_work *ct_work(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&ct_scratch, &zero);
}

#endif
