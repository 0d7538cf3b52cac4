/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Proven clients: client keys of a TCP service that the server sent data to
 * recently. They completed a handshake, which a blind spoofer cannot, so
 * their SYNs skip the service's shared new-connection buckets (prefix and
 * total): a spoofed SYN flood fills those and must not lock out the clients
 * the server already talks to. Their SYNs are still charged there
 * (limits.h), and their own client bucket still bounds them.
 *
 * Contract: only the egress program writes the table (prove_client(), from a
 * segment a connected or forwarding sender put on the wire: egress.h), so
 * spoofed packets cannot churn it; many real clients can (least recently used
 * go first). The key is the client key of the policy in force (addr.h); the
 * value is when, coarse ns, written at most once per AG_PROVEN_REFRESH. */
#ifndef APIGUARD_PROVEN_H
#define APIGUARD_PROVEN_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "addr.h"
#include "config.h"
#include "counters.h"
#include "parse.h"

#ifndef AG_PROVEN_CAPACITY
#define AG_PROVEN_CAPACITY (1 << 16)
#endif
#ifndef AG_PROVEN_REFRESH
#define AG_PROVEN_REFRESH 1000000000ULL	/* ns: a busy connection writes once a second */
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ag_client_key);
	__type(value, __u64);
	__uint(max_entries, AG_PROVEN_CAPACITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} proven SEC(".maps");

/* Ingress, a SYN to service svc: is its client proven (now - seen below the
 * policy's TTL)? The client key is built into ckey either way. */
static __always_inline int proven_client(const struct ag_config *cfg, const struct pkt *p, __u32 svc,
					 __u64 now, struct ag_client_key *ckey)
{
	const __u64 *seen;

	client_key(ckey, p->addr, key_bits(p->family, cfg->client_bits4, cfg->client_bits6), svc);
	seen = bpf_map_lookup_elem(&proven, ckey);
	if (!seen || now - *seen >= cfg->proven_ttl)
		return 0;
	stat_inc(AG_STAT_PROVEN_SYN);
	return 1;
}

/* Egress: the server sent the client (s->dst) data on a connection. Only data
 * counts: a bare ACK is what the kernel answers a half-open connection's
 * out-of-window segment with (and a challenge ACK, and a TIME_WAIT ACK), and
 * a blind spoofer can elicit those. */
static __always_inline void prove_client(const struct ag_config *cfg, const struct pkt *s, __u32 svc)
{
	struct ag_client_key ck;
	__u64 now, *seen;

	if ((s->tcp_flags & (TCPF_SYN | TCPF_RST)) || !(s->tcp_flags & TCPF_ACK) || !s->data)
		return;
	client_key(&ck, s->dst, key_bits(s->family, cfg->client_bits4, cfg->client_bits6), svc);
	now = bpf_ktime_get_coarse_ns();
	seen = bpf_map_lookup_elem(&proven, &ck);
	if (seen && now - *seen < AG_PROVEN_REFRESH)
		return;
	bpf_map_update_elem(&proven, &ck, &now, BPF_ANY);
}

#endif
