/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The policy's allow and deny lists: one LPM trie per family and policy slot,
 * value enum ag_list, so one lookup answers both.
 *
 * Contract: the loader removes deny entries that an allow entry covers (they
 * could never match in "allow first" order), so the longest match gives
 * exactly the allow-then-deny verdict. The tries are per slot (config.h): read
 * them with the slot the packet read once. Each has a prefilter (prefilter.h)
 * the loader writes with it: a source whose bit is clear is in neither list. */
#ifndef APIGUARD_LISTS_H
#define APIGUARD_LISTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "addr.h"
#include "prefilter.h"

/* Values of the allow/deny tries. */
enum ag_list {
	AG_LIST_ALLOW = 1,
	AG_LIST_DENY = 2,
};

#define LPM_MAP(name, keytype, cap)                                     \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                    \
		__type(key, keytype);                                   \
		__type(value, __u32);                                   \
		__uint(max_entries, cap);                               \
		__uint(map_flags, BPF_F_NO_PREALLOC);                   \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                    \
	} name SEC(".maps")

LPM_MAP(lists4_0, struct ag_lpm4, AG_LPM_CAPACITY);
LPM_MAP(lists4_1, struct ag_lpm4, AG_LPM_CAPACITY);
LPM_MAP(lists6_0, struct ag_lpm6, AG_LPM_CAPACITY);
LPM_MAP(lists6_1, struct ag_lpm6, AG_LPM_CAPACITY);

/* Which list holds addr in slot: AG_LIST_ALLOW, AG_LIST_DENY, or 0. */
static __always_inline __u32 list_of(const __u8 addr[16], __u8 family, __u32 slot)
{
	const __u32 *list;

	if (!prefilter_may_hold(AG_PF_LISTS + 2 * slot, addr, family))
		return 0;
	if (slot)
		list = lpm_lookup(&lists4_1, &lists6_1, addr, family);
	else
		list = lpm_lookup(&lists4_0, &lists6_0, addr, family);
	return list ? *list : 0;
}

#endif
