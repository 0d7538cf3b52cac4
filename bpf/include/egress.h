/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The egress side: the server's segments, seen by a TC egress program on the
 * guarded interface. They carry what no spoofed packet can: proof that a
 * client completed a handshake (proof.h, proven.h), and the server's half of
 * the connections to capped services (conntrack.h).
 *
 * Contract: egress() reads the segment through the one parser and never
 * drops: replies always leave. A segment counts only as what its sender can
 * vouch for (sender_of()): a forged one (a raw socket writing a service's
 * segments) proves neither a client nor a source. */
#ifndef APIGUARD_EGRESS_H
#define APIGUARD_EGRESS_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "config.h"
#include "parse.h"
#include "proof.h"
#include "proven.h"
#include "conntrack.h"

#define AG_AF_INET 2		/* socket families and types, as struct bpf_sock names them */
#define AG_AF_INET6 10
#define AG_SOCK_STREAM 1

#ifndef AG_MAX_GUARDED_IFACES
#define AG_MAX_GUARDED_IFACES 64
#endif

/* The interfaces the guard is attached to, by ifindex (the loader writes one
 * as it attaches): a segment without a socket that came in through one of
 * them was written by a host outside, and routed through this one by a
 * forwarding host, not sent by a container behind it (sender_of). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, AG_MAX_GUARDED_IFACES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} guarded_ifaces SEC(".maps");

/* A segment without a socket: forwarded (from a container or a VM behind
 * another interface; trusted, with data: docs/conntrack.md), or a SYN
 * cookie's SYN-ACK (which came in through no interface). One that came in
 * through a guarded interface (the very one it leaves by, or another) was
 * routed through by a host that forwards: a host on that link wrote it, with
 * any source port and destination it liked; no service of this host sent
 * it. */
static __always_inline __u8 sender_unowned(struct __sk_buff *skb)
{
	__u32 iif = skb->ingress_ifindex;

	if (iif && (iif == skb->ifindex || bpf_map_lookup_elem(&guarded_ifaces, &iif)))
		return AG_SENDER_FORGED;
	return AG_SENDER_FORWARDED;
}

/* Who sent a segment leaving through the egress hook. Proven clients and
 * proven sources take a segment from a local socket only when the socket is a
 * TCP connection past its handshake: not a raw or packet socket forging a
 * service's segments (CAP_NET_RAW is enough for either), not a request or
 * TIME_WAIT socket (or the per-CPU control socket that sends resets and their
 * ACKs), and not a Fast Open child whose handshake never completed. Such a
 * child is created by a SYN with data and may answer it at once; closed, it
 * moves on to FIN_WAIT1 without any ACK from its peer, so its state alone
 * proves nothing. What does is an RTT sample: the kernel takes one only from
 * an acceptable ACK of what the socket sent (the SYN-ACK first), which a
 * blind spoofer cannot write. Forwarded packets have no socket here
 * (sender_unowned). */
static __always_inline __u8 sender_of(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	struct bpf_tcp_sock *tp;

	if (!sk)
		return sender_unowned(skb);
	if (sk->state == BPF_TCP_NEW_SYN_RECV)
		return AG_SENDER_REQUEST;	/* the kernel's SYN-ACK (or its ACK to a half-open connection) */
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return AG_SENDER_FORGED;	/* a TIME_WAIT socket */
	/* Type 0 is no real socket: BPF_PROG_TEST_RUN gives its skbs a
	 * placeholder of type 0, and every socket that sends has a type. */
	if (!sk->type)
		return sender_unowned(skb);
	if (sk->family != AG_AF_INET && sk->family != AG_AF_INET6)
		return AG_SENDER_FORGED;	/* a packet socket writing whole frames */
	if (sk->type != AG_SOCK_STREAM || sk->protocol != IPPROTO_TCP)
		return AG_SENDER_FORGED;
	switch (sk->state) {
	case BPF_TCP_ESTABLISHED:
	case BPF_TCP_FIN_WAIT1:
	case BPF_TCP_FIN_WAIT2:
	case BPF_TCP_CLOSE_WAIT:
	case BPF_TCP_LAST_ACK:
	case BPF_TCP_CLOSING:
		break;
	default:
		return AG_SENDER_FORGED;
	}
	tp = bpf_tcp_sock(sk);
	if (!tp || !tp->srtt_us)
		return AG_SENDER_FORGED;	/* its peer never acknowledged anything */
	return AG_SENDER_CONNECTED;
}

/* A segment of this host's TCP services leaving, from sender (enum ag_sender);
 * gso: the skb's gso_size (a TSO or BIG TCP aggregate may say length 0). */
static __always_inline void egress(void *data, void *data_end, __u8 sender, __u32 gso)
{
	struct pkt s = {};
	const struct ag_conn_service *cs;
	const struct ag_config *cfg;
	__u32 slot, svc;

	cfg = policy(&slot);
	if (!cfg || !(cfg->conn_services | cfg->proven_services | cfg->prove_sources))
		return;
	if (parse_packet(data, data_end, &s, gso) != AG_R_OK || !pkt_has_tcp(&s))
		return;
	/* the server's port names the service */
	svc = service_of(slot, IPPROTO_TCP, s.sport);
	if (!svc)
		return;
	if (cfg->prove_sources)
		proof_egress(cfg, &s, sender);
	if ((sender == AG_SENDER_CONNECTED || sender == AG_SENDER_FORWARDED) &&
	    service_in(cfg->proven_services, svc))
		prove_client(cfg, &s, svc);
	cs = conn_service(cfg, slot, svc);
	if (cs && cs->track)
		conn_egress(&s, cs, slot);
}

#endif
