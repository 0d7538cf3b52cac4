/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Prefilters: a bitmap beside each LPM trie keyed by a bare source (the
 * allow/deny lists of each policy slot, the bans), so that a source no entry
 * can cover skips the trie walk.
 *
 * Contract: false positives only. A bit stands for a block of sources: an
 * IPv4 /16 (AG_PF_V4_BITS), or an IPv6 /32 (AG_PF_V6_BITS) hashed onto the
 * same 65,536 bits. The loader (loader/prefilter.go) sets every bit an entry
 * covers BEFORE it writes the entry into the trie, and clears bits only by
 * writing a bitmap rebuilt from what the trie holds. A bitmap is trusted only
 * when the loader marked it AG_PF_READY: a map the kernel just created (all
 * zeros) walks the trie for every source. AG_PF_WALK says the trie holds an
 * entry shorter than the granularity (IPv6 only: an IPv4 entry shorter than a
 * /16 sets all the /16 bits it covers), and the trie is walked for every
 * source of the family. A clear bit therefore proves no entry covers the
 * source; a set one proves nothing. */
#ifndef APIGUARD_PREFILTER_H
#define APIGUARD_PREFILTER_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"

struct ag_prefilter {
	__u32 flags;	/* AG_PF_READY, AG_PF_WALK */
	__u32 _pad;
	__u64 bits[AG_PF_WORDS];
};

/* AG_PF_LISTS + 2 * slot + (IPv6), AG_PF_BANS + (IPv6) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_prefilter);
	__uint(max_entries, AG_PF_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} prefilters SEC(".maps");

/* Must the trie be walked for addr? 0 only when the bitmap proves that no
 * entry of the trie covers it. */
static __always_inline int prefilter_may_hold(__u32 which, const __u8 addr[16], __u8 family)
{
	const struct ag_prefilter *pf;
	__u32 bit, top;

	which += family == 4 ? 0 : 1;
	pf = bpf_map_lookup_elem(&prefilters, &which);
	if (!pf || (pf->flags & (AG_PF_READY | AG_PF_WALK)) != AG_PF_READY)
		return 1;
	if (family == 4) {
		bit = (__u32)addr[12] << 8 | addr[13];
	} else {
		__builtin_memcpy(&top, addr, 4);
		bit = (bpf_ntohl(top) * AG_PF_V6_HASH) >> (32 - AG_PF_V4_BITS);
	}
	return (pf->bits[(bit >> 6) & (AG_PF_WORDS - 1)] >> (bit & 63)) & 1;
}

#endif
