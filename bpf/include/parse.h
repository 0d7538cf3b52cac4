/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Cursor-based header parsing. Every helper checks bounds before it reads and
 * returns an ag_reason on failure, so each malformed packet has a defined verdict.
 *
 * Contract: a frame the parser calls "not IP" (AG_R_NOT_IP) is one the host's
 * stack cannot deliver to an IP socket. The kernel strips any number of VLAN
 * tags with VLAN ID 0 (802.1Q or 802.1ad) before it looks at the ethertype,
 * with or without VLAN devices; the parser reads AG_MAX_VLAN tags and refuses a
 * frame still tagged after them (AG_R_VLAN_STACK) rather than judging it as not
 * IP. Other encapsulations (IP-in-IP, GRE, VXLAN, MPLS, PPPoE) reach a socket
 * only through a tunnel or session device the host configured: their outer
 * packet is judged (policies/README.md, "What reaches the host"). */
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

#ifndef AG_MAX_VLAN
#define AG_MAX_VLAN 2		/* 802.1ad QinQ: a service tag and a customer tag */
#endif
#ifndef AG_MAX_EXT_HDRS
#define AG_MAX_EXT_HDRS 6
#endif

#define AG_IP_MF 0x2000		/* IPv4 more fragments */
#define AG_IP_OFFSET 0x1fff	/* IPv4 fragment offset, 8-byte units */
#define AG_IP6_OFFSET 0xfff8	/* IPv6 fragment offset, in place */
#define AG_IP6_MF 0x0001	/* IPv6 more fragments */

#define AG_FRAG_NONE 0
#define AG_FRAG_FIRST 1
#define AG_FRAG_LATER 2

#define AG_ICMPV6_NDP_FIRST 133	/* router solicitation */
#define AG_ICMPV6_NDP_LAST 137	/* redirect */

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_PSH 0x08
#define TCPF_ACK 0x10
#define TCPF_URG 0x20

struct cursor {
	void *pos;
	void *end;
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
	__u8 dst[16];		/* destination, v4-mapped; read only for fragments */
	__u32 frag_id;		/* fragments: the IPv4 or IPv6 identification */
	__u32 len;
	__u16 dport;		/* host order */
	__u16 sport;
	__u8 family;		/* 4 or 6; 0 for non-IP */
	__u8 proto;		/* L4 protocol, IPPROTO_NONE when unknown */
	__u8 tcp_flags;
	__u8 frag;		/* AG_FRAG_*; an IPv6 atomic fragment is AG_FRAG_NONE */
	__u8 icmp_type;
	__u8 arp;		/* an ARP frame; addr is its sender address */
};

/* Advance the cursor past a header of size len and return its start, or NULL. */
static __always_inline void *cursor_pull(struct cursor *c, __u32 len)
{
	void *start = c->pos;

	/* no header is this long; the check also bounds len for the verifier */
	if (len > 2048)
		return NULL;
	if (start + len > c->end)
		return NULL;
	c->pos = start + len;
	return start;
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
		p->tcp_flags = ((__u8 *)th)[13];
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
		__u8 *type = cursor_pull(c, 4);

		if (!type)
			return AG_R_TRUNCATED;
		p->icmp_type = *type;
	}
	return AG_R_OK;
}

/* ::ffff:a.b.c.d, the form every IPv4 address takes in keys */
static __always_inline void v4_map(__u8 out[16], const void *a4)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(&out[12], a4, 4);
}

/* The transport header parse_l4 reads, in bytes. */
static __always_inline __u32 l4_hdr_len(const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return sizeof(struct tcphdr);
	if (p->proto == IPPROTO_UDP)
		return sizeof(struct udphdr);
	return pkt_is_icmp(p) ? 4 : 0;
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
	 * reads it (0: a GRO aggregate too big to say, in TC mode; the kernel
	 * drops any other). Bytes of the frame past it are no part of the
	 * packet: read there, a first fragment's TCP flags would be whatever
	 * the sender put behind it, while the host takes them from the next
	 * fragment (RFC 1858's tiny fragment). */
	tot = bpf_ntohs(iph->tot_len);
	if (tot && hlen > tot)
		return AG_R_MALFORMED;

	p->family = 4;
	p->proto = iph->protocol;
	v4_map(p->addr, &iph->saddr);

	frag = bpf_ntohs(iph->frag_off);
	if (frag & (AG_IP_OFFSET | AG_IP_MF)) {
		p->frag = frag & AG_IP_OFFSET ? AG_FRAG_LATER : AG_FRAG_FIRST;
		p->frag_id = bpf_ntohs(iph->id);
		v4_map(p->dst, &iph->daddr);
		if (p->frag == AG_FRAG_LATER)
			return AG_R_OK;
	}
	if (tot && hlen + l4_hdr_len(p) > tot)
		return AG_R_TRUNCATED;
	return parse_l4(c, p);
}

static __always_inline int ipv6_v4_mapped(const __u8 a[16])
{
	const __u32 *w = (const __u32 *)a;

	return !w[0] && !w[1] && w[2] == bpf_htonl(0x0000ffff);
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
	if (ipv6_v4_mapped(p->addr))
		return AG_R_MALFORMED;
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
			/* the header is (len + 1) * 8 bytes; 2 are already consumed */
			if (!cursor_pull(c, (e->len + 1) * 8 - sizeof(*e)))
				return AG_R_TRUNCATED;
			continue;
		}
		case IPPROTO_AH: {
			struct ipv6_ext *e = cursor_pull(c, sizeof(*e));

			if (!e)
				return AG_R_TRUNCATED;
			next = e->nexthdr;
			if (!cursor_pull(c, (e->len + 2) * 4 - sizeof(*e)))
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
			next = f->nexthdr;
			off = bpf_ntohs(f->frag_off);
			/* offset 0 without more fragments: an atomic fragment,
			 * which the kernel takes as a whole packet (RFC 6946) */
			if (!(off & (AG_IP6_OFFSET | AG_IP6_MF)))
				continue;
			p->frag_id = bpf_ntohl(f->id);
			__builtin_memcpy(p->dst, &ip6->daddr, 16);
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
			return parse_l4(c, p);
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
	return parse_l4(c, p);
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

/* ARP over Ethernet for IPv4: fixed header, then sender MAC and sender IP. A
 * deny entry may name the sender; anything else about ARP passes. */
static __always_inline void parse_arp(struct cursor *c, struct pkt *p)
{
	__u8 *a = cursor_pull(c, 8 + 6 + 4);

	if (!a || a[4] != 6 || a[5] != 4)
		return;
	p->arp = 1;
	p->family = 4;
	v4_map(p->addr, a + 14);
}

/* parse_packet fills p and returns AG_R_OK, AG_R_NOT_IP or a malformation reason. */
static __always_inline int parse_packet(void *data, void *data_end, struct pkt *p)
{
	struct cursor c = { .pos = data, .end = data_end };
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
