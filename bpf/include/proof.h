/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Proven sources: addresses this host's TCP services spoke to on a connection
 * past its handshake. A blind spoofer can write any source address into a SYN
 * or a datagram, but it never completes a handshake (it never sees the
 * server's sequence number), so the server never talks to it on a connection.
 * The detector bans on spoofable evidence (floods, SYNs to closed ports,
 * invalid flags) only a source found here; docs/detection.md has the reasoning
 * and what remains.
 *
 * Contract: the egress program (conn_track_egress) calls prove_source with a
 * parsed server segment of a TCP service and who sent it (ag_sender). Only the
 * egress side writes, so spoofed packets cannot churn the table; the key is the
 * client address masked to the policy's client key; the value is when, coarse
 * ns, written at most once per AG_PROOF_REFRESH per key. */
#ifndef APIGUARD_PROOF_H
#define APIGUARD_PROOF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "parse.h"

#ifndef AG_PROOF_CAPACITY
#define AG_PROOF_CAPACITY (1 << 16)
#endif
#ifndef AG_PROOF_REFRESH
#define AG_PROOF_REFRESH 1000000000ULL	/* ns: a busy connection writes once a second */
#endif

/* Who put a server segment on the wire, as far as the egress hook can tell. */
enum ag_sender {
	AG_SENDER_FORGED = 0,	/* a local socket that is no TCP connection past its handshake */
	AG_SENDER_FORWARDED,	/* no local socket: routed traffic, or a non-inet sender */
	AG_SENDER_CONNECTED,	/* a local TCP socket past its handshake */
};

struct ag_src_key {
	__u8 addr[16];		/* v4-mapped for IPv4, masked to the client key */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ag_src_key);
	__type(value, __u64);
	__uint(max_entries, AG_PROOF_CAPACITY);
} proven_sources SEC(".maps");

/* The server sent this segment to daddr on a connection. From a local socket
 * past its handshake any segment but a SYN or a RST proves its peer (data, the
 * ACK of a FIN, a keepalive probe, the server's own FIN): the socket exists
 * because the peer answered the server's ISN. A forwarded segment has no
 * socket to vouch for it, so only data counts, as for proven clients
 * (conntrack.h prove_client): a bare ACK is what a stack answers a half-open
 * connection's out-of-window segment with, and a blind spoofer can elicit it. */
static __always_inline void prove_source(const struct ag_config *cfg, const __u8 daddr[16], __u8 family,
					 __u8 flags, __u8 data, __u8 sender)
{
	struct ag_src_key k;
	__u64 now, *seen;

	if (sender == AG_SENDER_FORGED || (flags & (TCPF_SYN | TCPF_RST)) || !(flags & TCPF_ACK))
		return;
	if (sender != AG_SENDER_CONNECTED && !data)
		return;
	mask_addr(k.addr, daddr, family == 4 ? 96 + cfg->client_bits4 : cfg->client_bits6);
	now = bpf_ktime_get_coarse_ns();
	seen = bpf_map_lookup_elem(&proven_sources, &k);
	if (seen && now - *seen < AG_PROOF_REFRESH)
		return;
	bpf_map_update_elem(&proven_sources, &k, &now, BPF_ANY);
}

#endif
