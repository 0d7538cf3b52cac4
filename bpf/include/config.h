/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Load-time constants and the policy in force.
 *
 * Contract: the loader freezes `consts` before the verifier sees the program.
 * Policy maps come in two slots: the daemon fills the inactive slot and then
 * flips `active`, so a packet that read the slot once through policy() sees
 * one whole policy in every per-slot map it indexes with that slot (ports,
 * services here; lists.h, acl.h, conntrack_map.h). Per-slot arrays of services
 * are indexed by policy_index().
 *
 * Every map of the datapath outlives the daemon: it is pinned by name
 * (LIBBPF_PIN_BY_NAME; the loader gives the directory) and a restarted daemon
 * adopts it, state and all. A map that does not (per-packet scratch) says so
 * where it is defined, and the loader names it in its list of per-load maps:
 * a map that is neither is refused at load (loader/pins.go). */
#ifndef APIGUARD_CONFIG_H
#define APIGUARD_CONFIG_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "types.h"

/* Load-time settings, frozen before the verifier sees the program. */
struct ag_consts {
	__u64 event_interval;	/* ns between two events of one kind for one client */
	__u64 event_rate_interval; /* each event type's GCRA, same units as ag_limit */
	__u64 event_rate_tolerance;
	__u32 nr_cpus;
	__u32 client_capacity;
	__u32 prefix_capacity;
	__u32 _pad;
};

volatile const struct ag_consts consts;

/* Which policy slot is live: one word, flipped by the daemon after it wrote the other. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_config);
	__uint(max_entries, 2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

/* slot * AG_PORT_SLOT + (udp ? AG_PORTS_PER_PROTO : 0) + port -> service id (0: none) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 2 * AG_PORT_SLOT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ports SEC(".maps");

/* policy_index(slot, id) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_service);
	__uint(max_entries, 2 * AG_MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services SEC(".maps");

/* The loader's record of the layout each pinned map was created with (a
 * fingerprint of its type, key and value), by map name: a restarted daemon of
 * another build adopts a pinned map only if its layout is this build's. The
 * datapath never reads it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, char[16]);		/* the map's name, as the kernel keeps it */
	__type(value, __u64);
	__uint(max_entries, 64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pin_layouts SEC(".maps");

/* The policy slot in force: 0 or 1. */
static __always_inline __u32 active_slot(void)
{
	__u32 zero = 0;
	const __u32 *slot = bpf_map_lookup_elem(&active, &zero);

	return slot && *slot ? 1 : 0;
}

/* The policy in force, and its slot. NULL only when the map is missing,
 * which a loaded program never sees. */
static __always_inline const struct ag_config *policy(__u32 *slot)
{
	*slot = active_slot();
	return bpf_map_lookup_elem(&config, slot);
}

/* Where a slot keeps service id's entry in the per-service arrays. */
static __always_inline __u32 policy_index(__u32 slot, __u32 id)
{
	return slot * AG_MAX_SERVICES + (id & (AG_MAX_SERVICES - 1));
}

/* The service that owns (proto, port) in slot: 1..AG_MAX_SERVICES-1, or 0. */
static __always_inline __u32 service_of(__u32 slot, __u8 proto, __u16 port)
{
	__u32 idx, *id;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	idx = slot * AG_PORT_SLOT + (proto == IPPROTO_UDP ? AG_PORTS_PER_PROTO : 0) + port;
	id = bpf_map_lookup_elem(&ports, &idx);
	if (!id || *id >= AG_MAX_SERVICES)
		return 0;
	return *id;
}

/* Is service id in a per-service bit set of the policy (conn_services, proven_services)? */
static __always_inline int service_in(__u64 set, __u32 id)
{
	return (set >> id) & 1;
}

#endif
