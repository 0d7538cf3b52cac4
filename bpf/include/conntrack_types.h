/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking's types: a service's connection settings, the flow
 * table's key and entry, and the count words. conntrack.h has the design.
 *
 * Contract: a count word holds a client's (or a service's) connections:
 * established ones in its low 32 bits, half-open ones in its high 32 bits
 * (AG_COUNT_HALF_SHIFT, shared with the loader); all ones marks an entry
 * being deleted. A flow's state changes only by compare-and-swap. */
#ifndef APIGUARD_CONNTRACK_TYPES_H
#define APIGUARD_CONNTRACK_TYPES_H

#include <linux/types.h>
#include "types.h"

#define AG_HALF_ONE (1ULL << AG_COUNT_HALF_SHIFT)	/* one half-open connection */
/* a client count entry being deleted */
#define AG_COUNT_DEAD ((__u64)AG_COUNT_DEAD_HALF << AG_COUNT_HALF_SHIFT | AG_COUNT_DEAD_HALF)
#define AG_DEFAULT_LINGER 10000000000ULL /* ns a closed flow lingers when its service is gone */

enum ag_flow_state {
	AG_FLOW_SYN_SENT = 1,	/* half-open */
	AG_FLOW_SYN_RECV,	/* half-open; seq is the server's ISN */
	AG_FLOW_ESTABLISHED,	/* established */
	AG_FLOW_FIN_WAIT,	/* established: the client sent FIN, the server has not closed */
	AG_FLOW_CLOSED,		/* the server sent FIN or RST */
	AG_FLOW_RESET,		/* the client sent RST; seq is its sequence number */
	AG_FLOW_EXPIRED,	/* idle past its timeout */
	AG_FLOW_DEAD,		/* the sweeper is deleting it */
};

/* Per service and policy slot. A service with neither an ACL nor caps has no
 * entry in use: its bit in ag_config.conn_services is clear. */
struct ag_conn_service {
	__u64 established_timeout;	/* ns without a packet before an established flow is released */
	__u64 half_open_timeout;	/* ns from the SYN before an unfinished handshake is */
	__u64 closed_timeout;		/* ns a closed flow lingers to absorb the teardown */
	__u32 id;
	__u32 client_established;	/* caps; 0 = none */
	__u32 client_half_open;
	__u32 total_established;
	__u32 total_half_open;
	__u8 acl;		/* only sources in the acl trie may reach the service */
	__u8 track;		/* follow connections: the service has caps */
	__u8 monitor;		/* refusals are counted and passed */
	__u8 fail_closed;	/* flow table full: drop new connections (else pass them untracked) */
	__u8 client_bits4;	/* the client count key: the policy's client key lengths */
	__u8 client_bits6;
	__u8 _pad[2];
};

struct ag_flow_key {
	__u8 client[16];
	__u8 server[16];
	__u16 cport;
	__u16 sport;
};

struct ag_flow {
	__u64 deadline;		/* coarse ns: idle deadline; once uncounted, end of the linger */
	__u64 created;
	__u32 state;		/* enum ag_flow_state, changed by CAS only */
	__u32 seq;		/* SYN_RECV: server ISN; RESET: the client's RST sequence */
	__u8 service;		/* whose counts the flow holds */
	__u8 client_bits;	/* prefix length of its client count key (IPv4 as 96 + n) */
	__u8 adopted;		/* picked up from the server's packets, not from a SYN */
	__u8 _pad[5];
};

/* Written into the sweep program's packet buffer for the loader to read back. */
struct ag_sweep {
	__u64 now;
	__u32 walked;
	__u32 expired;
	__u32 deleted;
	__u32 slot;
	struct ag_client_key ck;	/* scratch */
};

/* The state machines' working memory, per CPU (conntrack_map.h ct_scratch):
 * the ingress guard's stack is nearly full (512 bytes for the whole call
 * chain), and XDP and TC ingress never nest on one CPU. */
struct ct_work {
	struct ag_flow_key key;
	struct ag_flow init;
	struct ag_client_key ck;
};

#endif
