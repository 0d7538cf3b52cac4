/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bans: addresses and prefixes the daemon (its detector, CrowdSec, an
 * operator) keeps away for a while. One LPM trie per family, not per policy
 * slot: bans change at run time, independently of the policy.
 *
 * Contract: a ban holds while its expiry (CLOCK_MONOTONIC ns, 0 = never) is in
 * the future, checked here, so bans lapse even when the daemon is gone; the
 * daemon's sweeper deletes them later. An expired ban never shadows a wider
 * one in force: banned() looks past up to AG_BAN_DEPTH nested bans. Each trie
 * has a prefilter (prefilter.h): the loader sets a ban's bits before it writes
 * the ban, so a source whose bit is clear is in no ban. */
#ifndef APIGUARD_BANS_H
#define APIGUARD_BANS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "addr.h"
#include "parse.h"
#include "prefilter.h"

/* How many nested bans an address is looked up through when the narrowest
 * ones have expired (and are not swept yet): a host ban inside a prefix ban
 * inside a range is three. */
#ifndef AG_BAN_DEPTH
#define AG_BAN_DEPTH 4
#endif

struct ag_ban {
	__u64 expires;		/* ns, CLOCK_MONOTONIC; 0 = never */
	__u32 reason;		/* opaque to the kernel: who or what made the ban */
	__u32 prefixlen;	/* the entry's own length: an expired ban gives way to a wider one */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ag_lpm4);
	__type(value, struct ag_ban);
	__uint(max_entries, AG_BAN_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* entries are allocated only when used */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bans4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ag_lpm6);
	__type(value, struct ag_ban);
	__uint(max_entries, AG_BAN_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bans6 SEC(".maps");

static __always_inline int ban_in_force(const struct ag_ban *ban, __u64 now)
{
	return !ban->expires || ban->expires > now;
}

/* An expired ban was the narrowest around the source: is a wider one in
 * force? The lookup goes on from just above the expired one's length. Global,
 * so the verifier walks the loop once rather than once for every way the guard
 * can reach it; only a source inside an expired ban not yet swept pays the call. */
__attribute__((noinline)) int banned_wider(const struct pkt *p, __u32 below)
{
	struct ag_lpm6 k = {};
	const struct ag_ban *ban;
	__u64 now = bpf_ktime_get_coarse_ns();

	if (!p)
		return 0;
	/* ag_lpm4 is ag_lpm6 cut short: the same key serves both tries */
	if (p->family == 4)
		__builtin_memcpy(k.addr, &p->addr[12], 4);
	else
		__builtin_memcpy(k.addr, p->addr, 16);
	for (int i = 0; i < AG_BAN_DEPTH - 1; i++) {
		/* 0: nothing wider (or a ban written before lengths were kept) */
		if (!below || below > 128)
			return 0;
		k.prefixlen = below - 1;
		if (p->family == 4)
			ban = bpf_map_lookup_elem(&bans4, &k);
		else
			ban = bpf_map_lookup_elem(&bans6, &k);
		if (!ban)
			return 0;
		if (ban_in_force(ban, now))
			return 1;
		if (ban->prefixlen >= below)
			return 0;
		below = ban->prefixlen;
	}
	return 0;
}

/* Is the source inside a ban in force? The trie gives the narrowest ban; an
 * expired one must not shadow a wider ban still in force (the detector's
 * expired host ban inside its aggregate prefix ban, until the sweeper comes). */
static __always_inline int banned(const struct pkt *p)
{
	const struct ag_ban *ban;

	if (!prefilter_may_hold(AG_PF_BANS, p->addr, p->family))
		return 0;
	ban = lpm_lookup(&bans4, &bans6, p->addr, p->family);
	if (!ban)
		return 0;
	if (ban_in_force(ban, bpf_ktime_get_coarse_ns()))
		return 1;
	return banned_wider(p, ban->prefixlen);
}

#endif
