/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* SYN proxy: the datapath answers SYNs with SYN cookies, so a spoofed SYN
 * flood never reaches the server and a new client's first connection does not
 * compete with it (docs/synproxy.md explains the choice of mechanism).
 *
 * Contract
 *  - A TCP service is proxied when its bit is set in ag_config.synproxy_services
 *    and the host settings (struct ag_synproxy) are loaded (mss4 != 0).
 *  - SYN (without ACK) to a proxied service: synproxy_claim takes it before the
 *    limits; synproxy_answer turns the frame into a SYN-ACK whose sequence number
 *    is a cookie and sends it back (XDP_TX; at TC a redirect to the egress of
 *    the interface). A SYN the proxy cannot answer (IPv4 options, IPv6
 *    extension headers, a bad checksum) is dropped: it must not reach the
 *    listener either. Retransmitted SYNs get the same cookie (stateless).
 *  - Reflection bound: the SYN-ACKs sent to one source (its client key, the
 *    policy's client_bits: one host) conform to ag_config.synproxy_answers
 *    (a GCRA bucket in synproxy_answered, an array indexed by a hash of
 *    the masked address keyed with synproxy_slotkey, never with the cookie
 *    key: no insert, no eviction, so no flood of other
 *    sources resets a victim's bucket; sources that share a bucket share its
 *    bound, which only ever makes it tighter). Per host, not per prefix: a
 *    prefix's budget would let a flood spoofing the prefix deny its
 *    newcomers, whose addresses a flood cannot aim at. A SYN over it is dropped, unanswered and uncharged
 *    anywhere else (reason synack_limited, no event: its source is the
 *    address a spoofer chose, the victim). Charged only for a SYN-ACK that
 *    is sent (checksum good, headers readable). A zero slot key (its map
 *    created, the key not yet written) answers no SYN (syn_unproxyable).
 *    Over it, a source proven
 *    within proven_ttl (proof.h proven_sources) has a second bucket at the
 *    same bound (sp_answer_proven).
 *  - A segment with ACK and without SYN or RST to a proxied service is judged
 *    together with its limits, in one pass (sp_judge). First it meets the
 *    limits' read-only stage (the service total, a known prefix: a flood
 *    over them is dropped there as that limit, with its event, for an array
 *    read; a fragment is judged before it, the limits charge its budget
 *    first). Then, before the limits make or charge any client state
 *    (sp_verify, so that a forged ACK creates and charges
 *    none; it is charged to the service total only, as every packet of the
 *    service, so that a flood of them meets that check): if its 4-tuple has a socket
 *    (established, TIME_WAIT, a kernel request) or there is no listener, it
 *    goes on untouched. If only the listener would take it, it must carry a
 *    valid cookie (ours, or one the kernel issued itself), else it is dropped
 *    there (bad_cookie): a wrong or stale cookie never reaches the listener,
 *    which would answer it with a RST. One the proxy cannot read (IPv4
 *    options, IPv6 extension headers, a fragment) goes on only to a socket
 *    other than the listener. A valid one is marked (verdict.synproxy), meets
 *    the limits' charging stage as any packet (resumed from what the first
 *    stage found: no lookup twice) and, let through, proves its source and
 *    is charged to its client's new-connection limits on the entries that
 *    stage used (sp_charge); at the exit, if everything let it through
 *    (synproxy_finish), it takes its connection cap's slot (conn_handshake);
 *    over them it is dropped too.
 *  - At TC ingress a segment with a valid cookie is handed to the listener
 *    (bpf_sk_assign_tcp_reqsk): the kernel builds the connection from it with
 *    the options the cookie recorded, the first data segment included. In XDP
 *    mode, apiguard_synproxy (TC ingress) does that step; in TC mode the guard
 *    itself.
 *  - Needs Linux 6.9+ (the kfunc), CONFIG_SYN_COOKIES, net.ipv4.tcp_syncookies
 *    >= 1, the listener in the network namespace of the interface, and a plain
 *    TCP listener: the kernel refuses MPTCP listeners (Go's default since 1.24).
 *    Where the kernel refuses a handshake, the segment passes on and the
 *    listener resets it; synproxy_stats counts it (SP_STAT_ACCEPT_FAILED).
 *
 * Cookie: the SYN-ACK's sequence number, 32 bits
 *
 *   | 31 ............ 9 |  8  |  7 |   6  | 5 4 |  3 2 1 0 |
 *   |  23 bits of hash  | ECN | TS | SACK | MSS |  WScale  |
 *
 *   hash = SipHash-2-4(key; client address, client ISN, ports, time slot,
 *   the 9 low bits). WScale 15 means the SYN had none; MSS indexes a table of
 *   four per family (the client's MSS rounded down). The slot is 2^36 ns (69 s)
 *   of the monotonic clock; a cookie is valid in its slot and the next. With
 *   timestamps, the SYN-ACK's TSval carries 8 more hash bits in its low byte,
 *   which the client echoes: 31 bits to guess. The TS bit is in the hash, so
 *   leaving the option out of a forged ACK does not shorten the guess.
 *
 * What is lost: an MSS between two table entries is rounded down; the SYN's
 * payload (TCP Fast Open) is not acknowledged, the client sends it again.
 *
 * Costs: a SYN is one SipHash over 4 words, an option walk and a rewrite in
 * place. A segment with ACK for a proxied service costs a socket lookup
 * (bpf_skc_lookup_tcp) while the proxy is on; only those that would reach
 * the listener pay the hash.
 *
 * Verification: the synproxy_{xdp,tc}_* entry points are global BPF
 * functions, so the verifier checks them once, on their own, instead of once
 * per state the guard can reach them in (the guard alone takes a third of
 * its budget).
 * Their working memory is a per-CPU scratch entry: the guard's frame and
 * theirs share the 512-byte stack.
 */
#ifndef APIGUARD_SYNPROXY_H
#define APIGUARD_SYNPROXY_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "parse.h"
#include "config.h"	/* the policy in force, ports, services */
#include "gcra.h"
#include "clients.h"	/* service_state: the total connection bucket auto meters */
#include "addr.h"
#include "proof.h"	/* record_proof */
#include "limits.h"	/* limit_reason, proven_client: a handshake's connection limits */
#include "conntrack.h"	/* conn_handshake: a handshake's connection caps */

/* What the guard marked a packet for (struct verdict.synproxy). */
#define SP_NONE 0
#define SP_SYN 1	/* answer it */
#define SP_ACK 2	/* a handshake with a valid cookie of ours: finish it at the exit */
#define SP_KCOOKIE 3	/* a handshake with the kernel's own cookie: count it at the exit */
#define SP_BAD 1	/* sp_verify: drop it (bad_cookie) */
/* synproxy_claim's answer to the guard */
#define SP_DECIDED 1	/* the verdict is decided: the guard stops */
#define SP_LIMITED 2	/* the limits ran (sp_judge): the guard goes on after them */
/* the judge's service and policy slot, in one argument (a global function
 * takes five) */
#define SP_SVS_SVC 0xffff
#define SP_SVS_SLOT_SHIFT 16

/* run_guard's return for a frame to send back (not an enum ag_action) */
#define SP_ACT_ANSWER 0x80

#define SP_SLOT_SHIFT 36	/* 2^36 ns = 68.7 s per cookie time slot */
#define SP_HASH_SHIFT 9		/* cookie bits below this are the options */
#define SP_OPT_MASK ((1u << SP_HASH_SHIFT) - 1)
#define SP_WSCALE_MASK 0xf
#define SP_WSCALE_NONE 0xf
#define SP_MSS_SHIFT 4
#define SP_MSS_MASK 0x3
#define SP_SACK (1u << 6)
#define SP_TS (1u << 7)
#define SP_ECN (1u << 8)
#define SP_TS_HASH_MASK 0xffu	/* low TSval bits that carry hash */
#define SP_TS_HASH_SHIFT 24	/* the hash bits they carry: 31..24 (the ISN has 63..41) */

#define SP_MAX_WSCALE 14	/* RFC 7323 */
#define SP_WINDOW 65535		/* the SYN-ACK's (unscaled) window, rounded down to segments */
#define SP_MSS_DEFAULT4 536	/* RFC 9293: a SYN without MSS option */
#define SP_MSS_DEFAULT6 1220	/* RFC 8200: IPv6 minimum MTU 1280 - 60 */
#define SP_NSEC_PER_MSEC 1000000

#define SP_IP_DF 0x4000
#define SP_IP_FRAG_MASK 0x3fff	/* MF and the offset */
#define SP_IP6_VERSION 0x60000000	/* version 6, no traffic class, no flow label */
#define SP_PULL 128		/* bytes made linear at TC */

/* auto: how long the proxy stays on for a service (judging its ACKs) after
 * its shared new-connection limits last refused a SYN. Past it, ACKs of the
 * service cost no socket lookup; a cookie lives two slots, so that is what
 * the judge keeps after the hold. */
#ifndef SP_AUTO_HOLD
#define SP_AUTO_HOLD 10000000000ULL		/* 10 s */
#endif
#define SP_COOKIE_LIFE (2ULL << SP_SLOT_SHIFT)	/* a cookie's two time slots */
/* the until word is written at most this often per service (a flood's SYNs
 * on every CPU would otherwise bounce its cache line) */
#define SP_AUTO_REFRESH 1000000000ULL

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOPT_WINDOW 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_TIMESTAMP 8
#define TCPOLEN_MSS 4
#define TCPOLEN_WINDOW 3
#define TCPOLEN_SACK_PERM 2
#define TCPOLEN_TIMESTAMP 10
#define TCPOLEN_TSTAMP_ALIGNED 12

#define SP_OPT_SPACE 40		/* TCP options: at most 40 bytes */
#define SP_OPT_BUF 64		/* indexes are masked with 63: no bounds check per byte */
#define SP_SYNACK_OPT_MAX 20	/* MSS 4, SACK+TS 12, NOP+WS 4 */
#define SP_LINUX_SYN_OPT_LEN 20	/* MSS 4, SACK 2, TS 10, NOP 1, WS 3 */
#define SP_SYNACK_WORDS ((sizeof(struct tcphdr) + SP_SYNACK_OPT_MAX) / 4)

/* Host settings the SYN-ACK must agree with, written by the loader (one entry).
 * The kernel refuses a handshake whose options its sysctls disable, and keeps
 * the window scale the SYN-ACK announced: both come from here. */
struct ag_synproxy {
	__u64 key[2];		/* SipHash key: random, kept across restarts */
	__u16 mss4;		/* MSS the SYN-ACK announces: the interface MTU - 40; 0: off */
	__u16 mss6;		/* the interface MTU - 60 */
	__u8 wscale;		/* the window scale the kernel would announce */
	__u8 sack;		/* net.ipv4.tcp_sack */
	__u8 timestamps;	/* net.ipv4.tcp_timestamps != 0 */
	__u8 window_scaling;	/* net.ipv4.tcp_window_scaling */
	__u8 ecn;		/* net.ipv4.tcp_ecn != 0 */
	__u8 ttl;		/* hop limit of the SYN-ACK */
	__u8 _pad[6];
};

/* The key of the reflection bound's slot hash (sp_answer_slot), drawn by the
 * loader apart from the cookie key and kept across restarts: which sources
 * share a slot is observable to whoever receives SYN-ACKs, and must say
 * nothing of the key that makes cookies. Zero: not written yet. */
struct ag_slot_key {
	__u64 key[2];
};

/* Datapath health of the proxy (per CPU), beside the verdict counters: what
 * those say already (SYNs answered, unproxyable, ACKs with a bad cookie:
 * reasons syn_cookie, syn_unproxyable, bad_cookie) is not counted again. */
enum ag_synproxy_stat {
	SP_STAT_COOKIE_OK = 0,	/* ACKs with a valid cookie of ours, let on to the listener */
	SP_STAT_KERNEL_COOKIE,	/* ACKs with a cookie the kernel issued, let on */
	SP_STAT_ACCEPTED,	/* handshakes handed to the listener at TC */
	SP_STAT_ACCEPT_FAILED,	/* the kernel refused one (sysctl changed, MPTCP, memory) */
	SP_STAT_AUTO_ON,	/* times an auto service's proxy turned on (its total connection budget ran out) */
	SP_STAT_PROVEN,		/* valid cookies with timestamps (31 bits): their sources proven */
	SP_STAT_UNAVAILABLE,	/* handshakes not handed over: the kernel lacks the kfunc */
	SP_STAT_MAX,
};

/* keeps the generated Go type */
const enum ag_synproxy_stat ag_synproxy_stat_unused __attribute__((unused));

/* The kernel's struct bpf_tcp_req_attrs (include/net/tcp.h), for the kfunc. */
struct bpf_tcp_req_attrs {
	__u32 rcv_tsval;
	__u32 rcv_tsecr;
	__u16 mss;
	__u8 rcv_wscale;
	__u8 snd_wscale;
	__u8 ecn_ok;
	__u8 wscale_ok;
	__u8 sack_ok;
	__u8 tstamp_ok;
	__u8 usec_ts_ok;
	__u8 reserved[3];
};

/* The kernel's struct sock: opaque here, but a complete struct, as the kfunc's
 * BTF has it (a forward declaration does not match it at load). */
struct sock {
	__u8 opaque;
};

/* Weak: a kernel without it (before 6.9) still loads the datapath; the loader
 * leaves its address 0 and the verifier drops the call behind
 * bpf_ksym_exists(). The daemon refuses a policy with the proxy there
 * (CheckSynProxy), so only a handshake already judged when the kernel changed
 * under pinned state could reach it: counted, SP_STAT_UNAVAILABLE. */
extern int bpf_sk_assign_tcp_reqsk(struct __sk_buff *skb, struct sock *sk,
				   struct bpf_tcp_req_attrs *attrs, int attrs__sz) __ksym __weak;

#ifndef bpf_ksym_exists	/* libbpf's headers before 1.2 lack it */
#define bpf_ksym_exists(sym) (!!(sym))
#endif

/* TCP options that matter to a handshake. */
struct sp_opts {
	__u32 tsval;
	__u32 tsecr;
	__u16 mss;		/* 0: none */
	__u8 wscale;		/* SP_WSCALE_NONE: none */
	__u8 sack;
	__u8 ts;
	__u8 _pad[3];
};

/* The TCP header and options of a SYN-ACK. */
struct sp_synack {
	struct tcphdr th;
	__u8 opt[SP_SYNACK_OPT_MAX];
	__u32 len;		/* header and options */
	__u32 opts;		/* the cookie's option bits */
	__u16 mss;		/* the client's MSS as the cookie records it */
	__u16 _pad;
};

/* Working memory of one packet (per CPU: XDP and TC ingress never nest). */
struct sp_work {
	__u8 buf[SP_OPT_BUF];	/* the segment's options, zero past their end */
	__u32 walk_i;		/* the option walk: next byte, */
	__u32 walk_len;		/* and where the options end */
	struct sp_opts o;
	struct sp_synack s;
	struct bpf_tcp_req_attrs attrs;
	struct bpf_sock_tuple t;
	__u16 l3_off;		/* of the SYN being answered, across the resize */
	__u16 l4_off;
	__u8 v4;
	__u8 built;		/* s holds a SYN-ACK to write */
	__u16 frame_len;	/* the length the frame is resized to for it */
	__u8 over;		/* the SYN's prefix had its share of SYN-ACKs */
	__u8 _pad1[3];
	__u32 key;		/* map keys, off the 512-byte stack (sp_service) */
	__u32 slot;		/* the policy slot of the service (sp_service, sp_verify) */
	__u32 svc;		/* the service of a handshake sp_verify marked */
	struct limits_mem lm;	/* sp_judge's limits: keys, entries to insert */
	__u8 client[16];	/* a SYN's source, masked (sp_answer_conforms) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_synproxy);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);	/* the key: cookies survive a restart */
} synproxy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SP_STAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} synproxy_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sp_work);
	__uint(max_entries, 1);
} synproxy_scratch SEC(".maps");

/* The reflection bound's buckets: a GCRA TAT (coarse ns) per slot, a slot
 * per source through a keyed hash (sp_answer_slot). 512 KB: a flood that
 * spreads over every slot at the default 1000/s per source needs 65M SYN/s
 * before an innocent source sharing one is refused. */
#ifndef SP_ANSWER_SLOTS
#define SP_ANSWER_SLOTS (1 << 16)
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SP_ANSWER_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} synproxy_answered SEC(".maps");

/* Its own map, not a field of synproxy: that one's value is pinned, and a new
 * size would refuse an upgrade; a new map is created beside adopted ones. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ag_slot_key);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);	/* slots stay put across a restart */
} synproxy_slotkey SEC(".maps");

/* auto (ag_config.synproxy_auto): per service id, until when (coarse ns) the
 * proxy is on, set by the last SYN its shared new-connection limits refused
 * plus SP_AUTO_HOLD. The daemon reads it for status; 0 is never. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, AG_MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} synproxy_until SEC(".maps");

static const __u16 sp_mss4[4] = { 536, 1300, 1440, 1460 };
static const __u16 sp_mss6[4] = { 1220, 1420, 1440, 8940 };

/* Where the headers of a TCP segment are. Offsets are from the frame start. */
struct sp_hdrs {
	void *l3;		/* struct iphdr when v4, else struct ipv6hdr */
	struct tcphdr *tcp;
	__u16 l3_off;
	__u16 l4_off;
	__u16 seg_len;		/* TCP header and payload, as the IP header says */
	__u8 opt_len;		/* bytes of TCP options */
	__u8 v4;		/* IPv4; stays true when a resize voids the pointers */
};

static __always_inline struct iphdr *sp_ip4(const struct sp_hdrs *h)
{
	return h->l3;
}

static __always_inline struct ipv6hdr *sp_ip6(const struct sp_hdrs *h)
{
	return h->l3;
}

static __always_inline void sp_stat(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&synproxy_stats, &idx);

	if (v)
		*v += 1;
}

static __always_inline const struct ag_synproxy *sp_host(void)
{
	__u32 zero = 0;
	const struct ag_synproxy *c = bpf_map_lookup_elem(&synproxy, &zero);

	return c && c->mss4 ? c : NULL;
}

/* The slot key, or NULL while it is zero: no SYN is answered under a key
 * anyone can compute. */
static __always_inline const struct ag_slot_key *sp_slot_key(void)
{
	__u32 zero = 0;
	const struct ag_slot_key *k = bpf_map_lookup_elem(&synproxy_slotkey, &zero);

	return k && (k->key[0] | k->key[1]) ? k : NULL;
}

static __always_inline struct sp_work *sp_work(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&synproxy_scratch, &zero);
}

/* ---- locating headers ---------------------------------------------------- */

/* Finds IP and TCP headers the proxy can rewrite: IPv4 without options or
 * fragments, IPv6 without extension headers. Returns 0, or -1 for any other
 * segment (parse_packet already gave malformed ones their verdict). */
static __always_inline int sp_locate(void *data, void *data_end, struct sp_hdrs *h)
{
	struct cursor c = { .pos = data, .end = data_end };
	__u16 proto;
	__u32 l4_len;

	if (parse_eth(&c, &proto) != AG_R_OK)
		return -1;
	h->v4 = 0;
	h->l3_off = c.pos - data;
	if (proto == ETH_P_IP) {
		struct iphdr *ip = cursor_pull(&c, sizeof(*ip));

		if (!ip || ip->ihl != 5 || ip->protocol != IPPROTO_TCP ||
		    (bpf_ntohs(ip->frag_off) & SP_IP_FRAG_MASK))
			return -1;
		l4_len = bpf_ntohs(ip->tot_len);
		if (l4_len < sizeof(*ip))
			return -1;
		l4_len -= sizeof(*ip);
		h->l3 = ip;
		h->v4 = 1;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = cursor_pull(&c, sizeof(*ip6));

		if (!ip6 || ip6->nexthdr != IPPROTO_TCP)
			return -1;
		l4_len = bpf_ntohs(ip6->payload_len);
		h->l3 = ip6;
	} else {
		return -1;
	}
	h->l4_off = c.pos - data;
	h->tcp = cursor_pull(&c, sizeof(struct tcphdr));
	if (!h->tcp || h->tcp->doff < 5)
		return -1;
	h->opt_len = h->tcp->doff * 4 - sizeof(struct tcphdr);
	/* only the headers need be in the linear area (at TC the first
	 * SP_PULL bytes): the options are copied out, the payload never read */
	if (l4_len < h->tcp->doff * 4)
		return -1;
	h->seg_len = l4_len;
	return 0;
}

/* ---- TCP options -------------------------------------------------------- */

static __always_inline __u16 sp_get16(const __u8 *b, __u32 i)
{
	return (__u16)b[i & (SP_OPT_BUF - 1)] << 8 | b[(i + 1) & (SP_OPT_BUF - 1)];
}

static __always_inline __u32 sp_get32(const __u8 *b, __u32 i)
{
	return (__u32)sp_get16(b, i) << 16 | sp_get16(b, i + 2);
}

/* One step of the option walk: a bpf_loop callback, verified once however
 * many options a segment has. Its state is in the scratch entry (w->walk_i,
 * w->walk_len), not on the caller's stack, which the guard's frame leaves
 * short. Returns 1 to stop. */
static long sp_opt_step(__u32 n, void *unused)
{
	struct sp_work *w = sp_work();
	struct sp_opts *o;
	__u8 kind, size;
	__u32 i;

	if (!w)
		return 1;
	o = &w->o;
	i = w->walk_i;
	if (i >= w->walk_len)
		return 1;
	kind = w->buf[i & (SP_OPT_BUF - 1)];
	if (kind == TCPOPT_EOL)
		return 1;
	if (kind == TCPOPT_NOP) {
		w->walk_i = i + 1;
		return 0;
	}
	size = w->buf[(i + 1) & (SP_OPT_BUF - 1)];
	if (size < 2 || i + size > w->walk_len)
		return 1;
	if (kind == TCPOPT_MSS && size == TCPOLEN_MSS) {
		o->mss = sp_get16(w->buf, i + 2);
	} else if (kind == TCPOPT_WINDOW && size == TCPOLEN_WINDOW) {
		/* clamped as the kernel does (RFC 7323): 15 means "none" here */
		o->wscale = w->buf[(i + 2) & (SP_OPT_BUF - 1)];
		if (o->wscale > SP_MAX_WSCALE)
			o->wscale = SP_MAX_WSCALE;
	} else if (kind == TCPOPT_SACK_PERM && size == TCPOLEN_SACK_PERM) {
		o->sack = 1;
	} else if (kind == TCPOPT_TIMESTAMP && size == TCPOLEN_TIMESTAMP) {
		o->ts = 1;
		o->tsval = sp_get32(w->buf, i + 2);
		o->tsecr = sp_get32(w->buf, i + 6);
	}
	w->walk_i = i + size;
	return 0;
}

/* The two layouts nearly every segment the proxy reads has, read at fixed
 * offsets instead of walked: Linux's SYN (MSS, SACK permitted, timestamps,
 * NOP, window scale) and the aligned timestamps of a segment that is not a
 * SYN (NOP, NOP, timestamps). Returns 1 when the options were one of them. */
static __always_inline int sp_opts_fast(struct sp_work *w, __u32 len)
{
	const __u8 *b = w->buf;
	struct sp_opts *o = &w->o;

	if (len == TCPOLEN_TSTAMP_ALIGNED && b[0] == TCPOPT_NOP && b[1] == TCPOPT_NOP &&
	    b[2] == TCPOPT_TIMESTAMP && b[3] == TCPOLEN_TIMESTAMP) {
		o->ts = 1;
		o->tsval = sp_get32(b, 4);
		o->tsecr = sp_get32(b, 8);
		return 1;
	}
	if (len != SP_LINUX_SYN_OPT_LEN || b[0] != TCPOPT_MSS || b[1] != TCPOLEN_MSS ||
	    b[4] != TCPOPT_SACK_PERM || b[5] != TCPOLEN_SACK_PERM ||
	    b[6] != TCPOPT_TIMESTAMP || b[7] != TCPOLEN_TIMESTAMP ||
	    b[16] != TCPOPT_NOP || b[17] != TCPOPT_WINDOW || b[18] != TCPOLEN_WINDOW)
		return 0;
	o->mss = sp_get16(b, 2);
	o->sack = 1;
	o->ts = 1;
	o->tsval = sp_get32(b, 8);
	o->tsecr = sp_get32(b, 12);
	o->wscale = b[19] > SP_MAX_WSCALE ? SP_MAX_WSCALE : b[19];
	return 1;
}

/* Reads the options of the segment at h into w->o, and their bytes into
 * w->buf (zero past their end). Malformed options end the walk, keeping what
 * was read before, as the kernel does. */
static __always_inline void sp_read_opts(void *ctx, int tc, const struct sp_hdrs *h, struct sp_work *w)
{
	__u32 len = h->opt_len, n;

	__builtin_memset(w->buf, 0, SP_OPT_SPACE);
	__builtin_memset(&w->o, 0, sizeof(w->o));
	w->o.wscale = SP_WSCALE_NONE;
	if (!len || len > SP_OPT_SPACE)
		return;
	/* 1..40 as the verifier sees it: 0 would be refused by the helpers */
	n = ((len - 1) & (SP_OPT_BUF - 1)) + 1;
	if (tc) {
		if (bpf_skb_load_bytes(ctx, h->l4_off + sizeof(struct tcphdr), w->buf, n))
			return;
	} else if (bpf_xdp_load_bytes(ctx, h->l4_off + sizeof(struct tcphdr), w->buf, n)) {
		return;
	}
	if (sp_opts_fast(w, n))
		return;
	w->walk_i = 0;
	w->walk_len = n;
	bpf_loop(SP_OPT_SPACE, sp_opt_step, NULL, 0);
}

/* ---- the cookie ---------------------------------------------------------- */

static __always_inline __u64 sp_rotl(__u64 x, int b)
{
	return (x << b) | (x >> (64 - b));
}

static __always_inline void sp_sipround(__u64 *v0, __u64 *v1, __u64 *v2, __u64 *v3)
{
	*v0 += *v1;
	*v1 = sp_rotl(*v1, 13);
	*v1 ^= *v0;
	*v0 = sp_rotl(*v0, 32);
	*v2 += *v3;
	*v3 = sp_rotl(*v3, 16);
	*v3 ^= *v2;
	*v0 += *v3;
	*v3 = sp_rotl(*v3, 21);
	*v3 ^= *v0;
	*v2 += *v1;
	*v1 = sp_rotl(*v1, 17);
	*v1 ^= *v2;
	*v2 = sp_rotl(*v2, 32);
}

static __always_inline void sp_sipword(__u64 *v0, __u64 *v1, __u64 *v2, __u64 *v3, __u64 m)
{
	*v3 ^= m;
	sp_sipround(v0, v1, v2, v3);
	sp_sipround(v0, v1, v2, v3);
	*v0 ^= m;
}

/* SipHash-2-4 of four 64-bit words (a 32-byte message). A function of its
 * own: its registers spill into its own frame, not the caller's (the stack
 * is shared with the guard's). */
static __attribute__((noinline)) __u64 sp_siphash4(const __u64 key[2], __u64 m0, __u64 m1, __u64 m2, __u64 m3)
{
	__u64 v0 = key[0] ^ 0x736f6d6570736575ULL;
	__u64 v1 = key[1] ^ 0x646f72616e646f6dULL;
	__u64 v2 = key[0] ^ 0x6c7967656e657261ULL;
	__u64 v3 = key[1] ^ 0x7465646279746573ULL;

	sp_sipword(&v0, &v1, &v2, &v3, m0);
	sp_sipword(&v0, &v1, &v2, &v3, m1);
	sp_sipword(&v0, &v1, &v2, &v3, m2);
	sp_sipword(&v0, &v1, &v2, &v3, m3);
	sp_sipword(&v0, &v1, &v2, &v3, 32ULL << 56);	/* the length block */
	v2 ^= 0xff;
	sp_sipround(&v0, &v1, &v2, &v3);
	sp_sipround(&v0, &v1, &v2, &v3);
	sp_sipround(&v0, &v1, &v2, &v3);
	sp_sipround(&v0, &v1, &v2, &v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

/* The hash a cookie carries: client address (v4-mapped for IPv4), its ISN,
 * both ports (host order), the time slot and the option bits. The server's
 * address is left out: a cookie only ever vouches for the client. */
static __always_inline __u64 sp_hash(const struct ag_synproxy *c, const struct sp_hdrs *h,
				     __u32 isn, __u64 slot, __u32 opts)
{
	__u64 a0 = 0, a1;

	if (h->v4) {
		/* bytes 8..15 of ::ffff:a.b.c.d, read as a little-endian word */
		a1 = (__u64)sp_ip4(h)->saddr << 32 | 0xffff0000ULL;
	} else {
		__builtin_memcpy(&a0, &sp_ip6(h)->saddr, 8);
		__builtin_memcpy(&a1, (__u8 *)&sp_ip6(h)->saddr + 8, 8);
	}
	return sp_siphash4(c->key, a0, a1,
			   (__u64)isn << 32 | (__u32)bpf_ntohs(h->tcp->source) << 16 | bpf_ntohs(h->tcp->dest),
			   slot << SP_HASH_SHIFT | opts);
}

static __always_inline __u32 sp_cookie(__u64 hash, __u32 opts)
{
	return (__u32)(hash >> 41) << SP_HASH_SHIFT | opts;
}

static __always_inline __u8 sp_ts_hash(__u64 hash)
{
	return (hash >> SP_TS_HASH_SHIFT) & SP_TS_HASH_MASK;
}

static __always_inline __u64 sp_slot(void)
{
	return bpf_ktime_get_coarse_ns() >> SP_SLOT_SHIFT;
}

/* The option bits for a SYN: what the client offered and the host allows.
 * *mss is the client's MSS as the cookie records it. */
static __always_inline __u32 sp_syn_opts(const struct ag_synproxy *c, const struct sp_hdrs *h,
					 const struct sp_opts *o, __u16 *mss)
{
	const __u16 *tab = h->v4 ? sp_mss4 : sp_mss6;
	__u16 want = o->mss ? o->mss : (h->v4 ? SP_MSS_DEFAULT4 : SP_MSS_DEFAULT6);
	__u32 opts, idx = 0;

	/* the largest table entry the client can take */
	if (want >= tab[3])
		idx = 3;
	else if (want >= tab[2])
		idx = 2;
	else if (want >= tab[1])
		idx = 1;
	*mss = tab[idx];
	opts = idx << SP_MSS_SHIFT;
	if (o->wscale != SP_WSCALE_NONE && c->window_scaling)
		opts |= o->wscale;
	else
		opts |= SP_WSCALE_NONE;
	if (o->sack && c->sack)
		opts |= SP_SACK;
	if (o->ts && c->timestamps)
		opts |= SP_TS;
	/* ECN setup SYN: ECE and CWR both set (RFC 3168) */
	if (c->ecn && h->tcp->ece && h->tcp->cwr)
		opts |= SP_ECN;
	return opts;
}

/* Checks the cookie of a segment completing a handshake and fills w->attrs
 * from it. Returns 1 when valid, in this time slot or the previous one. The
 * options are read only once the 23 bits in the sequence number matched:
 * what they add (the timestamp echo) only matters then. */
static __always_inline int sp_check(void *ctx, int tc, const struct ag_synproxy *c,
				    const struct sp_hdrs *h, struct sp_work *w)
{
	__u32 cookie = bpf_ntohl(h->tcp->ack_seq) - 1;
	__u32 isn = bpf_ntohl(h->tcp->seq) - 1;
	__u32 opts = cookie & SP_OPT_MASK, ws;
	struct bpf_tcp_req_attrs *a = &w->attrs;
	__u64 slot = sp_slot(), hash = 0;
	int ok = 0;

	for (int back = 0; back < 2; back++) {
		hash = sp_hash(c, h, isn, slot - back, opts);
		if (sp_cookie(hash, opts) == cookie) {
			ok = 1;
			break;
		}
	}
	if (!ok)
		return 0;
	__builtin_memset(a, 0, sizeof(*a));
	if (opts & SP_TS) {
		/* the client echoes our TSval: its low byte is hash too */
		sp_read_opts(ctx, tc, h, w);
		if (!w->o.ts || (w->o.tsecr & SP_TS_HASH_MASK) != sp_ts_hash(hash))
			return 0;
		a->tstamp_ok = 1;
		a->rcv_tsval = w->o.tsval;
		a->rcv_tsecr = w->o.tsecr;
	}
	a->mss = (h->v4 ? sp_mss4 : sp_mss6)[(opts >> SP_MSS_SHIFT) & SP_MSS_MASK];
	ws = opts & SP_WSCALE_MASK;
	if (ws != SP_WSCALE_NONE) {
		a->wscale_ok = 1;
		a->snd_wscale = ws;
		a->rcv_wscale = c->wscale;
	}
	a->sack_ok = !!(opts & SP_SACK);
	a->ecn_ok = !!(opts & SP_ECN);
	return 1;
}

/* ---- checksums ----------------------------------------------------------- */

static __always_inline __u16 sp_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s;
}

/* Ones' complement sum of n 32-bit words, read as stored: the result is
 * stored the same way, so byte order cancels out. */
static __always_inline __u64 sp_sum32(const __u32 *w, int n)
{
	__u64 s = 0;

#pragma unroll
	for (int i = 0; i < n; i++)
		s += w[i];
	return s;
}

/* The pseudo-header sum for a TCP segment of len bytes between the addresses
 * of the IP header l3 (IPv4 when v4). */
static __always_inline __u64 sp_pseudo(const void *l3, int v4, __u32 len)
{
	__u64 s = bpf_htons(IPPROTO_TCP) + bpf_htons(len);

	if (v4)
		return s + ((const struct iphdr *)l3)->saddr + ((const struct iphdr *)l3)->daddr;
	/* source and destination are adjacent: eight words */
	return s + sp_sum32(((const struct ipv6hdr *)l3)->saddr.in6_u.u6_addr32, 8);
}

/* A SYN's checksum over its header and options (w->buf). A SYN with payload
 * is not checked (Fast Open: the payload is not acknowledged anyway). A SYN
 * built on this host and handed over a veth still holds what checksum
 * offload left there: the pseudo-header sum alone (CHECKSUM_PARTIAL). It is
 * taken too: what matters is not to answer a frame damaged on the way. */
static __always_inline int sp_syn_csum_ok(const struct sp_hdrs *h, const struct sp_work *w)
{
	__u64 pseudo, s;

	if (h->seg_len != sizeof(struct tcphdr) + h->opt_len)
		return 1;
	pseudo = sp_pseudo(h->l3, h->v4, h->seg_len);
	s = pseudo + sp_sum32((const __u32 *)h->tcp, sizeof(struct tcphdr) / 4);
	s += sp_sum32((const __u32 *)w->buf, SP_OPT_SPACE / 4);	/* zero past opt_len */
	return sp_fold(s) == 0 || h->tcp->check == (__u16)~sp_fold(pseudo);
}

/* ---- the SYN-ACK --------------------------------------------------------- */

static __always_inline void sp_put32(__u8 *b, __u32 v)
{
	v = bpf_htonl(v);
	__builtin_memcpy(b, &v, 4);
}

/* Options of the SYN-ACK in the order Linux sends them; returns their length. */
static __always_inline __u32 sp_synack_opts(__u8 *b, __u16 mss, __u32 opts, __u8 wscale,
					    __u32 tsval, __u32 tsecr)
{
	__u32 n = 4;

	sp_put32(b, TCPOPT_MSS << 24 | TCPOLEN_MSS << 16 | mss);
	if (opts & SP_TS) {
		if (opts & SP_SACK)
			sp_put32(b + 4, TCPOPT_SACK_PERM << 24 | TCPOLEN_SACK_PERM << 16 |
					TCPOPT_TIMESTAMP << 8 | TCPOLEN_TIMESTAMP);
		else
			sp_put32(b + 4, TCPOPT_NOP << 24 | TCPOPT_NOP << 16 |
					TCPOPT_TIMESTAMP << 8 | TCPOLEN_TIMESTAMP);
		sp_put32(b + 8, tsval);
		sp_put32(b + 12, tsecr);
		n = 16;
	} else if (opts & SP_SACK) {
		sp_put32(b + 4, TCPOPT_NOP << 24 | TCPOPT_NOP << 16 | TCPOPT_SACK_PERM << 8 | TCPOLEN_SACK_PERM);
		n = 8;
	}
	if ((opts & SP_WSCALE_MASK) != SP_WSCALE_NONE) {
		sp_put32(b + (n & 0x1f), TCPOPT_NOP << 24 | TCPOPT_WINDOW << 16 | TCPOLEN_WINDOW << 8 | wscale);
		n += 4;
	}
	return n;
}

#define SP_ANSWER_SOURCE 0	/* sp_answer_slot's domains: a source's client key, */
#define SP_ANSWER_PROVEN 1	/* a proven source's second bucket */

/* The bucket slot of a masked address (v4-mapped) in a domain: keyed with the
 * slot key, multiplied after the key is mixed in, so which addresses share a
 * slot depends on the key and a blind attacker cannot pick a prefix that
 * shares a victim's. Not cryptographic: collisions observed through the
 * SYN-ACKs tell of the slot key only, never of the cookie key. */
static __always_inline __u32 sp_answer_slot(const struct ag_slot_key *k, const __u8 prefix[16], __u64 domain)
{
	__u64 a0, a1, h;

	__builtin_memcpy(&a0, prefix, 8);
	__builtin_memcpy(&a1, prefix + 8, 8);
	h = (a0 ^ k->key[0]) * 0x9e3779b97f4a7c15ULL;
	h ^= h >> 31;
	/* the domain after the key is mixed in: xored into the address word it
	 * would be an address bit, and the other domain's slot of any address
	 * the slot of an address anyone can name, whatever the key */
	h ^= domain * 0xd6e8feb86659fd93ULL;
	h = (h + (a1 ^ k->key[1])) * 0xc2b2ae3d27d4eb4fULL;
	h ^= h >> 29;
	h *= 0x165667b19e3779f9ULL;
	h ^= h >> 32;
	return h & (SP_ANSWER_SLOTS - 1);
}

/* Over its bound: a source proven within the policy's proven TTL (proof.h:
 * the server spoke to it on a connection, or it completed a proxied
 * handshake with timestamps) has a second bucket at the same bound, so that
 * a flood spoofing its very address does not lock out a client the server
 * already talks to; the flood gets it no more than that second bucket.
 * w->client holds the source masked to the client key, proof.h's key. */
static __always_inline int sp_answer_proven(const struct ag_slot_key *k, const struct ag_config *cfg,
					    struct sp_work *w, __u64 now)
{
	__u64 *seen, *tat;
	__u32 idx;

	if (!cfg->proven_ttl)
		return 0;
	seen = bpf_map_lookup_elem(&proven_sources, w->client);
	if (!seen || now - *seen >= cfg->proven_ttl)
		return 0;
	idx = sp_answer_slot(k, w->client, SP_ANSWER_PROVEN);
	tat = bpf_map_lookup_elem(&synproxy_answered, &idx);
	return tat && gcra(tat, &cfg->synproxy_answers, 1, now);
}

/* Whether one more SYN-ACK to the source of p conforms to the policy's bound
 * on its client key (or, over it, to its second as a proven source), charged
 * when it does. The coarse clock: a tick (1–4 ms) is well inside any sane
 * burst. */
static __always_inline int sp_answer_conforms(const struct ag_slot_key *k, const struct ag_config *cfg,
					      const struct pkt *p, struct sp_work *w, __u64 now)
{
	__u64 *tat;
	__u32 idx;

	if (!cfg->synproxy_answers.interval)
		return 1;
	/* w->client: a key's room, off the stack, free in a SYN's path */
	mask_addr(w->client, p->addr, key_bits(p->family, cfg->client_bits4, cfg->client_bits6));
	idx = sp_answer_slot(k, w->client, SP_ANSWER_SOURCE);
	tat = bpf_map_lookup_elem(&synproxy_answered, &idx);
	if (!tat)
		return 0;
	return gcra(tat, &cfg->synproxy_answers, 1, now) || sp_answer_proven(k, cfg, w, now);
}

/* Builds into w->s the SYN-ACK answering the SYN at h (options read into w,
 * checksum checked); now is the coarse clock, read once for the SYN. */
static __always_inline void sp_build(const struct ag_synproxy *c, const struct sp_hdrs *h,
				     struct sp_work *w, __u64 now)
{
	struct sp_synack *s = &w->s;
	__u32 isn = bpf_ntohl(h->tcp->seq), opts, seg, tsval = 0;
	__u16 mss, ours = h->v4 ? c->mss4 : c->mss6;
	__u64 hash;

	__builtin_memset(s, 0, sizeof(*s));
	s->opts = sp_syn_opts(c, h, &w->o, &s->mss);
	/* Read back from the scratch entry, whose memory the verifier does not
	 * track: the paths through the option bits join here instead of each
	 * being followed through the hash and the rewrite (280k verifier steps). */
	asm volatile("" ::: "memory");
	opts = s->opts & SP_OPT_MASK;
	mss = s->mss;
	hash = sp_hash(c, h, isn, now >> SP_SLOT_SHIFT, opts);

	s->th.source = h->tcp->dest;
	s->th.dest = h->tcp->source;
	s->th.seq = bpf_htonl(sp_cookie(hash, opts));
	s->th.ack_seq = bpf_htonl(isn + 1);
	s->th.syn = 1;
	s->th.ack = 1;
	s->th.ece = !!(opts & SP_ECN);
	if (opts & SP_TS)
		tsval = (__u32)(now / SP_NSEC_PER_MSEC) & ~SP_TS_HASH_MASK;
	tsval |= sp_ts_hash(hash);
	s->len = sizeof(struct tcphdr) + sp_synack_opts(s->opt, ours, opts, c->wscale, tsval, w->o.tsval);
	s->th.doff = s->len / 4;
	/* a window of whole segments, as Linux announces it */
	seg = (mss < ours ? mss : ours) - ((opts & SP_TS) ? TCPOLEN_TSTAMP_ALIGNED : 0);
	s->th.window = bpf_htons(SP_WINDOW / seg * seg);
}

/* Swaps the frame's MAC addresses in registers: the stack is scarce. */
static __always_inline void sp_swap_mac(struct ethhdr *eth)
{
	__u32 d0, s0;
	__u16 d1, s1;

	__builtin_memcpy(&d0, eth->h_dest, 4);
	__builtin_memcpy(&d1, eth->h_dest + 4, 2);
	__builtin_memcpy(&s0, eth->h_source, 4);
	__builtin_memcpy(&s1, eth->h_source + 4, 2);
	__builtin_memcpy(eth->h_dest, &s0, 4);
	__builtin_memcpy(eth->h_dest + 4, &s1, 2);
	__builtin_memcpy(eth->h_source, &d0, 4);
	__builtin_memcpy(eth->h_source + 4, &d1, 2);
}

static __always_inline void sp_swap_in6(struct ipv6hdr *ip6)
{
	__u64 s0, s1, d0, d1;

	__builtin_memcpy(&s0, &ip6->saddr, 8);
	__builtin_memcpy(&s1, (__u8 *)&ip6->saddr + 8, 8);
	__builtin_memcpy(&d0, &ip6->daddr, 8);
	__builtin_memcpy(&d1, (__u8 *)&ip6->daddr + 8, 8);
	__builtin_memcpy(&ip6->saddr, &d0, 8);
	__builtin_memcpy((__u8 *)&ip6->saddr + 8, &d1, 8);
	__builtin_memcpy(&ip6->daddr, &s0, 8);
	__builtin_memcpy((__u8 *)&ip6->daddr + 8, &s1, 8);
}

/* Rewrites the frame at data (already trimmed to the SYN-ACK's length) into
 * the SYN-ACK in w->s: MACs and addresses swapped, headers and checksums new.
 * Offsets come from the SYN's headers: a resize voided its pointers. */
static __always_inline int sp_write(void *data, void *data_end, __u32 l3_off, __u32 l4_off, int v4,
				    const struct ag_synproxy *c, struct sp_work *w)
{
	struct sp_synack *s = &w->s;
	/* at most two VLAN tags before the IP header, which has no options */
	__u32 l3 = l3_off & 0x3f, l4 = l4_off & 0x7f;
	__u32 *dst, *src = (__u32 *)&s->th;
	void *ip = data + l3;

	if (data + ETH_HLEN > data_end)
		return -1;
	sp_swap_mac(data);
	if (v4) {
		struct iphdr *ip4 = ip;
		__be32 a;

		if ((void *)(ip4 + 1) > data_end)
			return -1;
		a = ip4->saddr;
		ip4->saddr = ip4->daddr;
		ip4->daddr = a;
		ip4->tos = 0;
		ip4->tot_len = bpf_htons(sizeof(*ip4) + s->len);
		ip4->id = 0;
		ip4->frag_off = bpf_htons(SP_IP_DF);
		ip4->ttl = c->ttl;
		ip4->check = 0;
		ip4->check = sp_fold(sp_sum32((__u32 *)ip4, sizeof(*ip4) / 4));
	} else {
		struct ipv6hdr *ip6 = ip;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		sp_swap_in6(ip6);
		*(__be32 *)ip6 = bpf_htonl(SP_IP6_VERSION);
		ip6->payload_len = bpf_htons(s->len);
		ip6->hop_limit = c->ttl;
	}
	/* options past s->len are zero: summing all words costs nothing */
	s->th.check = sp_fold(sp_pseudo(ip, v4, s->len) + sp_sum32(src, SP_SYNACK_WORDS));
	dst = data + l4;
#pragma unroll
	for (int i = 0; i < SP_SYNACK_WORDS; i++) {
		if (i * 4 < s->len) {
			if ((void *)(dst + i + 1) > data_end)
				return -1;
			dst[i] = src[i];
		}
	}
	return 0;
}

/* ---- completing handshakes ----------------------------------------------- */

/* The socket the kernel would give the segment at h; NULL when none. The
 * caller releases it. */
static __always_inline struct bpf_sock *sp_lookup(void *ctx, const struct sp_hdrs *h, struct sp_work *w)
{
	struct bpf_sock_tuple *t = &w->t;

	if (h->v4) {
		t->ipv4.saddr = sp_ip4(h)->saddr;
		t->ipv4.daddr = sp_ip4(h)->daddr;
		t->ipv4.sport = h->tcp->source;
		t->ipv4.dport = h->tcp->dest;
		return bpf_skc_lookup_tcp(ctx, t, sizeof(t->ipv4), BPF_F_CURRENT_NETNS, 0);
	}
	__builtin_memcpy(t->ipv6.saddr, &sp_ip6(h)->saddr, sizeof(t->ipv6.saddr));
	__builtin_memcpy(t->ipv6.daddr, &sp_ip6(h)->daddr, sizeof(t->ipv6.daddr));
	t->ipv6.sport = h->tcp->source;
	t->ipv6.dport = h->tcp->dest;
	return bpf_skc_lookup_tcp(ctx, t, sizeof(t->ipv6), BPF_F_CURRENT_NETNS, 0);
}

/* A cookie the kernel issued itself (its listener overflowed, or a SYN that
 * was not proxied met tcp_syncookies=2): the kernel will take it. */
static __always_inline int sp_kernel_cookie(const struct sp_hdrs *h)
{
	if (h->v4)
		return bpf_tcp_raw_check_syncookie_ipv4(sp_ip4(h), h->tcp) == 0;
	return bpf_tcp_raw_check_syncookie_ipv6(sp_ip6(h), h->tcp) == 0;
}

/* Hands the segment to the listener sk as the end of a handshake. */
static __always_inline void sp_assign(struct __sk_buff *skb, struct bpf_sock *sk, struct sp_work *w)
{
	struct sock *ssk;

	if (!bpf_ksym_exists(bpf_sk_assign_tcp_reqsk)) {
		sp_stat(SP_STAT_UNAVAILABLE);
		return;
	}
	ssk = (struct sock *)bpf_skc_to_tcp_sock(sk);
	if (ssk && bpf_sk_assign_tcp_reqsk(skb, ssk, &w->attrs, sizeof(w->attrs)) == 0)
		sp_stat(SP_STAT_ACCEPTED);
	else
		sp_stat(SP_STAT_ACCEPT_FAILED);
}

/* auto: 1 while the segments with ACK of the service w->key are judged (the
 * proxy answered a SYN of it within the hold and a cookie's life). */
static __always_inline int sp_auto_judging(struct sp_work *w)
{
	__u64 *until = bpf_map_lookup_elem(&synproxy_until, &w->key);

	return until && *until && bpf_ktime_get_coarse_ns() < *until + SP_COOKIE_LIFE;
}

/* The proxied service (always, or auto while on) a segment to dport (host
 * order) is for, in the policy in force; 0 when none. */
static __always_inline __u32 sp_service(__u16 dport, struct sp_work *w,
				       const struct ag_config **cfgp)
{
	const struct ag_config *cfg;
	const __u32 *slotp, *id;
	__u32 slot, svc;

	w->key = 0;
	slotp = bpf_map_lookup_elem(&active, &w->key);
	slot = slotp && *slotp ? 1 : 0;
	w->key = slot;
	w->slot = slot;
	cfg = bpf_map_lookup_elem(&config, &w->key);
	if (!cfg || !(cfg->synproxy_services | cfg->synproxy_auto))
		return 0;
	w->key = slot * AG_PORT_SLOT + dport;
	id = bpf_map_lookup_elem(&ports, &w->key);
	if (!id || !*id || *id >= AG_MAX_SERVICES)
		return 0;
	svc = *id;
	*cfgp = cfg;
	if ((cfg->synproxy_services >> svc) & 1)
		return svc;
	w->key = svc;
	if (((cfg->synproxy_auto >> svc) & 1) && sp_auto_judging(w))
		return svc;
	return 0;
}

/* A valid cookie proves its client as the kernel's own handshake does
 * (proof.h handshake_acked): the client echoed a number only a receiver of
 * the SYN-ACK knows. Only a cookie with timestamps is proof enough: its 31
 * bits against the kernel's 32, where 23 bits alone fall to 8 million forged
 * ACKs within a cookie's life (a source proven that way could then be banned
 * on forged evidence). Without them the server's data proves it later
 * (egress). The client does not become a proven client of the service here
 * (conntrack.h prove_client, whose SYNs skip the shared limits): the
 * server's first data does that, a moment later, as for any client; it
 * would cost every valid cookie a second table. */
static __always_inline void sp_prove(const struct ag_config *cfg, const struct pkt *p,
				     const struct sp_work *w)
{
	if (!w->attrs.tstamp_ok || !cfg->prove_sources)
		return;
	sp_stat(SP_STAT_PROVEN);
	record_proof(cfg, p->addr, p->family);	/* v4-mapped, as the cookie hashed it */
}

/* A validated handshake is its client's new connection: the limits never saw
 * its SYN (claimed before them), so the client's and its prefix's
 * new-connection buckets are charged here, where the source is real, as the
 * limits charge a SYN: the client's first, then the prefix's, which a proven
 * client (proven.h) is charged but never refused by. Not the service's total:
 * the flood it meters never reached the server. Runs after the limits'
 * charging stage let the ACK through, on the entries that stage found (lx):
 * only one it inserted itself is looked up (once per new client). Its
 * source is proven first (refused or not, it is real). A refusal is the
 * limits' (client_cps, prefix_cps, with the event and count they give it);
 * when the tables refused an insert nothing is charged, as the limits charge
 * nothing they cannot hold. */
static __always_inline void sp_charge(const struct ag_config *cfg, const struct pkt *p, struct verdict *v,
				      struct limits_ctx *lx, const struct sp_work *w)
{
	const struct ag_limit *lc = &lx->svc->limits[AG_LEVEL_CLIENT][AG_KIND_CPS];
	const struct ag_limit *lp = &lx->svc->limits[AG_LEVEL_PREFIX][AG_KIND_CPS];
	struct ag_service_state *ps = lx->ps;
	int proven_svc;

	sp_prove(cfg, p, w);
	if (!lc->interval && !lp->interval)
		return;
	if (!lx->cs)	/* the limits inserted it */
		lx->cs = bpf_map_lookup_elem(&clients, &lx->m->ckey);
	if (lx->cs && !gcra(&lx->cs->tat[AG_KIND_CPS], lc, 1, lx->m->now)) {
		limits_refuse(p, cfg, v, lx, AG_LEVEL_CLIENT, AG_KIND_CPS);
		return;
	}
	if (!lp->interval)
		return;
	/* lx->ckey is this client's key already: proven_client rebuilds it */
	proven_svc = service_in(cfg->proven_services, lx->m->svc_id) &&
		     proven_client(cfg, p, lx->m->svc_id, lx->m->now, &lx->m->ckey);
	if (!ps)	/* the limits inserted it (lp set: the prefix is limited, pkey built) */
		lx->ps = ps = bpf_map_lookup_elem(&prefixes, &lx->m->pkey);
	if (ps && !gcra_take(&ps->tat[AG_KIND_CPS], lp, 1, lx->m->now, proven_svc))
		limits_refuse(p, cfg, v, lx, AG_LEVEL_PREFIX, AG_KIND_CPS);
}

/* The socket the kernel would give the segment the guard parsed into p (its
 * 4-tuple); NULL when none. The caller releases it. */
static __always_inline struct bpf_sock *sp_lookup_pkt(void *ctx, const struct pkt *p, struct sp_work *w)
{
	struct bpf_sock_tuple *t = &w->t;

	if (p->family == 4) {
		__builtin_memcpy(&t->ipv4.saddr, &p->addr[12], 4);
		__builtin_memcpy(&t->ipv4.daddr, &p->dst[12], 4);
		t->ipv4.sport = bpf_htons(p->sport);
		t->ipv4.dport = bpf_htons(p->dport);
		return bpf_skc_lookup_tcp(ctx, t, sizeof(t->ipv4), BPF_F_CURRENT_NETNS, 0);
	}
	__builtin_memcpy(t->ipv6.saddr, p->addr, 16);
	__builtin_memcpy(t->ipv6.daddr, p->dst, 16);
	t->ipv6.sport = bpf_htons(p->sport);
	t->ipv6.dport = bpf_htons(p->dport);
	return bpf_skc_lookup_tcp(ctx, t, sizeof(t->ipv6), BPF_F_CURRENT_NETNS, 0);
}

/* A segment with ACK the proxy cannot read (IPv4 options, IPv6 extension
 * headers, a fragment): the proxy never answers such a SYN, so only a
 * connection that exists may own it. One only the listener would take is
 * dropped (bad_cookie: no cookie can be checked in it), where the listener
 * would answer it with a RST; the guard's parse gives the 4-tuple. Returns
 * SP_BAD to drop it, or 0. */
static __always_inline __u32 sp_unreadable(void *ctx, const struct pkt *p, struct sp_work *w)
{
	struct bpf_sock *sk = sp_lookup_pkt(ctx, p, w);
	__u32 drop;

	if (!sk)
		return 0;
	drop = sk->state == BPF_TCP_LISTEN ? SP_BAD : 0;
	bpf_sk_release(sk);
	return drop;
}

/* Whether service svc of the policy cfg has its handshakes judged: always,
 * or auto while on and a cookie's life after. */
static __always_inline int sp_proxied(const struct ag_config *cfg, __u32 svc, struct sp_work *w)
{
	if (svc >= AG_MAX_SERVICES)
		return 0;
	if ((cfg->synproxy_services >> svc) & 1)
		return 1;
	w->key = svc;
	return ((cfg->synproxy_auto >> svc) & 1) && sp_auto_judging(w);
}

/* The cookie check, between the limits' two stages (sp_judge): a segment
 * with ACK of a judged service svc (policy slot slot). Returns SP_BAD to
 * drop it (bad_cookie), SP_ACK for a valid cookie of ours (its attributes in
 * w->attrs, its service and slot in w for the exit), SP_KCOOKIE for one the
 * kernel issued, or 0 when the listener is not its socket. */
static __always_inline __u32 sp_verify(void *ctx, int tc, void *data, void *data_end, const struct pkt *p,
				       struct sp_work *w, __u32 svc, __u32 slot)
{
	const struct ag_synproxy *c = sp_host();
	struct bpf_sock *sk;
	struct sp_hdrs h;
	int listen;

	if (!c)
		return 0;
	w->svc = svc;
	w->slot = slot & 1;
	if (sp_locate(data, data_end, &h))
		return sp_unreadable(ctx, p, w);
	/* the socket first: an established connection's segment (most of
	 * what comes) then costs a lookup, not a hash of two time slots */
	sk = sp_lookup(ctx, &h, w);
	if (!sk)
		return 0;
	/* released before the hashes: its pointer would take a slot of the
	 * stack the guard's frames share */
	listen = sk->state == BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	if (!listen)
		return 0;
	if (sp_check(ctx, tc, c, &h, w))
		return SP_ACK;
	return sp_kernel_cookie(&h) ? SP_KCOOKIE : SP_BAD;
}

/* A forged fragment's ACK, judged before the limits' read-only stage (they
 * charge its fragment budget there first): charged to its service's total
 * packet and byte buckets as a forged ACK is after that stage (sp_judge),
 * since the total meters every packet of the service that arrives. Nothing
 * else, and off the stack (the guard's frames share 512 bytes). */
static __always_inline void sp_charge_total(const struct pkt *p, __u32 slot, __u32 svc, struct sp_work *w)
{
	const struct ag_service *def;
	struct ag_service_state *ss;

	w->key = policy_index(slot, svc);
	def = bpf_map_lookup_elem(&services, &w->key);
	if (!def || !level_limited(def->limits[AG_LEVEL_SERVICE]))
		return;
	w->key = svc;
	ss = bpf_map_lookup_elem(&service_state, &w->key);
	if (!ss)
		return;
	w->lm.cost.packets = 1;
	w->lm.cost.bytes = p->len;
	limit_level(ss->tat, def->limits[AG_LEVEL_SERVICE], &w->lm.cost, 0, bpf_ktime_get_ns());
}

/* sp_verify on its own: global functions, so that the verifier checks the
 * cookie's paths once, not once for each with the limits' stages around it
 * (sp_judge inlined it: the TC guard then passed the verifier's budget). */
__attribute__((noinline)) __u32 synproxy_xdp_verify(struct xdp_md *ctx, const struct pkt *p, __u32 svs);
__attribute__((noinline)) __u32 synproxy_tc_verify(struct __sk_buff *skb, const struct pkt *p, __u32 svs);

/* The cookie check's global function for the attach mode: 0, SP_ACK,
 * SP_KCOOKIE or SP_BAD. */
static __always_inline __u32 sp_verify_in(void *ctx, int tc, const struct pkt *p, __u32 svs)
{
	return (tc ? synproxy_tc_verify(ctx, p, svs) : synproxy_xdp_verify(ctx, p, svs)) & 3;
}

/* The judgement of a segment with ACK (without SYN or RST) of service svc
 * (policy slot slot, cfg the guard's), with its limits, in one pass: the
 * limits' read-only stage (a flood over the service total or a known
 * prefix's limit is dropped there as that limit, with its event, for an
 * array read, before the socket lookup and hashes), then the cookie check
 * (sp_verify; a fragment's first, as the limits charge its budget before
 * anything), then the limits' charging stage, resumed from what the first
 * stage found, and for a valid cookie the handshake's own charge (sp_charge)
 * on the entries the second found. A forged ACK (SP_BAD) makes or charges
 * no client or prefix state: it is charged to the service's total packet
 * and byte buckets only, as every packet of the service is, so that a flood
 * of them meets the read-only check. A service whose handshakes are not
 * judged now (auto, off) gets the limits alone. Returns SP_DECIDED when the
 * guard stops here, SP_LIMITED when the limits ran and it goes on. */
static __always_inline __u32 sp_judge(void *ctx, int tc, const struct ag_config *cfg, const struct pkt *p,
				      struct verdict *v, __u32 svc, __u32 slot)
{
	struct sp_work *w = sp_work();
	__u32 r = 0, judged, svs = svc | slot << SP_SVS_SLOT_SHIFT;
	struct limits_ctx lx;

	judged = w && sp_proxied(cfg, svc, w);
	if (judged && p->frag) {
		r = sp_verify_in(ctx, tc, p, svs);
		if (r == SP_BAD) {
			sp_charge_total(p, slot, svc, w);
			goto bad;
		}
	}
	if (!w)
		return 0;	/* the guard applies the limits */
	lx.m = &w->lm;
	lx.svc = NULL;
	if (limits_peek(p, cfg, slot, svc, v, &lx) && v->action != AG_ACT_PASS)
		return judged ? SP_DECIDED : SP_LIMITED;
	if (judged && !p->frag) {
		r = sp_verify_in(ctx, tc, p, svs);
		if (r == SP_BAD) {
			if (lx.ss)	/* limited: the peek found it */
				limit_level(lx.ss->tat, lx.svc->limits[AG_LEVEL_SERVICE], &lx.m->cost, 0, lx.m->now);
			goto bad;
		}
	}
	v->synproxy = r;	/* 0, SP_ACK or SP_KCOOKIE */
	if (!lx.svc || limits_charge(p, cfg, v, &lx))
		return SP_LIMITED;
	if (r == SP_ACK)
		sp_charge(cfg, p, v, &lx, w);
	return SP_LIMITED;

bad:
	v->service = svc;
	v->action = AG_ACT_DROP;	/* a forged or stale handshake */
	v->reason = AG_R_BAD_COOKIE;
	return SP_DECIDED;
}

/* At the exit, for a handshake sp_judge marked and everything since let
 * through (its source proven and its connection limits charged there): a
 * kernel cookie is counted; a valid one of ours takes its connection cap's
 * slot and, let on, is counted (cookie_ok) and at TC handed to the
 * listener. Returns the reason to drop it for (a cap's), or 0. w holds what
 * sp_verify left for this very packet: the marker is only ever set by it. */
static __always_inline __u32 sp_finish(void *ctx, int tc, const struct ag_config *cfg, const struct pkt *p,
				       struct verdict *v)
{
	struct sp_work *w = sp_work();
	struct bpf_sock *sk;
	__u32 drop, svc;

	if (!w || !cfg)
		return 0;
	if (v->synproxy == SP_KCOOKIE) {
		sp_stat(SP_STAT_KERNEL_COOKIE);
		return 0;
	}
	svc = w->svc;
	drop = conn_handshake(p, v, w->slot & 1, svc);	/* its caps (maxConnections) */
	if (drop)	/* a refusal is its verdict only */
		return drop;
	sp_stat(SP_STAT_COOKIE_OK);
	if (tc) {
		sk = sp_lookup_pkt(ctx, p, w);
		if (sk) {
			if (sk->state == BPF_TCP_LISTEN)
				sp_assign(ctx, sk, w);
			bpf_sk_release(sk);
		}
	}
	return 0;
}

/* Builds the SYN-ACK answering the SYN in the frame into w->s and returns the
 * frame length it needs. When the SYN cannot be answered it returns the
 * frame's length (a resize to it changes nothing) and leaves w->built 0, so
 * that sp_answer_write refuses: sp_answer runs the three steps without a
 * branch. The offsets sp_answer_write needs are left in w; w->over says the
 * reflection bound refused the SYN-ACK. cfg and p are the guard's. */
static __always_inline int sp_answer_build(void *ctx, int tc, const struct ag_config *cfg,
					   const struct pkt *p)
{
	const struct ag_synproxy *c = sp_host();
	const struct ag_slot_key *k = sp_slot_key();
	struct sp_work *w = sp_work();
	void *data, *data_end;
	struct sp_hdrs h;
	__u64 now;
	int len;

	if (tc) {
		data = (void *)(long)((struct __sk_buff *)ctx)->data;
		data_end = (void *)(long)((struct __sk_buff *)ctx)->data_end;
		len = ((struct __sk_buff *)ctx)->len;
	} else {
		data = (void *)(long)((struct xdp_md *)ctx)->data;
		data_end = (void *)(long)((struct xdp_md *)ctx)->data_end;
		len = data_end - data;
	}
	if (!w)
		return len;
	w->built = 0;
	w->over = 0;
	if (!c || !k || !cfg || !p || sp_locate(data, data_end, &h))
		return len;
	sp_read_opts(ctx, tc, &h, w);
	if (!sp_syn_csum_ok(&h, w))
		return len;
	/* one clock for the bound, the cookie's slot and the TSval */
	now = bpf_ktime_get_coarse_ns();
	if (!sp_answer_conforms(k, cfg, p, w, now)) {
		w->over = 1;
		return len;
	}
	sp_build(c, &h, w, now);
	w->l3_off = h.l3_off;
	w->l4_off = h.l4_off;
	w->v4 = h.v4;
	w->frame_len = h.l4_off + w->s.len;
	w->built = 1;
	return w->frame_len;
}

/* Rewrites the frame, resized to what sp_answer_build said, into the SYN-ACK
 * in w->s. Returns 1 when done, 2 when the reflection bound refused it, 0
 * when there was nothing to write or the resize did not happen. */
static __always_inline int sp_answer_write(void *ctx, int tc)
{
	const struct ag_synproxy *c = sp_host();
	struct sp_work *w = sp_work();
	void *data, *data_end;
	__u32 len;

	if (tc) {
		data = (void *)(long)((struct __sk_buff *)ctx)->data;
		data_end = (void *)(long)((struct __sk_buff *)ctx)->data_end;
		len = ((struct __sk_buff *)ctx)->len;
	} else {
		data = (void *)(long)((struct xdp_md *)ctx)->data;
		data_end = (void *)(long)((struct xdp_md *)ctx)->data_end;
		len = data_end - data;
	}
	if (!c || !w)
		return 0;
	if (!w->built || len != w->frame_len)
		return (w->over & 1) << 1;
	w->built = 0;
	return sp_write(data, data_end, w->l3_off, w->l4_off, w->v4, c, w) == 0;
}

/* ---- entry points: global functions, verified on their own --------------- */

/* Each is its own function, so each has its own frame: the deepest of them
 * adds to the guard's on the 512-byte stack. Answering is two, around the
 * resize (which voids every packet pointer anyway). */

/* The frame length the SYN-ACK for the SYN in the frame needs. */
__attribute__((noinline)) int synproxy_xdp_build(struct xdp_md *ctx, const struct ag_config *cfg,
						 const struct pkt *p)
{
	return sp_answer_build(ctx, 0, cfg, p);
}

/* 1 when the resized frame became the SYN-ACK, 2 when the bound refused it. */
__attribute__((noinline)) int synproxy_xdp_write(struct xdp_md *ctx)
{
	return sp_answer_write(ctx, 0);
}

/* sp_judge at XDP: the limits with the cookie check between their stages,
 * in one global function (their map-value pointers cannot cross into
 * another). svs: the service and policy slot (SP_SVS_*). 0: not run (the
 * guard applies the limits itself). */
__attribute__((noinline)) __u32 synproxy_xdp_limits(struct xdp_md *ctx, const struct ag_config *cfg,
						    const struct pkt *p, struct verdict *v, __u32 svs)
{
	if (!cfg || !p || !v)
		return 0;
	return sp_judge(ctx, 0, cfg, p, v, svs & SP_SVS_SVC, svs >> SP_SVS_SLOT_SHIFT);
}

__attribute__((noinline)) __u32 synproxy_xdp_verify(struct xdp_md *ctx, const struct pkt *p, __u32 svs)
{
	struct sp_work *w = sp_work();

	if (!p || !w)
		return 0;
	return sp_verify(ctx, 0, (void *)(long)ctx->data, (void *)(long)ctx->data_end, p, w, svs & SP_SVS_SVC,
			 svs >> SP_SVS_SLOT_SHIFT);
}

/* sp_finish at XDP; finish says whether there is a handshake to finish (the
 * caller computes it without a branch); cfg is the guard's policy, the one
 * sp_verify judged with. */
__attribute__((noinline)) __u32 synproxy_xdp_finish(struct xdp_md *ctx, const struct ag_config *cfg,
						    const struct pkt *p, struct verdict *v, __u32 finish)
{
	/* ctx is used at TC only: tested, so that the compiler does not pass
	 * the XDP caller's as dead (the verifier wants the context there) */
	if (!finish || !ctx || !cfg || !p || !v)
		return 0;
	return sp_finish(ctx, 0, cfg, p, v);
}

/* The same at TC, where a valid handshake is also handed to the listener. */
__attribute__((noinline)) int synproxy_tc_build(struct __sk_buff *skb, const struct ag_config *cfg,
						const struct pkt *p)
{
	return sp_answer_build(skb, 1, cfg, p);
}

__attribute__((noinline)) int synproxy_tc_write(struct __sk_buff *skb)
{
	return sp_answer_write(skb, 1);
}

__attribute__((noinline)) __u32 synproxy_tc_limits(struct __sk_buff *skb, const struct ag_config *cfg,
						   const struct pkt *p, struct verdict *v, __u32 svs)
{
	if (!cfg || !p || !v)
		return 0;
	return sp_judge(skb, 1, cfg, p, v, svs & SP_SVS_SVC, svs >> SP_SVS_SLOT_SHIFT);
}

__attribute__((noinline)) __u32 synproxy_tc_verify(struct __sk_buff *skb, const struct pkt *p, __u32 svs)
{
	struct sp_work *w = sp_work();

	if (!p || !w)
		return 0;
	return sp_verify(skb, 1, (void *)(long)skb->data, (void *)(long)skb->data_end, p, w, svs & SP_SVS_SVC,
			 svs >> SP_SVS_SLOT_SHIFT);
}

__attribute__((noinline)) __u32 synproxy_tc_finish(struct __sk_buff *skb, const struct ag_config *cfg,
						   const struct pkt *p, struct verdict *v, __u32 finish)
{
	if (!finish || !cfg || !p || !v)
		return 0;
	return sp_finish(skb, 1, cfg, p, v);
}

/* Whether the SYN of service svc (policy slot slot) is claimed: always, or
 * auto while on. auto turns on when a SYN finds the service's total
 * new-connection bucket empty, one the limits would refuse: that SYN is
 * claimed already, so no SYN is refused by the shared budget while the proxy
 * can answer it. While on, claimed SYNs keep metering that bucket as the
 * limits would (a conforming one is charged): while it would still refuse
 * them, the flood goes on and the proxy stays on for SP_AUTO_HOLD more. Once
 * the flood stops, the bucket refills, the hold runs out, and SYNs meet the
 * limits and the listener again. A global function: the guard pays one call
 * and one branch for it. */
__attribute__((noinline)) __u32 synproxy_claims(__u32 svc, __u32 slot)
{
	const struct ag_service *def;
	const struct ag_config *cfg;
	struct ag_service_state *ss;
	const struct ag_limit *l;
	__u64 now, *until;
	__u32 idx;

	if (svc >= AG_MAX_SERVICES || slot > 1)
		return 0;
	cfg = bpf_map_lookup_elem(&config, &slot);
	if (!cfg)
		return 0;
	if ((cfg->synproxy_services >> svc) & 1)
		return 1;
	if (!((cfg->synproxy_auto >> svc) & 1))
		return 0;
	idx = slot * AG_MAX_SERVICES + svc;
	def = bpf_map_lookup_elem(&services, &idx);
	ss = bpf_map_lookup_elem(&service_state, &svc);
	until = bpf_map_lookup_elem(&synproxy_until, &svc);
	if (!def || !ss || !until)
		return 0;
	l = &def->limits[AG_LEVEL_SERVICE][AG_KIND_CPS];
	now = bpf_ktime_get_ns();
	if (!gcra_peek(&ss->tat[AG_KIND_CPS], l, 1, now)) {
		/* over the limit: on, or on for longer (written at most once
		 * per SP_AUTO_REFRESH: every CPU's SYNs read this word) */
		if (*until <= now)
			sp_stat(SP_STAT_AUTO_ON);
		if (*until < now + SP_AUTO_HOLD - SP_AUTO_REFRESH)
			*until = now + SP_AUTO_HOLD;
		return 1;
	}
	if (now < *until) {
		gcra_take(&ss->tat[AG_KIND_CPS], l, 1, now, 0);
		return 1;
	}
	return 0;
}

/* Turns the SYN in the frame into its SYN-ACK; 1 when done (at TC the entry
 * point redirects it to the interface's egress), 2 when the reflection bound
 * refused it, 0 when it cannot be answered. The three steps always run, each
 * a no-op once one failed, and the result is arithmetic. */
static __always_inline __u32 sp_answer(void *ctx, int tc, const struct ag_config *cfg, const struct pkt *p)
{
	void *data, *data_end;
	long len, cur;

	if (tc) {
		len = synproxy_tc_build(ctx, cfg, p);
		bpf_skb_change_tail(ctx, len, 0);
		return synproxy_tc_write(ctx) & 3;
	}
	len = synproxy_xdp_build(ctx, cfg, p);
	data = (void *)(long)((struct xdp_md *)ctx)->data;
	data_end = (void *)(long)((struct xdp_md *)ctx)->data_end;
	cur = data_end - data;
	/* a scalar before the arithmetic: folded into 32-bit pointer
	 * arithmetic, the verifier refuses it */
	asm volatile("" : "+r"(cur));
	bpf_xdp_adjust_tail(ctx, len - cur);
	return synproxy_xdp_write(ctx) & 3;
}

/* Zero as 1, anything else as 0, without a branch. */
static __always_inline __u32 sp_is_zero(__u64 x)
{
	return ((x | -x) >> 63) ^ 1;
}

/* ---- the pipeline's hooks ------------------------------------------------ */

/* In the guard, after the service matched and before its limits: claims the
 * SYNs of a proxied service for an answer (always, or auto while on), and
 * judges the segments with ACK (without SYN or RST) that may complete one of
 * its handshakes together with the limits (sp_judge): a bad cookie is
 * dropped between their read-only and charging stages, before any client
 * entry is made for it; a good one is charged there and marked for
 * synproxy_finish. Returns SP_DECIDED when it decided the verdict (the caller
 * skips the rest of the guard: a claimed SYN's flood never reaches the
 * server), SP_LIMITED when the limits ran (the caller skips them), else 0.
 * (Monitor mode never proxies: the loader sets no bit for a monitored
 * service or policy.) ctx is an xdp_md, or the skb when tc. */
static __always_inline int synproxy_claim(void *ctx, int tc, const struct pkt *p, const struct ag_config *cfg,
					  __u32 slot, __u32 svc, struct verdict *v)
{
	__u32 svs;

	if (p->proto != IPPROTO_TCP)
		return 0;
	if ((p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN) {
		/* one call and one branch (the verifier follows each instruction
		 * here for every state the guard reaches it in): always, or auto
		 * while on */
		if (!(synproxy_claims(svc, slot) & 1))
			return 0;
		v->synproxy = SP_SYN;
		v->service = svc;
		v->action = AG_ACT_DROP;	/* the listener never sees it */
		v->reason = AG_R_SYN_COOKIE;
		return 1;
	}
	if ((p->tcp_flags & (TCPF_SYN | TCPF_RST | TCPF_ACK)) != TCPF_ACK ||
	    !(((cfg->synproxy_services | cfg->synproxy_auto) >> svc) & 1))
		return 0;
	/* the judgement and the limits in one global call (sp_judge) */
	svs = svc | slot << SP_SVS_SLOT_SHIFT;
	return (tc ? synproxy_tc_limits(ctx, cfg, p, v, svs) : synproxy_xdp_limits(ctx, cfg, p, v, svs)) & 3;
}

/* Right after the guard: answers the SYN synproxy_claim took. Returns 1 when
 * the frame is the SYN-ACK to send back, else gives the verdict its reason
 * (syn_unproxyable, or synack_limited over the reflection bound), without a
 * branch. The caller records the verdict and returns at once: a claimed SYN
 * has nothing for the hooks after the guard. ctx is an xdp_md, or the skb
 * when tc. */
static __always_inline __u32 synproxy_answer(void *ctx, int tc, const struct ag_config *cfg,
					     const struct pkt *p, struct verdict *v)
{
	__u32 r = sp_answer(ctx, tc, cfg, p), answered, over;

	asm volatile("" : "+r"(r));
	answered = r & 1;
	over = (r >> 1) & 1;	/* never with answered */
	v->reason += (answered ^ 1) * (AG_R_SYN_UNPROXYABLE - AG_R_SYN_COOKIE) +
		     over * (AG_R_SYNACK_LIMITED - AG_R_SYN_UNPROXYABLE);
	return answered;
}

/* At the exit, before the verdict is recorded: finishes a handshake
 * synproxy_claim marked, if the limits and everything since let it through
 * (sp_finish); one over its client's connection limits or caps turns the
 * verdict into a drop with that reason (sp_finish wrote a limit's event into
 * v), without a branch: one would have the verifier follow the count twice
 * for each state here. */
static __always_inline void synproxy_finish(void *ctx, int tc, const struct ag_config *cfg, const struct pkt *p,
					    struct verdict *v)
{
	__u32 finish, reason, drop;

	if (v->synproxy < SP_ACK)
		return;
	finish = sp_is_zero(v->action ^ AG_ACT_PASS);
	reason = (tc ? synproxy_tc_finish(ctx, cfg, p, v, finish) : synproxy_xdp_finish(ctx, cfg, p, v, finish)) & 0xff;
	asm volatile("" : "+r"(reason));
	drop = sp_is_zero(reason) ^ 1;
	v->action |= drop;	/* AG_ACT_PASS (0) becomes AG_ACT_DROP (1) */
	v->reason += drop * (reason - v->reason);
}

/* TC ingress beside XDP: hands the handshakes the XDP guard let through to
 * the listener. The socket first, as in the judge: an established
 * connection's segment costs a lookup (a two-slot hash costs three times
 * more). It never drops: the XDP guard judged. */
static __always_inline void synproxy_accept(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	const struct ag_config *cfg = NULL;
	const struct ag_synproxy *c;
	struct bpf_sock *sk;
	struct sp_work *w;
	struct sp_hdrs h;

	if (sp_locate(data, data_end, &h) || !h.tcp->ack || h.tcp->syn || h.tcp->rst)
		return;
	c = sp_host();
	w = sp_work();
	if (!c || !w || !sp_service(bpf_ntohs(h.tcp->dest), w, &cfg))
		return;
	sk = sp_lookup(skb, &h, w);
	if (!sk)
		return;
	/* not the listener's: established, or the kernel's own handshake */
	if (sk->state == BPF_TCP_LISTEN && sp_check(skb, 1, c, &h, w))
		sp_assign(skb, sk, w);
	bpf_sk_release(sk);
}

#endif
