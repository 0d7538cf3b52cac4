/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Proven sources: addresses this host's TCP services spoke to on a connection
 * past its handshake. A blind spoofer can write any source address into a SYN
 * or a datagram, but it never completes a handshake (it never sees the
 * server's sequence number), so the server never talks to it on a connection.
 * The detector bans on spoofable evidence (floods, SYNs to closed ports,
 * invalid flags) only a source found here; docs/detection.md has the reasoning
 * and what remains.
 *
 * Two things prove a source, both seen from this host's side of a connection:
 *
 * - the handshake itself: the egress program remembers the initial sequence
 *   number of each SYN-ACK the kernel sends (expect_handshake, a small
 *   direct-mapped table), and the guard proves the client whose ACK
 *   acknowledges exactly that number plus one (handshake_acked): a blind
 *   spoofer never sees it, so its chance is one in 2^32 per try;
 * - the server speaking on the connection afterwards (prove_source from the
 *   egress program): this covers connections whose handshake the table missed.
 *
 * Contract: the egress program (egress.h) calls proof_egress() with the
 * server's parsed segments of a TCP service and who sent them (ag_sender);
 * the ingress pipeline calls proof_ingress() after the verdict, for an ACK it
 * passed to a TCP service. Spoofed packets cannot write proven_sources (only
 * acknowledged handshakes and the server's own segments do), nor choose what
 * the handshake table expects. The key is the client address masked to the
 * policy's client key; the value is when, coarse ns, written at most once per
 * AG_PROOF_REFRESH per key. */
#ifndef APIGUARD_PROOF_H
#define APIGUARD_PROOF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "addr.h"
#include "config.h"
#include "parse.h"

#ifndef AG_PROOF_CAPACITY
#define AG_PROOF_CAPACITY (1 << 16)
#endif
#ifndef AG_PROOF_REFRESH
#define AG_PROOF_REFRESH 1000000000ULL	/* ns: a busy connection writes once a second */
#endif

#ifndef AG_HANDSHAKE_SLOTS
#define AG_HANDSHAKE_SLOTS 2048	/* 80 KiB: every ACK to a TCP service reads a slot's tag */
#endif

#ifndef AG_HANDSHAKE_TTL
/* ns a SYN-ACK waits for its ACK: about how long the kernel keeps the
 * handshake's request socket (five retransmissions, 1 s doubling) */
#define AG_HANDSHAKE_TTL 64000000000ULL
#endif

/* Who put a server segment on the wire, as far as the egress hook can tell. */
enum ag_sender {
	AG_SENDER_FORGED = 0,	/* a local socket that is no TCP connection past its handshake */
	AG_SENDER_FORWARDED,	/* no local socket: routed traffic, a SYN cookie, or a non-inet sender */
	AG_SENDER_CONNECTED,	/* a local TCP socket past its handshake */
	AG_SENDER_REQUEST,	/* the request socket of a handshake: the kernel's SYN-ACK */
};

/* A SYN-ACK sent, in the slot a hash of its 4-tuple names. The slot holds
 * the 4-tuple itself: the hash has no secret, so a client can compute another
 * address whose 4-tuple shares its slot and tag, and acknowledge its own
 * SYN-ACK's ISN from there. The lock keeps the fields of one SYN-ACK
 * together: two SYN-ACKs written at once on two CPUs must not leave one's
 * 4-tuple with the other's ISN. */
struct ag_handshake {
	struct bpf_spin_lock lock;
	__u32 tag;	/* the hash's high half, never 0; 0: empty (read unlocked, a hint) */
	__u32 isn;	/* the server's initial sequence number */
	__u16 cport;	/* the client's port */
	__u16 sport;	/* the service's port */
	__u64 sent;	/* coarse ns of the latest SYN-ACK (retransmissions too) */
	__u8 client[16];	/* v4-mapped for IPv4 */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_handshake);
	__uint(max_entries, AG_HANDSHAKE_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} handshakes SEC(".maps");

struct ag_src_key {
	__u8 addr[16];		/* v4-mapped for IPv4, masked to the client key */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ag_src_key);
	__type(value, __u64);
	__uint(max_entries, AG_PROOF_CAPACITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} proven_sources SEC(".maps");

/* Records that addr (masked to the client key) proved itself now. */
static __always_inline void record_proof(const struct ag_config *cfg, const __u8 addr[16], __u8 family)
{
	struct ag_src_key k;
	__u64 now, *seen;

	mask_addr(k.addr, addr, key_bits(family, cfg->client_bits4, cfg->client_bits6));
	now = bpf_ktime_get_coarse_ns();
	seen = bpf_map_lookup_elem(&proven_sources, &k);
	if (seen && now - *seen < AG_PROOF_REFRESH)
		return;
	bpf_map_update_elem(&proven_sources, &k, &now, BPF_ANY);
}

/* The server sent this segment to daddr on a connection. From a local socket
 * past its handshake any segment but a SYN or a RST proves its peer (data, the
 * ACK of a FIN, a keepalive probe, the server's own FIN): the socket exists
 * because the peer answered the server's ISN. A forwarded segment has no
 * socket to vouch for it, so only data counts, as for proven clients
 * (proven.h prove_client): a bare ACK is what a stack answers a half-open
 * connection's out-of-window segment with, and a blind spoofer can elicit it. */
static __always_inline void prove_source(const struct ag_config *cfg, const __u8 daddr[16], __u8 family,
					 __u8 flags, __u8 data, __u8 sender)
{
	if ((sender != AG_SENDER_CONNECTED && sender != AG_SENDER_FORWARDED) ||
	    (flags & (TCPF_SYN | TCPF_RST)) || !(flags & TCPF_ACK))
		return;
	if (sender == AG_SENDER_FORWARDED && !data)
		return;
	record_proof(cfg, daddr, family);
}

/* One hash of (client address, client port, service port) names a slot and
 * its tag. A slot is shared by whichever handshakes hash to it: the latest
 * wins, and an overwritten one is proven later, by the server's segments. */
static __always_inline __u64 handshake_hash(const __u8 client[16], __u16 cport, __u16 sport)
{
	return addr_hash(client, (__u64)cport << 16 | sport);
}

static __always_inline __u32 handshake_tag(__u64 h)
{
	return (__u32)(h >> 32) | 1;
}

/* Egress: the kernel sends a SYN-ACK (from a request socket, or with no
 * socket under SYN cookies): remember its 4-tuple and ISN for the client's
 * ACK. */
static __always_inline void expect_handshake(const __u8 client[16], __u16 cport, __u16 sport,
					     __u32 isn, __u8 flags, __u8 sender)
{
	__u64 h, now;
	__u32 idx;
	struct ag_handshake *slot;

	if ((flags & (TCPF_SYN | TCPF_ACK | TCPF_RST | TCPF_FIN)) != (TCPF_SYN | TCPF_ACK))
		return;
	if (sender != AG_SENDER_REQUEST && sender != AG_SENDER_FORWARDED)
		return;
	h = handshake_hash(client, cport, sport);
	idx = h & (AG_HANDSHAKE_SLOTS - 1);
	slot = bpf_map_lookup_elem(&handshakes, &idx);
	if (!slot)
		return;
	now = bpf_ktime_get_coarse_ns();	/* no helper call under the lock */
	bpf_spin_lock(&slot->lock);
	__builtin_memcpy(slot->client, client, 16);
	slot->cport = cport;
	slot->sport = sport;
	slot->isn = isn;
	slot->sent = now;
	slot->tag = handshake_tag(h);
	bpf_spin_unlock(&slot->lock);
}

/* Ingress, the cheap part, for every ACK to a TCP service: may a handshake
 * of this 4-tuple be expected? Returns its slot's index, or -1 (almost
 * always). The tag is read without the lock: handshake_acked decides. */
static __always_inline int handshake_expected(const __u8 client[16], __u16 cport, __u16 sport)
{
	__u64 h = handshake_hash(client, cport, sport);
	__u32 idx = h & (AG_HANDSHAKE_SLOTS - 1);
	struct ag_handshake *slot = bpf_map_lookup_elem(&handshakes, &idx);

	if (!slot || slot->tag != handshake_tag(h))
		return -1;
	return idx;
}

/* Ingress, on a slot whose tag matched: an ACK from exactly the slot's
 * 4-tuple, of exactly ISN+1, completes the handshake and proves the client,
 * as the kernel's own check completes it (so a blind guess is worth no more
 * here than against TCP itself), while the kernel still waits for it. The
 * slot is emptied once the ACK matched, so it serves one handshake. */
static __always_inline void handshake_acked(const struct ag_config *cfg, struct ag_handshake *slot,
					    const __u8 client[16], __u16 cport, __u16 sport, __u8 family,
					    __u8 flags, __u32 ack)
{
	const __u32 *a = (const __u32 *)client;
	__u64 now;
	int match;

	if ((flags & (TCPF_SYN | TCPF_RST | TCPF_ACK)) != TCPF_ACK)
		return;
	now = bpf_ktime_get_coarse_ns();	/* no helper call under the lock */
	bpf_spin_lock(&slot->lock);
	{
		const __u32 *s = (const __u32 *)slot->client;

		match = slot->tag && slot->cport == cport && slot->sport == sport && ack == slot->isn + 1 &&
			now - slot->sent <= AG_HANDSHAKE_TTL &&
			s[0] == a[0] && s[1] == a[1] && s[2] == a[2] && s[3] == a[3];
	}
	if (match)
		slot->tag = 0;
	bpf_spin_unlock(&slot->lock);
	if (match)
		record_proof(cfg, client, family);
}

/* Ingress, on a slot whose tag matched. Global, so the verifier checks it
 * once; the slot is looked up here, not passed in: its lock needs a map value. */
__attribute__((noinline)) int proof_acked(const struct pkt *p, __u32 idx)
{
	struct ag_handshake *slot = bpf_map_lookup_elem(&handshakes, &idx);
	const struct ag_config *cfg;
	__u32 policy_slot;

	cfg = policy(&policy_slot);
	if (!p || !slot || !cfg)
		return 0;
	handshake_acked(cfg, slot, p->addr, p->sport, p->dport, p->family, p->tcp_flags, p->ack);
	return 0;
}

/* Ingress, after the verdict: an ACK the guard passed to a TCP service, when
 * the policy proves sources, may complete a handshake the egress program saw
 * begin. Most cost a hash and a read of a small table. */
static __always_inline void proof_ingress(const struct pkt *p, const struct verdict *v)
{
	int idx;

	if (!v->proof || v->action != AG_ACT_PASS)
		return;
	idx = handshake_expected(p->addr, p->sport, p->dport);
	if (idx >= 0)
		proof_acked(p, idx);
}

/* Egress: a segment the server sent to client s->dst, and who sent it. */
static __always_inline void proof_egress(const struct ag_config *cfg, const struct pkt *s, __u8 sender)
{
	expect_handshake(s->dst, s->dport, s->sport, s->seq, s->tcp_flags, sender);
	prove_source(cfg, s->dst, s->family, s->tcp_flags, s->data, sender);
}

#endif
