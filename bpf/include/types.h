/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The vocabulary every stage of the datapath shares, and every value the
 * loader must agree on.
 *
 * Contract: nothing here is mirrored by hand in Go. bpf2go generates the Go
 * side: structs with -type, enums (constants included: enum ag_const) from the
 * BTF of the variables apiguard.c declares for them. Change a value here, run
 * make generate, and Go follows. A feature's own types live in its header
 * (bans.h, events.h, conntrack_types.h, ...); only what several stages or the
 * verdict itself name is here. */
#ifndef APIGUARD_TYPES_H
#define APIGUARD_TYPES_H

#include <linux/types.h>

/* Constants the loader uses too: an enum, so that they reach Go through BTF
 * (loader/consts.go names them) instead of being copied. */
enum ag_const {
	AG_MAX_SERVICES = 64,		/* service ids 1..63; 0 means "no service" */
	AG_PORTS_PER_PROTO = 65536,
	AG_PORT_SLOT = 2 * AG_PORTS_PER_PROTO, /* a policy slot's port table: TCP, then UDP */
	AG_V4_MAPPED_BITS = 96,		/* an IPv4 /n is the v4-mapped /96+n */
	AG_LPM_CAPACITY = 1 << 18,	/* allow/deny entries per family and slot (lists.h) */
	AG_BAN_CAPACITY = 1 << 18,	/* bans per family (bans.h) */
	AG_ACL_CAPACITY = 1 << 17,	/* service ACL entries, both slots together (acl.h) */
	AG_ACL_HDR_BITS = 16,		/* slot and service bytes before an ACL key's address */
	AG_CLIENT_CAPACITY = 1 << 17,	/* default client table size; the loader sizes it (clients.h) */
	AG_PREFIX_CAPACITY = 1 << 16,	/* default prefix table size; the loader sizes it (clients.h) */
	AG_FLOW_CAPACITY = 1 << 18,	/* default flow table size; the loader sizes it (conntrack_map.h) */
	AG_COUNT_HALF_SHIFT = 32,	/* connection count words: established low, half-open high */
	AG_COUNT_DEAD_HALF = 0xffffffffu, /* both halves of a count word being deleted */
	AG_FRAG_TTL_SECONDS = 60,	/* a first fragment leads its later ones this long (frag.h) */
	AG_SEEN_SHIFT = 26,		/* a client's first and last sighting: CLOCK_MONOTONIC ns >> this (clients.h) */
	AG_PF_V4_BITS = 16,		/* a prefilter bit: an IPv4 /16 (prefilter.h) */
	AG_PF_V6_BITS = 32,		/* or an IPv6 /32, hashed onto the same bits */
	AG_PF_V6_HASH = 0x9e3779b1u,	/* the multiplier of that hash */
	AG_PF_WORDS = 1024,		/* 64-bit words of a prefilter: 1 << AG_PF_V4_BITS bits */
	AG_PF_READY = 1,		/* prefilter flag: the loader built it; trust clear bits */
	AG_PF_WALK = 2,			/* prefilter flag: an entry is shorter than a bit; always walk */
	AG_PF_LISTS = 0,		/* prefilters of the allow/deny lists: + 2 * slot + (IPv6) */
	AG_PF_BANS = 4,			/* prefilters of the bans: + (IPv6) */
	AG_PF_ENTRIES = 6,
};

#define AG_EEXIST 17	/* errno of a BPF_NOEXIST insert that found its key taken */

/* What happened to a packet. MONITOR is a drop that monitor mode turned into a pass. */
enum ag_action {
	AG_ACT_PASS = 0,
	AG_ACT_DROP = 1,
	AG_ACT_MONITOR = 2,
	AG_ACT_MAX = 3,
};

/* Why. Every verdict carries exactly one reason, counted per (action, reason). */
enum ag_reason {
	AG_R_OK = 0,		/* matched a service and stayed under its limits */
	AG_R_NO_SERVICE,	/* TCP/UDP to no service, or another IP protocol */
	AG_R_ALLOW,		/* allow list hit: nothing else is checked */
	AG_R_NOT_IP,		/* ARP, LLDP and other non-IP frames */
	AG_R_ICMP,		/* ICMP/ICMPv6 other than neighbour discovery */
	AG_R_NDP,		/* IPv6 neighbour discovery: the host must stay reachable */
	AG_R_FRAGMENT,		/* a later fragment whose first fragment was not let through (frag.h): defaultAction */
	AG_R_TRUNCATED,		/* a header runs past the end of the packet */
	AG_R_MALFORMED,		/* impossible header values (IHL < 5, TCP doff < 5, ...) */
	AG_R_EXT_LIMIT,		/* more IPv6 extension headers than the bounded walk allows */
	AG_R_DENY,
	AG_R_BAN,
	AG_R_TCP_FLAGS,		/* NULL, XMAS, SYN+FIN, SYN+RST, ... */
	AG_R_CLIENT_PPS,
	AG_R_CLIENT_BPS,
	AG_R_CLIENT_CPS,
	AG_R_PREFIX_PPS,
	AG_R_PREFIX_BPS,
	AG_R_PREFIX_CPS,
	AG_R_SERVICE_PPS,
	AG_R_SERVICE_BPS,
	AG_R_SERVICE_CPS,
	AG_R_HOST,		/* DHCP/DHCPv6 replies: the host must keep its address */
	AG_R_ACL,		/* source outside the service's allowFrom CIDRs */
	AG_R_CONN_CLIENT_ESTABLISHED,	/* SYN refused: the client holds its cap of connections */
	AG_R_CONN_CLIENT_HALF_OPEN,	/* SYN refused: the client has its cap of unfinished handshakes */
	AG_R_CONN_SERVICE_ESTABLISHED,
	AG_R_CONN_SERVICE_HALF_OPEN,
	AG_R_FLOW_TABLE_FULL,	/* no room to follow a new connection: passed or dropped as the policy says */
	AG_R_VLAN_STACK,	/* VLAN tags past the ones the parser reads (parse.h) */
	AG_R_FRAG_BUDGET,	/* over its service's fragment budget (frag.h) */
	AG_R_SYN_COOKIE,	/* SYN answered with a SYN cookie (synproxy.h): the listener never sees it */
	AG_R_BAD_COOKIE,	/* ACK for the listener of a proxied service with a wrong or stale cookie */
	AG_R_SYN_UNPROXYABLE,	/* SYN the proxy cannot answer (IP options, extension headers, bad checksum) */
	AG_R_SYNACK_LIMITED,	/* SYN not answered: its source had its share of SYN-ACKs (synproxy.h) */
	AG_R_MAX,
};

/* Datapath health counters that are not packet verdicts (counters.h). */
enum ag_stat {
	AG_STAT_CLIENT_INSERT = 0,	/* new per-client entries */
	AG_STAT_CLIENT_INSERT_FAIL,	/* insert refused: that packet skipped per-client limits */
	AG_STAT_PREFIX_INSERT,
	AG_STAT_PREFIX_INSERT_FAIL,
	AG_STAT_EVENT_SENT,
	AG_STAT_EVENT_SUPPRESSED,	/* throttled per client, or by its type's budget */
	AG_STAT_EVENT_LOST,		/* ring buffer full */
	AG_STAT_CAS_CONTENDED,		/* a limiter gave up after bounded CAS retries */
	AG_STAT_FLOW_NEW,		/* connections followed from their SYN */
	AG_STAT_FLOW_ADOPTED,		/* connections picked up from the server's packets */
	AG_STAT_FLOW_TABLE_FULL,	/* a flow or client count could not be inserted */
	AG_STAT_FLOW_BUSY,		/* the entry was being deleted at that instant */
	AG_STAT_FLOW_EXPIRED,		/* idle timeouts, lazily or by the sweeper */
	AG_STAT_FLOW_DELETED,		/* closed flows the sweeper removed after their linger */
	AG_STAT_FLOW_COUNT_MISSING,	/* a release found no client count: must stay 0 */
	AG_STAT_PROVEN_SYN,		/* SYNs of proven clients that skipped the shared connection limits */
	AG_STAT_FRAG_INSERT,		/* datagrams entered in the fragment table (frag.h) */
	AG_STAT_MAX,
};

enum ag_event_type {
	AG_EV_LIMITED = 1,	/* a client started (or keeps) being limited; reason says which bucket */
	AG_EV_SYN_LIMITED,	/* a new-connection bucket tripped */
	AG_EV_DENY_HIT,
	AG_EV_BAN_HIT,
	AG_EV_BAD_FLAGS,
	AG_EV_NO_SERVICE,	/* TCP SYN to a port with no service: scan evidence */
	AG_EV_MAP_PRESSURE,	/* the client or prefix LRU is evicting live entries */
	AG_EV_ACL_HIT,		/* a source outside a service's allowFrom CIDRs */
	AG_EV_CONN_LIMITED,	/* a SYN over a connection cap; reason says which */
	AG_EV_FLOW_TABLE_FULL,	/* the flow table refused a new connection */
	AG_EV_MAX,		/* not a type: one past the last */
};

enum ag_kind {
	AG_KIND_PPS = 0,
	AG_KIND_BPS = 1,
	AG_KIND_CPS = 2,
	AG_KIND_MAX = 3,
};

enum ag_level {
	AG_LEVEL_CLIENT = 0,
	AG_LEVEL_PREFIX = 1,
	AG_LEVEL_SERVICE = 2,
	AG_LEVEL_MAX = 3,
};

/* One GCRA bucket's parameters. interval is the emission interval in ns per unit
 * in 48.16 fixed point (bytes at 10 GB/s are 0.1 ns each); tolerance is
 * burst * interval in ns. interval == 0 means unlimited. */
struct ag_limit {
	__u64 interval;
	__u64 tolerance;
};

struct ag_service {
	__u32 id;
	__u8 monitor;
	__u8 _pad[3];
	struct ag_limit limits[AG_LEVEL_MAX][AG_KIND_MAX];
	struct ag_limit fragments;	/* fragments (first and later) of all clients together */
};

/* Policy-wide settings; two copies, one per policy slot (config.h). */
struct ag_config {
	__u32 generation;
	__u8 monitor;		/* global monitor mode: every drop becomes a counted pass */
	__u8 default_drop;	/* traffic to no service is dropped */
	__u8 tcp_flag_sanity;
	__u8 client_bits4;	/* client key prefix lengths */
	__u8 client_bits6;
	__u8 prefix_bits4;	/* client-prefix key prefix lengths */
	__u8 prefix_bits6;
	__u8 prove_sources;	/* proof.h: the egress program records proven sources */
	__u32 _pad2;
	/* bit n: service n has a source ACL or connection caps (conntrack.h);
	 * services without either cost no lookup at all */
	__u64 conn_services;
	/* bit n: TCP service n has a shared (prefix or total) new-connection
	 * limit that clients with a proven handshake skip (proven.h) */
	__u64 proven_services;
	__u64 proven_ttl;	/* ns a handshake proves its client */
	/* bit n: TCP service n answers SYNs with SYN cookies (synproxy.h) */
	__u64 synproxy_services;
	/* bit n: TCP service n answers with SYN cookies the SYNs its shared
	 * new-connection limits refuse (synproxy.h, synProxy: auto) */
	__u64 synproxy_auto;
	/* SYN-ACKs the proxy sends to one source (its client key, client_bits):
	 * the bound on what a SYN flood spoofing a victim reflects at it */
	struct ag_limit synproxy_answers;
};

/* Addresses are 16 bytes everywhere; IPv4 is stored v4-mapped (addr.h). */
struct ag_client_key {
	__u8 addr[16];
	__u32 service;
	__u32 _pad;
};

struct ag_lpm4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct ag_lpm6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* The verdict a packet gathers on its way through the pipeline. A stage that
 * decides sets action and reason (and may name an event); the single exit,
 * record() in apiguard.c, turns a monitored drop into a pass, counts it and
 * emits the event. */
struct verdict {
	__u64 count;		/* for limit events: the client's drops so far; else 1 */
	__u64 now;		/* the precise clock, when a stage read it; else 0 */
	__u32 service;
	__u8 action;		/* enum ag_action */
	__u8 reason;		/* enum ag_reason */
	__u8 event;		/* enum ag_event_type, 0 for none */
	__u8 monitor;		/* a drop becomes a counted pass */
	__u8 ev_bits;		/* the event names the source masked to this many bits */
	__u8 conn;		/* conntrack.h: a capped service's TCP packet, for the state machine */
	__u8 proof;		/* proof.h: an ACK to a TCP service, which may complete a handshake */
	__u8 synproxy;		/* synproxy.h: SP_SYN, SP_ACK or SP_KCOOKIE */
};

#endif
