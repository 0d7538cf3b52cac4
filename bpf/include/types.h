/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Types shared between the datapath and Go. bpf2go generates the Go side with
 * -type, so nothing here is mirrored by hand: change a struct, run make generate. */
#ifndef APIGUARD_TYPES_H
#define APIGUARD_TYPES_H

#include <linux/types.h>

#define AG_MAX_SERVICES 64	/* service ids 1..63; 0 means "no service" */
#define AG_PORT_SLOT (2 * 65536) /* tcp and udp port tables per policy slot */

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
	AG_R_MAX,
};

/* Datapath health counters that are not packet verdicts. */
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

/* Values of the allow/deny tries. */
enum ag_list {
	AG_LIST_ALLOW = 1,
	AG_LIST_DENY = 2,
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

/* Policy-wide settings; two copies, one per policy slot. */
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
	 * limit that clients with a proven handshake skip */
	__u64 proven_services;
	__u64 proven_ttl;	/* ns a handshake proves its client */
};

/* Addresses are 16 bytes everywhere; IPv4 is stored v4-mapped (::ffff:a.b.c.d). */
struct ag_client_key {
	__u8 addr[16];
	__u32 service;
	__u32 _pad;
};

struct ag_client_state {
	__u64 tat[AG_KIND_MAX];	/* GCRA theoretical arrival times, ns */
	__u64 packets;
	__u64 bytes;
	__u64 drops;
	__u64 first_seen;	/* ns, CLOCK_MONOTONIC */
	__u64 last_seen;
};

struct ag_service_state {
	__u64 tat[AG_KIND_MAX];
};

struct ag_lpm4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct ag_lpm6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct ag_ban {
	__u64 expires;		/* ns, CLOCK_MONOTONIC; 0 = never */
	__u32 reason;		/* opaque to the kernel: who or what made the ban */
	__u32 prefixlen;	/* the entry's own length: an expired ban gives way to a wider one */
};

struct ag_counter {
	__u64 packets;
	__u64 bytes;
};

struct ag_event {
	__u64 ts;		/* ns, CLOCK_MONOTONIC */
	__u8 addr[16];
	__u64 count;		/* for limit events: the client's drops so far; else 1 */
	__u32 service;
	__u16 dport;
	__u8 type;		/* enum ag_event_type */
	__u8 reason;		/* enum ag_reason */
	__u8 family;		/* 4 or 6 */
	__u8 proto;		/* IPPROTO_* */
	__u8 tcp_flags;
	__u8 action;		/* enum ag_action */
	__u8 _pad[4];
};

#endif
