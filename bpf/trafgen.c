// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Benchmark-only programs, not part of the guard: the live-path traffic
 * generator and the trivial XDP_DROP and XDP_PASS programs. (The per-packet
 * benchmarks and their calibrations are test/bench/guardbench.)
 *
 * Two generators rewrite a template frame's source address (one source, N
 * sources in turn, or random) with checksums kept valid: trafgen, run with
 * BPF_PROG_TEST_RUN in live-frames mode, transmits each copy with XDP_TX out
 * of the generator's veth; where the kernel refuses live frames, fanout_frames
 * and fanout_source multiply frames sent from an AF_PACKET socket through a
 * devmap broadcast (test/bench/trafgen). And the lab's edge (lab_edge), where
 * the guard's answers to spoofed sources leave the lab. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct gen_consts {
	__u32 sources;		/* 0 or 1: leave the source alone; else cycle over this many */
	__u32 random;		/* draw the source at random instead of in turn */
	__u32 addr_off;		/* offset of the 4 source address bytes to vary */
	__u32 ip_csum_off;	/* IPv4 header checksum, 0 for IPv6 */
	__u32 l4_csum_off;	/* UDP/TCP checksum (covers the address through the pseudo-header) */
};

volatile const struct gen_consts gen;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} gen_seq SEC(".maps");

/* RFC 1624 incremental update of a 16-bit one's complement checksum for a
 * 32-bit word that changed from old to new. */
static __always_inline __u16 csum_replace4(__u16 check, __u32 old, __u32 new)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~(old >> 16) + (__u16)~(old & 0xffff);
	sum += (new >> 16) + (new & 0xffff);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* Gives the frame the next source: in turn over gen.sources values, or at
 * random, with checksums kept valid. 0 on success, -1 on a frame that does not
 * fit the template's offsets. */
static __always_inline int next_source(void *data, void *data_end)
{
	__u32 off = gen.addr_off, zero = 0, old, new, idx;
	__u64 *seq;
	__be32 *addr;

	if (gen.sources <= 1)
		return 0;
	if (off > 64 || data + off + 4 > data_end)
		return -1;
	addr = data + off;
	if (gen.random) {
		idx = bpf_get_prandom_u32() % gen.sources;
	} else {
		seq = bpf_map_lookup_elem(&gen_seq, &zero);
		if (!seq)
			return -1;
		idx = (*seq)++ % gen.sources;
	}
	old = bpf_ntohl(*addr);
	/* vary the low 24 bits, keep the first octet so sources stay in one /8 */
	new = (old & 0xff000000) | (idx & 0x00ffffff);
	*addr = bpf_htonl(new);

	if (gen.ip_csum_off) {
		__u16 *c = data + (gen.ip_csum_off & 0xff);

		if ((void *)(c + 1) > data_end)
			return -1;
		*c = bpf_htons(csum_replace4(bpf_ntohs(*c), old, new));
	}
	if (gen.l4_csum_off) {
		__u16 *c = data + (gen.l4_csum_off & 0xff);

		if ((void *)(c + 1) > data_end)
			return -1;
		*c = bpf_htons(csum_replace4(bpf_ntohs(*c), old, new));
	}
	return 0;
}

/* Live-frames generator: each run transmits its copy of the template. */
SEC("xdp")
int trafgen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return next_source(data, data_end) ? XDP_ABORTED : XDP_TX;
}

/* Redirect generator, where live frames are refused. Frames sent into an
 * intermediate veth (as skbs, from an AF_PACKET socket) are broadcast by this
 * program to every entry of fanout: each entry is the guarded pair's near end,
 * so the guarded side receives each frame once per entry, as a real xdp_frame
 * (what a NIC's driver hands XDP), not as an skb veth must convert. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(max_entries, 64);
} fanout SEC(".maps");

SEC("xdp")
int fanout_frames(struct xdp_md *ctx)
{
	return bpf_redirect_map(&fanout, 0, BPF_F_BROADCAST);
}

/* Runs on each copy the broadcast made, before it is sent: every copy gets a
 * source of its own. */
SEC("xdp/devmap")
int fanout_source(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return next_source(data, data_end) ? XDP_DROP : XDP_PASS;
}

/* The "trivial XDP_DROP" configuration of the live benchmark. */
SEC("xdp")
int drop_all(struct xdp_md *ctx)
{
	return XDP_DROP;
}

/* The "trivial XDP_PASS" configuration of the live benchmark: what attaching
 * any XDP program costs traffic that goes on to the stack. */
SEC("xdp")
int pass_all(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* The lab's edge to the internet, on the attacker's side of the guarded veth:
 * passes frames for the addresses the lab's namespace holds (edge_local: the
 * link's and the fresh clients', IPv4 v4-mapped), multicast and IPv6
 * link-local ones (neighbour discovery) and anything not IP; drops the rest.
 * What it drops are the SYN-ACKs the proxy sends to the flood's spoofed
 * sources: in production they leave through the NIC toward hosts that are not
 * the guarded host's concern; without it they went up the lab namespace's
 * stack (an skb, a route lookup and a drop each), on the CPU that sent them. */
struct edge_addr {
	__u8 a[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct edge_addr);
	__type(value, __u8);
	__uint(max_entries, 4096);
} edge_local SEC(".maps");

#define EDGE_MULTICAST4 0xe0	/* 224.0.0.0/4: the top nibble */
#define EDGE_MULTICAST6 0xff	/* ff00::/8 */
#define EDGE_LINKLOCAL6 0xfe80	/* fe80::/10 */
#define EDGE_LINKLOCAL6_MASK 0xffc0

SEC("xdp")
int lab_edge(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct edge_addr key = {};
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		if ((((__u8 *)&ip->daddr)[0] & 0xf0) == EDGE_MULTICAST4 || ip->daddr == 0xffffffff)
			return XDP_PASS;	/* multicast, broadcast */
		key.a[10] = 0xff;	/* v4-mapped, as Go's As16 */
		key.a[11] = 0xff;
		__builtin_memcpy(&key.a[12], &ip->daddr, sizeof(ip->daddr));
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__u16 top;

		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		top = bpf_ntohs(ip6->daddr.in6_u.u6_addr16[0]);
		if (top >> 8 == EDGE_MULTICAST6 || (top & EDGE_LINKLOCAL6_MASK) == EDGE_LINKLOCAL6)
			return XDP_PASS;	/* multicast, link-local */
		__builtin_memcpy(key.a, &ip6->daddr, sizeof(ip6->daddr));
	} else {
		return XDP_PASS;	/* ARP and the rest */
	}
	return bpf_map_lookup_elem(&edge_local, &key) ? XDP_PASS : XDP_DROP;
}
