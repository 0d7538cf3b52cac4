/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Addresses, keys and the one address hash.
 *
 * Contract: every address the datapath keeps or looks up is 16 bytes, network
 * order, an IPv4 address in its v4-mapped form (::ffff:a.b.c.d), so one code
 * path serves both families; an IPv4 /n is the v4-mapped /96+n
 * (AG_V4_MAPPED_BITS). A client key (struct ag_client_key) is an address
 * masked to a prefix length with a service id: built only by client_key(),
 * with the length key_bits() picks for the family. Tries keyed by the bare
 * address come in pairs (IPv4 key, IPv6 key) and are looked up by
 * lpm_lookup(). */
#ifndef APIGUARD_ADDR_H
#define APIGUARD_ADDR_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"

#define AG_V4_MAPPED_MARK 0x0000ffff	/* the third word of a v4-mapped address */

static __always_inline void v4_map(__u8 out[16], const void *a4)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(&out[12], a4, 4);
}

static __always_inline int is_v4_mapped(const __u8 a[16])
{
	const __u32 *w = (const __u32 *)a;

	return !w[0] && !w[1] && w[2] == bpf_htonl(AG_V4_MAPPED_MARK);
}

/* Keys are only 4-byte aligned: go through memcpy so the verifier sees no
 * misaligned 8-byte stack access. */
static __always_inline void mask_addr(__u8 out[16], const __u8 in[16], __u32 bits)
{
	__u64 hi, lo;

	__builtin_memcpy(&hi, in, 8);
	__builtin_memcpy(&lo, in + 8, 8);
	hi = bpf_be64_to_cpu(hi);
	lo = bpf_be64_to_cpu(lo);
	if (bits < 64) {
		hi = bits ? hi & (~0ULL << (64 - bits)) : 0;
		lo = 0;
	} else if (bits < 128) {
		lo = bits > 64 ? lo & (~0ULL << (128 - bits)) : 0;
	}
	hi = bpf_cpu_to_be64(hi);
	lo = bpf_cpu_to_be64(lo);
	__builtin_memcpy(out, &hi, 8);
	__builtin_memcpy(out + 8, &lo, 8);
}

/* The prefix length of a key over a 16-byte address of family (4 or 6),
 * given the policy's lengths for each family. */
static __always_inline __u32 key_bits(__u8 family, __u8 bits4, __u8 bits6)
{
	return family == 4 ? AG_V4_MAPPED_BITS + bits4 : bits6;
}

static __always_inline void client_key(struct ag_client_key *k, const __u8 addr[16], __u32 bits,
				       __u32 service)
{
	mask_addr(k->addr, addr, bits);
	k->service = service;
	k->_pad = 0;
}

/* The longest-prefix match of addr in a pair of tries keyed by ag_lpm4 and
 * ag_lpm6; NULL when neither holds it. */
static __always_inline void *lpm_lookup(void *map4, void *map6, const __u8 addr[16], __u8 family)
{
	if (family == 4) {
		struct ag_lpm4 k = { .prefixlen = 32 };

		__builtin_memcpy(k.addr, &addr[12], 4);
		return bpf_map_lookup_elem(map4, &k);
	}
	struct ag_lpm6 k6 = { .prefixlen = 128 };

	__builtin_memcpy(k6.addr, addr, 16);
	return bpf_map_lookup_elem(map6, &k6);
}

/* A 64-bit mix of an address and a few more bits (seed): slots and tags of
 * the direct-mapped tables (refusals.h, events.h, proof.h). Public: a table
 * indexed by it must match its entries exactly, never by hash alone. */
static __always_inline __u64 addr_hash(const __u8 addr[16], __u64 seed)
{
	const __u32 *w = (const __u32 *)addr;
	__u64 h = seed * 0x9e3779b97f4a7c15ULL;

	h ^= (__u64)w[0] * 0xc2b2ae3d27d4eb4fULL;
	h ^= (__u64)w[1] * 0x165667b19e3779f9ULL;
	h ^= (__u64)w[2] * 0x27d4eb2f165667c5ULL;
	h ^= (__u64)w[3] * 0x94d049bb133111ebULL;
	return h ^ (h >> 29);
}

#endif
