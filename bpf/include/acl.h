/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-service source ACLs: a service may name the CIDRs allowed to reach it.
 * One LPM trie holds the ACLs of every service in both policy slots, keyed by
 * (slot, service, source): the daemon fills the inactive slot's entries and the
 * policy flip switches them with the rest. Thousands of entries cost one trie
 * lookup and no verifier budget. See docs/conntrack.md.
 *
 * Contract: the ACL stage runs after the service match and before the limits,
 * so a refused source costs no bucket; a service without an ACL or caps costs
 * one bit test (ag_config.conn_services). Whether a service has an ACL, and
 * whether it is monitored, is its ag_conn_service (conntrack_map.h). */
#ifndef APIGUARD_ACL_H
#define APIGUARD_ACL_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "config.h"
#include "parse.h"
#include "conntrack_map.h"

/* prefixlen covers slot, service and address bits: 16 + 128 for one IPv6
 * host, 16 + 96 + n for an IPv4 /n (addresses are v4-mapped, as everywhere). */
struct ag_acl_key {
	__u32 prefixlen;
	__u8 slot;
	__u8 service;
	__u8 addr[16];
	__u8 _pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ag_acl_key);
	__type(value, __u32);
	__uint(max_entries, AG_ACL_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} acl SEC(".maps");

/* Is addr (16 bytes, v4-mapped for IPv4) inside one of the service's CIDRs? */
static __always_inline int acl_allows(const __u8 addr[16], __u32 slot, __u32 service)
{
	struct ag_acl_key k = {
		.prefixlen = AG_ACL_HDR_BITS + 128,
		.slot = slot,
		.service = service,
	};

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&acl, &k) != NULL;
}

/* The ACL check proper, global so the verifier checks it once. Returns 0 when
 * the source may reach the service, else 1 (2 when the service is in monitor
 * mode). */
__attribute__((noinline)) int acl_check(const struct pkt *p, __u32 slot, __u32 svc)
{
	__u32 idx = policy_index(slot, svc);
	const struct ag_conn_service *cs = bpf_map_lookup_elem(&conn_services, &idx);

	if (!p || !cs || !cs->acl || acl_allows(p->addr, slot, svc))
		return 0;
	return cs->monitor ? 2 : 1;
}

/* The stage: a source outside the service's ACL is dropped (or, monitored,
 * passed and counted). Returns 1 when it decided. */
static __always_inline int acl_refused(const struct pkt *p, const struct ag_config *cfg, __u32 slot,
				       __u32 svc, struct verdict *v)
{
	int r;

	if (!service_in(cfg->conn_services, svc))
		return 0;
	r = acl_check(p, slot, svc);
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

#endif
