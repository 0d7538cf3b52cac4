/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-service source ACLs: a service may name the CIDRs allowed to reach it.
 * One LPM trie holds the ACLs of every service in both policy slots, keyed by
 * (slot, service, source): the daemon fills the inactive slot's entries and the
 * policy flip switches them with the rest. Thousands of entries cost one trie
 * lookup and no verifier budget. See docs/conntrack.md. */
#ifndef APIGUARD_ACL_H
#define APIGUARD_ACL_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"

#define AG_ACL_CAPACITY (1 << 17) /* both slots together */
#define AG_ACL_HDR_BITS 16	  /* slot and service bytes in front of the address */

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

#endif
