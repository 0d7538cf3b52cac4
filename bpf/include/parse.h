/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The one parser: cursor-based header parsing for every program (ingress,
 * egress). Every helper checks bounds before it reads and returns an
 * ag_reason on failure, so each malformed packet has a defined verdict.
 *
 * Contract: parse_packet() fills struct pkt and returns AG_R_OK, AG_R_NOT_IP
 * or a malformation reason. What it fills is all any stage reads of a packet:
 * no stage goes back to the packet's bytes. A frame the parser calls "not IP"
 * (AG_R_NOT_IP) is one the host's stack cannot deliver to an IP socket. The
 * kernel strips any number of VLAN tags with VLAN ID 0 (802.1Q or 802.1ad)
 * before it looks at the ethertype, with or without VLAN devices; the parser
 * reads AG_MAX_VLAN tags and refuses a frame still tagged after them
 * (AG_R_VLAN_STACK) rather than judging it as not IP. Other encapsulations
 * (IP-in-IP, GRE, VXLAN, MPLS, PPPoE) reach a socket only through a tunnel or
 * session device the host configured: their outer packet is judged
 * (policies/README.md, "What reaches the host"). */
#ifndef APIGUARD_PARSE_H
#define APIGUARD_PARSE_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "addr.h"

#ifndef AG_MAX_VLAN
#define AG_MAX_VLAN 2		/* 802.1ad QinQ: a service tag and a customer tag */
#endif
#ifndef AG_MAX_EXT_HDRS
#define AG_MAX_EXT_HDRS 6
#endif
#define AG_MAX_HDR_LEN 2048	/* no header is longer; bounds lengths for the verifier */

#define AG_IP_MF 0x2000		/* IPv4 more fragments */
#define AG_IP_OFFSET 0x1fff	/* IPv4 fragment offset, 8-byte units */
#define AG_IP6_OFFSET 0xfff8	/* IPv6 fragment offset, in place */
#define AG_IP6_MF 0x0001	/* IPv6 more fragments */

#define AG_FRAG_NONE 0
#define AG_FRAG_FIRST 1
#define AG_FRAG_LATER 2

#define AG_ICMP_HDR_LEN 4	/* type, code, checksum: what the parser reads of ICMP and ICMPv6 */
#define AG_ICMPV6_NDP_FIRST 133	/* router solicitation */
#define AG_ICMPV6_NDP_LAST 137	/* redirect */

#define AG_ARP_HW_LEN 6		/* Ethernet */
#define AG_ARP_PROTO_LEN 4	/* IPv4 */

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_PSH 0x08
#define TCPF_ACK 0x10
#define TCPF_URG 0x20

struct cursor {
	void *pos;
	void *end;
	__u32 ip_len;		/* bytes of IP payload left, as the IP header says */
	__u8 big;		/* the IP header says 0 of a GSO skb: a BIG TCP aggregate */
	__u8 gso;		/* TC, and the skb is a GSO aggregate (gso_size) */
};

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct ipv6_ext {
	__u8 nexthdr;
	__u8 len;
};

struct ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

/* What the pipeline needs to know about a packet, filled by parse_packet. */
struct pkt {
	__u8 addr[16];		/* source, v4-mapped for IPv4 */
	__u8 dst[16];		/* destination, v4-mapped */
	__u32 frag_id;		/* fragments: the IPv4 or IPv6 identification */
	__u32 len;
	__u32 seq;		/* TCP: sequence and acknowledgment numbers */
	__u32 ack;
	__u16 dport;		/* host order */
	__u16 sport;
	__u8 family;		/* 4 or 6; 0 for non-IP */
	__u8 proto;		/* L4 protocol, IPPROTO_NONE when unknown */
	__u8 tcp_flags;
	__u8 data;		/* TCP: the segment carries payload (or is a BIG TCP aggregate) */
	__u8 frag;		/* AG_FRAG_*; an IPv6 atomic fragment is AG_FRAG_NONE */
	__u8 icmp_type;
	__u8 arp;		/* an ARP frame; addr is its sender address */
};

/* Advance the cursor past a header of size len and return its start, or NULL. */
static __always_inline void *cursor_pull(struct cursor *c, __u32 len)
{
	void *start = c->pos;

	if (len > AG_MAX_HDR_LEN)
		return NULL;
	if (start + len > c->end)
		return NULL;
	c->pos = start + len;
	return start;
}

/* An IP header's own length field: what is left of the datagram after len more bytes of headers. */
static __always_inline void ip_len_consume(struct cursor *c, __u32 len)
{
	c->ip_len = c->ip_len > len ? c->ip_len - len : 0;
}

/* The tags the kernel unwraps (its eth_type_vlan): 802.1Q and 802.1ad. */
static __always_inline int eth_type_vlan(__u16 p)
{
	return p == ETH_P_8021Q || p == ETH_P_8021AD;
}

/* Reads the Ethernet header and up to AG_MAX_VLAN tags. A VLAN ethertype left
 * after them is refused: the kernel would strip more priority tags and deliver
 * what is inside. 0x9100 (pre-standard QinQ) is refused at any depth: Linux
 * never unwraps it, so nothing legitimate for this host carries it. */
static __always_inline int parse_eth(struct cursor *c, __u16 *proto)
{
	struct ethhdr *eth = cursor_pull(c, sizeof(*eth));
	__u16 p;

	if (!eth)
		return AG_R_TRUNCATED;
	p = bpf_ntohs(eth->h_proto);
#pragma unroll
	for (int i = 0; i < AG_MAX_VLAN; i++) {
		struct vlan_hdr *vh;

		if (!eth_type_vlan(p))
			break;
		vh = cursor_pull(c, sizeof(*vh));
		if (!vh)
			return AG_R_TRUNCATED;
		p = bpf_ntohs(vh->proto);
	}
	if (eth_type_vlan(p) || p == ETH_P_QINQ1)
		return AG_R_VLAN_STACK;
	*proto = p;
	return AG_R_OK;
}

/* ICMP is protocol 1 in IPv4 and 58 in IPv6; the other way round the kernel
 * has no handler for them: another protocol. */
static __always_inline int pkt_is_icmp(const struct pkt *p)
{
	return p->family == 4 ? p->proto == IPPROTO_ICMP : p->proto == IPPROTO_ICMPV6;
}

/* A TCP packet the state machines may read: its header was parsed (not a
 * later fragment, which carries none). */
static __always_inline int pkt_has_tcp(const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && p->frag != AG_FRAG_LATER;
}

/* Flag combinations no TCP stack sends: scans and stack fingerprinting. */
static __always_inline int tcp_flags_invalid(__u8 f)
{
	if (!(f & (TCPF_FIN | TCPF_SYN | TCPF_RST | TCPF_ACK)))
		return 1;		/* NULL, and PSH/URG-only probes */
	if ((f & TCPF_SYN) && (f & (TCPF_FIN | TCPF_RST)))
		return 1;		/* SYN+FIN, SYN+RST */
	if ((f & TCPF_FIN) && (f & TCPF_RST))
		return 1;
	if ((f & (TCPF_FIN | TCPF_PSH | TCPF_URG)) && !(f & TCPF_ACK))
		return 1;		/* XMAS (FIN+PSH+URG) and FIN/PSH/URG without ACK */
	return 0;
}

/* A SYN that opens a connection (no ACK: not the server's SYN-ACK). */
static __always_inline int tcp_syn(__u8 f)
{
	return (f & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN;
}

static __always_inline int parse_l4(struct cursor *c, struct pkt *p)
{
	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = cursor_pull(c, sizeof(*th));

		if (!th)
			return AG_R_TRUNCATED;
		if (th->doff < 5)
			return AG_R_MALFORMED;
		p->dport = bpf_ntohs(th->dest);
		p->sport = bpf_ntohs(th->source);
		p->seq = bpf_ntohl(th->seq);
		p->ack = bpf_ntohl(th->ack_seq);
		p->tcp_flags = ((__u8 *)th)[13];
		/* a length that does not add up is no data */
		p->data = c->big || c->ip_len > th->doff * 4;
		return AG_R_OK;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = cursor_pull(c, sizeof(*uh));

		if (!uh)
			return AG_R_TRUNCATED;
		p->dport = bpf_ntohs(uh->dest);
		p->sport = bpf_ntohs(uh->source);
		return AG_R_OK;
	}
	}
	if (pkt_is_icmp(p)) {
		__u8 *type = cursor_pull(c, AG_ICMP_HDR_LEN);

		if (!type)
			return AG_R_TRUNCATED;
		p->icmp_type = *type;
	}
	return AG_R_OK;
}

/* The transport header parse_l4 reads, in bytes. */
static __always_inline __u32 l4_hdr_len(const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return sizeof(struct tcphdr);
	if (p->proto == IPPROTO_UDP)
		return sizeof(struct udphdr);
	return pkt_is_icmp(p) ? AG_ICMP_HDR_LEN : 0;
}

static __always_inline int parse_ipv4(struct cursor *c, struct pkt *p)
{
	struct iphdr *iph = cursor_pull(c, sizeof(*iph));
	__u32 hlen, tot;
	__u16 frag;

	if (!iph)
		return AG_R_TRUNCATED;
	if (iph->version != 4 || iph->ihl < 5)
		return AG_R_MALFORMED;
	/* options: skip what the IHL says is there, measured from the header start
	 * so the verifier sees an offset of at most 60 */
	hlen = iph->ihl * 4;
	if ((void *)iph + hlen > c->end)
		return AG_R_TRUNCATED;
	c->pos = (void *)iph + hlen;
	/* The kernel trims the packet to its total length before anything
	 * reads it (0: a GRO or BIG TCP aggregate too big to say, only ever a
	 * GSO skb in TC; ip_rcv drops any other, the header being longer).
	 * Bytes of the frame past it are no part of the packet: read there, a
	 * first fragment's TCP flags would be whatever the sender put behind
	 * it, while the host takes them from the next fragment (RFC 1858's
	 * tiny fragment), and a RST of length 0 would release a slot. */
	tot = bpf_ntohs(iph->tot_len);
	c->big = !tot && c->gso;
	if (!c->big && hlen > tot)
		return AG_R_MALFORMED;
	c->ip_len = tot > hlen ? tot - hlen : 0;

	p->family = 4;
	p->proto = iph->protocol;
	v4_map(p->addr, &iph->saddr);
	v4_map(p->dst, &iph->daddr);

	frag = bpf_ntohs(iph->frag_off);
	if (frag & (AG_IP_OFFSET | AG_IP_MF)) {
		p->frag = frag & AG_IP_OFFSET ? AG_FRAG_LATER : AG_FRAG_FIRST;
		p->frag_id = bpf_ntohs(iph->id);
		if (p->frag == AG_FRAG_LATER)
			return AG_R_OK;
	}
	if (!c->big && hlen + l4_hdr_len(p) > tot)
		return AG_R_TRUNCATED;
	return parse_l4(c, p);
}

/* The transport header, read within the payload length as IPv4's is within
 * the total length (0 of a GSO skb: a BIG TCP aggregate, no limit; of any
 * other, ip6_rcv trims the packet to its bare header): the kernel trims the
 * packet to it and TCP discards a segment cut inside its header, so flags
 * read past it are whatever the sender put behind the packet (a "RST" the
 * server never sees would release its connection's slot). */
static __always_inline int parse_ipv6_l4(struct cursor *c, struct pkt *p)
{
	if (!c->big && c->ip_len < l4_hdr_len(p))
		return AG_R_TRUNCATED;
	return parse_l4(c, p);
}

/* Skips one IPv6 extension header of total length len (its first two bytes
 * are read already). */
static __always_inline int ipv6_ext_skip(struct cursor *c, __u32 len)
{
	if (!cursor_pull(c, len - sizeof(struct ipv6_ext)))
		return AG_R_TRUNCATED;
	ip_len_consume(c, len);
	return AG_R_OK;
}

static __always_inline int parse_ipv6(struct cursor *c, struct pkt *p)
{
	struct ipv6hdr *ip6 = cursor_pull(c, sizeof(*ip6));
	int seen_frag = 0;
	__u8 next;

	if (!ip6)
		return AG_R_TRUNCATED;
	if (ip6->version != 6)
		return AG_R_MALFORMED;
	p->family = 6;
	__builtin_memcpy(p->addr, &ip6->saddr, 16);
	/* an IPv4-mapped source never travels on the wire (RFC 4291 2.5.5.2),
	 * and its keys would be those of the IPv4 address it names */
	if (is_v4_mapped(p->addr))
		return AG_R_MALFORMED;
	__builtin_memcpy(p->dst, &ip6->daddr, 16);
	/* 0: a GRO or BIG TCP aggregate, only ever a GSO skb (with or without
	 * a jumbo hop-by-hop option, which is skipped as any other) */
	c->ip_len = bpf_ntohs(ip6->payload_len);
	c->big = !c->ip_len && c->gso;
	next = ip6->nexthdr;

#pragma unroll
	for (int i = 0; i < AG_MAX_EXT_HDRS; i++) {
		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS: {
			struct ipv6_ext *e = cursor_pull(c, sizeof(*e));

			if (!e)
				return AG_R_TRUNCATED;
			next = e->nexthdr;
			/* the header is (len + 1) * 8 bytes */
			if (ipv6_ext_skip(c, (e->len + 1) * 8))
				return AG_R_TRUNCATED;
			continue;
		}
		case IPPROTO_AH: {
			struct ipv6_ext *e = cursor_pull(c, sizeof(*e));

			if (!e)
				return AG_R_TRUNCATED;
			next = e->nexthdr;
			/* (len + 2) 4-byte words */
			if (ipv6_ext_skip(c, (e->len + 2) * 4))
				return AG_R_TRUNCATED;
			continue;
		}
		case IPPROTO_FRAGMENT: {
			struct ipv6_frag *f = cursor_pull(c, sizeof(*f));
			__u16 off;

			if (!f)
				return AG_R_TRUNCATED;
			/* one datagram, one fragment header (RFC 8200 4.1): a
			 * second would be a datagram inside a fragment */
			if (seen_frag)
				return AG_R_MALFORMED;
			seen_frag = 1;
			ip_len_consume(c, sizeof(*f));
			next = f->nexthdr;
			off = bpf_ntohs(f->frag_off);
			/* offset 0 without more fragments: an atomic fragment,
			 * which the kernel takes as a whole packet (RFC 6946) */
			if (!(off & (AG_IP6_OFFSET | AG_IP6_MF)))
				continue;
			p->frag_id = bpf_ntohl(f->id);
			if (off & AG_IP6_OFFSET) {
				p->proto = next;
				p->frag = AG_FRAG_LATER;
				return AG_R_OK;
			}
			p->frag = AG_FRAG_FIRST;
			continue;
		}
		default:
			p->proto = next;
			return parse_ipv6_l4(c, p);
		}
	}
	/* still inside extension headers after the bounded walk */
	switch (next) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
	case IPPROTO_AH:
	case IPPROTO_FRAGMENT:
		return AG_R_EXT_LIMIT;
	}
	p->proto = next;
	return parse_ipv6_l4(c, p);
}

/* ARP over Ethernet for IPv4: fixed header, then sender MAC and sender IP. A
 * deny entry may name the sender; anything else about ARP passes. */
static __always_inline void parse_arp(struct cursor *c, struct pkt *p)
{
	__u8 *a = cursor_pull(c, 8 + AG_ARP_HW_LEN + AG_ARP_PROTO_LEN);

	if (!a || a[4] != AG_ARP_HW_LEN || a[5] != AG_ARP_PROTO_LEN)
		return;
	p->arp = 1;
	p->family = 4;
	v4_map(p->addr, a + 8 + AG_ARP_HW_LEN);
}

/* parse_packet fills p and returns AG_R_OK, AG_R_NOT_IP or a malformation
 * reason. gso: the frame is a TC skb's that the kernel built as a GSO
 * aggregate (skb->gso_size; 0 at XDP, where none exists), the only packet
 * whose IP length field may say 0. */
static __always_inline int parse_packet(void *data, void *data_end, struct pkt *p, __u32 gso)
{
	struct cursor c = { .pos = data, .end = data_end, .gso = !!gso };
	__u16 proto;
	int r;

	r = parse_eth(&c, &proto);
	if (r != AG_R_OK)
		return r;
	if (proto == ETH_P_IP)
		return parse_ipv4(&c, p);
	if (proto == ETH_P_IPV6)
		return parse_ipv6(&c, p);
	if (proto == ETH_P_ARP)
		parse_arp(&c, p);
	return AG_R_NOT_IP;
}

#endif
