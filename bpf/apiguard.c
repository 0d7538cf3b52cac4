// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* apiguard datapath: one pipeline, two entry points (XDP and TC ingress), and
 * the programs beside it (TC egress, the flow sweeper).
 *
 * A packet's story, in the order guard() tells it:
 *
 *   parse -> refusal memory -> allow/deny lists -> neighbour discovery -> bans
 *         -> [later fragment: its first fragment's ports, or defaultAction;
 *             a first fragment's twin with other ports: dropped]
 *         -> ICMP -> TCP flag sanity -> service match -> service ACL
 *         -> SYN proxy (a SYN answered; a handshake's ACK judged)
 *         -> limits -> marks for the state machines
 *
 * then, with the verdict known: connection tracking (which may refuse a SYN),
 * handshake proofs, fragment memory, the SYN proxy's finish (a judged
 * handshake's connection limits and caps), and the single exit, record(), which
 * turns a drop into a counted pass in monitor mode, counts the verdict and
 * emits at most one throttled event. Each stage is a header of include/ that
 * owns its types, maps and logic and says its contract at the top. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "include/types.h"	/* the shared vocabulary and struct verdict */
#include "include/config.h"	/* load-time constants, the policy in force */
#include "include/parse.h"	/* the one parser */
#include "include/counters.h"	/* verdict counters, datapath statistics */
#include "include/events.h"	/* ring-buffer events, throttled */
#include "include/refusals.h"	/* sources a packet-rate bucket refuses for a while */
#include "include/lists.h"	/* allow and deny */
#include "include/bans.h"
#include "include/frag.h"	/* fragments follow their first fragment */
#include "include/acl.h"	/* per-service source ACLs */
#include "include/limits.h"	/* client, prefix and service buckets */
#include "include/conntrack.h"	/* connection caps */
#include "include/proof.h"	/* proven sources */
#include "include/egress.h"	/* the server's side */
#include "include/synproxy.h"	/* SYN cookies answered by the datapath */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keep the generated Go types even where no map names them. */
const enum ag_const ag_const_unused __attribute__((unused));
const enum ag_action ag_action_unused __attribute__((unused));
const enum ag_reason ag_reason_unused __attribute__((unused));
const enum ag_stat ag_stat_unused __attribute__((unused));
const enum ag_event_type ag_event_type_unused __attribute__((unused));
const enum ag_kind ag_kind_unused __attribute__((unused));
const enum ag_level ag_level_unused __attribute__((unused));
const enum ag_list ag_list_unused __attribute__((unused));
const enum ag_flow_state ag_flow_state_unused __attribute__((unused));
const struct ag_refusal *ag_refusal_unused __attribute__((unused));
const struct ag_event *ag_event_unused __attribute__((unused));

#define AG_DHCP_SERVER_PORT 67
#define AG_DHCP_CLIENT_PORT 68
#define AG_DHCP6_SERVER_PORT 547
#define AG_DHCP6_CLIENT_PORT 546
#define AG_TC_LINEAR 128	/* bytes of headers a TC program wants in the linear area */

static __always_inline int decide(struct verdict *v, __u8 action, __u8 reason, __u8 event)
{
	v->action = action;
	v->reason = reason;
	v->event = event;
	return 1;
}

/* Not IP: ARP and friends keep the host reachable, unless a deny entry names
 * an ARP sender. */
static __always_inline void not_ip(const struct pkt *p, __u32 slot, struct verdict *v)
{
	if (p->arp && list_of(p->addr, p->family, slot) == AG_LIST_DENY)
		decide(v, AG_ACT_DROP, AG_R_DENY, AG_EV_DENY_HIT);
	else
		decide(v, AG_ACT_PASS, AG_R_NOT_IP, 0);
}

/* The stages below return 1 when they decided the verdict. */

/* Allow-listed sources skip everything after; denied ones are dropped. */
static __always_inline int listed(const struct pkt *p, __u32 slot, struct verdict *v)
{
	__u32 list = list_of(p->addr, p->family, slot);

	if (list == AG_LIST_ALLOW)
		return decide(v, AG_ACT_PASS, AG_R_ALLOW, 0);
	if (list == AG_LIST_DENY)
		return decide(v, AG_ACT_DROP, AG_R_DENY, AG_EV_DENY_HIT);
	return 0;
}

/* IPv6 neighbour discovery keeps the host reachable: before bans. */
static __always_inline int neighbour_discovery(const struct pkt *p, struct verdict *v)
{
	if (p->family != 6 || !pkt_is_icmp(p) || p->icmp_type < AG_ICMPV6_NDP_FIRST ||
	    p->icmp_type > AG_ICMPV6_NDP_LAST)
		return 0;
	return decide(v, AG_ACT_PASS, AG_R_NDP, 0);
}

static __always_inline int in_ban(const struct pkt *p, struct verdict *v)
{
	return banned(p) && decide(v, AG_ACT_DROP, AG_R_BAN, AG_EV_BAN_HIT);
}

/* frag.h: a later fragment goes on as its first fragment did (taking its
 * ports), or is an orphan that belongs to no service: defaultAction. */
static __always_inline int orphan_fragment(struct pkt *p, const struct ag_config *cfg, struct verdict *v)
{
	if (p->frag != AG_FRAG_LATER || frag_recall(p))
		return 0;
	decide(v, cfg->default_drop ? AG_ACT_DROP : AG_ACT_PASS, AG_R_FRAGMENT, 0);
	if (!cfg->default_drop || v->monitor)
		frag_note_orphan(p);
	return 1;
}

/* frag.h: the kernel keeps a datagram's first first fragment; a twin with
 * other ports would only lend them to the later fragments. */
static __always_inline int twin_fragment(const struct pkt *p, struct verdict *v)
{
	return p->frag == AG_FRAG_FIRST && frag_twin(p) && decide(v, AG_ACT_DROP, AG_R_FRAGMENT, 0);
}

/* ICMP other than neighbour discovery: the host's business, not a service's. */
static __always_inline int icmp(const struct pkt *p, struct verdict *v)
{
	return pkt_is_icmp(p) && decide(v, AG_ACT_PASS, AG_R_ICMP, 0);
}

/* A later fragment has no flags: its first fragment's were checked. */
static __always_inline int bad_flags(const struct pkt *p, const struct ag_config *cfg, struct verdict *v)
{
	if (!cfg->tcp_flag_sanity || !pkt_has_tcp(p) || !tcp_flags_invalid(p->tcp_flags))
		return 0;
	return decide(v, AG_ACT_DROP, AG_R_TCP_FLAGS, AG_EV_BAD_FLAGS);
}

/* DHCP and DHCPv6 replies keep the host's address, even under default drop. */
static __always_inline int dhcp_reply(const struct pkt *p)
{
	return p->proto == IPPROTO_UDP &&
	       ((p->sport == AG_DHCP_SERVER_PORT && p->dport == AG_DHCP_CLIENT_PORT) ||
		(p->sport == AG_DHCP6_SERVER_PORT && p->dport == AG_DHCP6_CLIENT_PORT));
}

/* The service that owns the destination port, or 0 with the verdict for
 * traffic to no service decided. */
static __always_inline __u32 service_match(const struct pkt *p, const struct ag_config *cfg, __u32 slot,
					   struct verdict *v)
{
	__u32 svc = service_of(slot, p->proto, p->dport);

	if (svc)
		return svc;
	if (dhcp_reply(p)) {
		decide(v, AG_ACT_PASS, AG_R_HOST, 0);
		return 0;
	}
	decide(v, cfg->default_drop ? AG_ACT_DROP : AG_ACT_PASS, AG_R_NO_SERVICE,
	       p->proto == IPPROTO_TCP && tcp_syn(p->tcp_flags) ? AG_EV_NO_SERVICE : 0);
	return 0;
}

/* ctx is the xdp_md, or the skb when tc: the SYN proxy looks sockets up. */
static __always_inline void guard(void *ctx, int tc, struct pkt *p, int parsed, const struct ag_config *cfg,
				  __u32 slot, struct verdict *v)
{
	__u32 svc, claimed;

	v->monitor = cfg->monitor;
	if (parsed == AG_R_NOT_IP) {
		not_ip(p, slot, v);
		return;
	}
	if (parsed != AG_R_OK) {
		decide(v, AG_ACT_DROP, parsed, 0);
		return;
	}
	if (refused(p, cfg, v) ||		/* refusals.h: still refused, exactly */
	    listed(p, slot, v) ||		/* allow or deny */
	    neighbour_discovery(p, v) ||	/* IPv6 NDP: before bans */
	    in_ban(p, v) ||
	    orphan_fragment(p, cfg, v) ||	/* or it takes its first fragment's ports */
	    twin_fragment(p, v) ||
	    icmp(p, v) ||
	    bad_flags(p, cfg, v))
		return;
	svc = service_match(p, cfg, slot, v);
	if (!svc || acl_refused(p, cfg, slot, svc, v))
		return;
	/* synproxy.h: a proxied service's SYNs are answered at the exit; a
	 * handshake's ACK meets the limits with its cookie checked between
	 * their read-only and charging stages, so a forged one is dropped
	 * before any client entry is made for a connection that may never
	 * complete */
	claimed = synproxy_claim(ctx, tc, p, cfg, slot, svc, v);
	if (claimed == SP_DECIDED)
		return;
	if (claimed != SP_LIMITED)
		apply_limits(p, cfg, slot, svc, v);
	conn_mark(p, cfg, svc, v);
	/* proof.h: an ACK that may complete a handshake */
	v->proof = cfg->prove_sources && pkt_has_tcp(p) &&
		   (p->tcp_flags & (TCPF_SYN | TCPF_RST | TCPF_ACK)) == TCPF_ACK;
}

/* The single exit: monitor conversion, the counter, the event. */
static __always_inline int record(const struct pkt *p, struct verdict *v)
{
	if (v->action == AG_ACT_DROP && v->monitor)
		v->action = AG_ACT_MONITOR;
	count_verdict(v, p->len);
	if (v->event)
		emit_event(p, v);
	return v->action;
}

/* ctx is the xdp_md, or the skb when tc (a constant): the SYN proxy rewrites
 * and resizes the frame, and looks sockets up. gso is the skb's gso_size (0
 * at XDP): parse.h trusts an IP length of 0 only on a GSO aggregate. */
static __always_inline int run_guard(void *ctx, int tc, void *data, void *data_end, __u32 len,
				     __u32 gso)
{
	struct pkt p = { .len = len };
	struct verdict v = { .count = 1, .ev_bits = 128 };
	const struct ag_config *cfg;
	__u32 slot, answered;
	int parsed, act;

	parsed = parse_packet(data, data_end, &p, gso);
	cfg = policy(&slot);
	if (!cfg)
		return record(&p, &v);
	guard(ctx, tc, &p, parsed, cfg, slot, &v);
	/* synproxy.h: a claimed SYN is answered, counted and sent back at once */
	if (v.synproxy == SP_SYN) {
		answered = synproxy_answer(ctx, tc, cfg, &p, &v);
		act = record(&p, &v);
		return answered ? SP_ACT_ANSWER : act;
	}
	if (v.conn)	/* conntrack.h: the client's side of capped services; no call for the rest */
		conn_ingress(&p, &v, slot);
	proof_ingress(&p, &v);		/* proof.h: handshakes completing */
	/* frag.h: a first fragment let through leads its later fragments (an
	 * allow-listed source's pass the allow list on their own; one that could
	 * not be read, in monitor mode, has no ports to lend) */
	if (p.frag == AG_FRAG_FIRST && parsed == AG_R_OK && (v.action == AG_ACT_PASS || v.monitor) &&
	    v.reason != AG_R_ALLOW)
		frag_remember(&p);
	/* synproxy.h: a handshake whose cookie the guard found valid is
	 * charged to its client's connection limits and caps; last
	 * (conntrack and proof act on no handshake of a proxied service: they
	 * never saw its SYN) */
	synproxy_finish(ctx, tc, cfg, &p, &v);
	return record(&p, &v);
}

/* XDP: the verdict for one frame. Separate from the program so that a test
 * object that includes this file (test/bench/guardbench) runs the very same
 * path. */
static __always_inline int xdp_guard(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	switch (run_guard(ctx, 0, data, data_end, data_end - data, 0)) {
	case SP_ACT_ANSWER:
		return XDP_TX;	/* synproxy.h: the SYN-ACK */
	case AG_ACT_DROP:
		return XDP_DROP;
	}
	return XDP_PASS;
}

SEC("xdp")
int apiguard_xdp(struct xdp_md *ctx)
{
	return xdp_guard(ctx);
}

SEC("tc")
int apiguard_tc(struct __sk_buff *skb)
{
	void *data, *data_end;

	/* headers may sit in paged data on some drivers: make the first bytes linear */
	if (skb->data + AG_TC_LINEAR > skb->data_end)
		bpf_skb_pull_data(skb, skb->len < AG_TC_LINEAR ? skb->len : AG_TC_LINEAR);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	switch (run_guard(skb, 1, data, data_end, skb->len, skb->gso_size)) {
	case SP_ACT_ANSWER:
		return bpf_redirect(skb->ifindex, 0);	/* synproxy.h: the SYN-ACK, out again */
	case AG_ACT_DROP:
		return TC_ACT_SHOT;
	}
	return TC_ACT_OK;
}

/* TC egress on the guarded interface: the server's side (egress.h). It never
 * drops; TC_ACT_UNSPEC lets any later program or filter decide. */
/* synproxy.h: TC ingress beside the XDP guard. The kernel takes a handshake
 * from a TC program only (bpf_sk_assign_tcp_reqsk): the XDP guard answered
 * the SYN and checked the ACK, this hands the ACK to the listener. Never drops. */
SEC("tc")
int apiguard_synproxy(struct __sk_buff *skb)
{
	if (skb->data + SP_PULL > skb->data_end)
		bpf_skb_pull_data(skb, skb->len < SP_PULL ? skb->len : SP_PULL);
	synproxy_accept(skb);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int apiguard_egress(struct __sk_buff *skb)
{
	/* TCP builds its headers in the linear area: pull only when they are not
	 * (a pull on a cloned skb copies its head) */
	if (skb->data + AG_TC_LINEAR > skb->data_end && skb->data_end - skb->data < skb->len)
		bpf_skb_pull_data(skb, skb->len < AG_TC_LINEAR ? skb->len : AG_TC_LINEAR);
	egress((void *)(long)skb->data, (void *)(long)skb->data_end, sender_of(skb), skb->gso_size);
	return TC_ACT_UNSPEC;
}

/* The flow sweeper (conntrack.h), run by the daemon through BPF_PROG_TEST_RUN.
 * It releases idle flows and deletes closed ones after their linger with the
 * same CAS as the datapath, and writes struct ag_sweep into the packet buffer. */
SEC("xdp")
int apiguard_flow_sweep(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ag_sweep s = { .now = bpf_ktime_get_coarse_ns(), .slot = active_slot() };

	bpf_for_each_map_elem(&flows, flow_sweep_one, &s, 0);
	if (data + sizeof(s) <= data_end)
		__builtin_memcpy(data, &s, sizeof(s));
	return XDP_PASS;
}
