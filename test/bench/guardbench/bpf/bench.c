// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The datapath's benchmark object: bpf/apiguard.c itself, included whole, with
 * the benchmark programs beside it. What ships (loader/guard_bpfel.o) has none
 * of them; what is measured here is the very code that ships, compiled again.
 *
 * prog.Run reuses one buffer, so every program here first gives the frame a
 * new source: its low 24 bits drawn at random over `sources` values (one
 * source when it is 0 or 1), written into the frame before anything reads it.
 * The baseline pays exactly that draw and returns XDP_PASS; the calibrations
 * pay it too and then do the least a datapath could do per source.
 *
 * The SYN proxy's programs (bench_sp_*) start instead from a fresh copy of one
 * frame: the proxy rewrites the buffer (a SYN becomes its SYN-ACK). */
#include "../../../../bpf/apiguard.c"

#include <stddef.h>

volatile const __u32 sources;

/* The drawn source (its low 24 bits), written into an IPv4 or IPv6 frame
 * without VLAN tags; other frames keep theirs. */
static __always_inline __u32 draw_source(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 *low;
	__u32 i;

	if (sources <= 1)
		return 0;
	i = bpf_get_prandom_u32() % sources;
	if ((void *)(eth + 1) > data_end)
		return i;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		low = data + sizeof(*eth) + offsetof(struct iphdr, saddr) + 1;
	else if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		low = data + sizeof(*eth) + offsetof(struct ipv6hdr, saddr) + 13;
	else
		return i;
	if ((void *)(low + 3) > data_end)
		return i;
	low[0] = i >> 16;
	low[1] = i >> 8;
	low[2] = i;
	return i;
}

/* The XDP guard, each run from a drawn source. */
SEC("xdp")
int bench_guard(struct xdp_md *ctx)
{
	draw_source(ctx);
	return xdp_guard(ctx);
}

/* What every figure is measured against: the draw, and XDP_PASS. */
SEC("xdp")
int bench_baseline(struct xdp_md *ctx)
{
	draw_source(ctx);
	return XDP_PASS;
}

/* Calibration: the simplest per-source state there is (u32 key, u64 value,
 * one LRU lookup and an increment, an insert when the source is new). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1 << 17);
} calib_naive SEC(".maps");

SEC("xdp")
int calib_naive_bucket(struct xdp_md *ctx)
{
	__u32 src = draw_source(ctx);
	__u64 *v = bpf_map_lookup_elem(&calib_naive, &src), one = 1;

	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&calib_naive, &src, &one, BPF_NOEXIST);
	return XDP_PASS;
}

/* Calibration: one insert into an LRU of the client table's kind and size,
 * nothing else (with many sources, nearly every one evicts). The key and
 * value are the client table's, so the copy and hash cost what a new client's
 * insert costs. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ag_client_key);
	__type(value, struct ag_client_state);
	__uint(max_entries, 1 << 17);
} calib_lru SEC(".maps");

SEC("xdp")
int calib_lru_insert(struct xdp_md *ctx)
{
	struct ag_client_key k = {};
	struct ag_client_state init = {};
	__u32 src = draw_source(ctx);

	__builtin_memcpy(&k.addr[12], &src, 4);
	k.service = 1;
	init.packets = 1;
	bpf_map_update_elem(&calib_lru, &k, &init, BPF_NOEXIST);
	return XDP_PASS;
}

/* Calibration: one read of the precise clock. The result is kept live (it
 * decides the verdict) so the compiler cannot drop the read. */
SEC("xdp")
int calib_clock(struct xdp_md *ctx)
{
	__u32 src = draw_source(ctx);

	return bpf_ktime_get_ns() + src == 0 ? XDP_DROP : XDP_PASS;
}

/* The SYN proxy's runs. The frame every run starts from, set before load. */
#define BENCH_FRAME_MAX 256

volatile const __u32 bench_len;
volatile const __u8 bench_frame[BENCH_FRAME_MAX];

static __always_inline int bench_restore(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 len = bench_len;
	long cur = data_end - data;

	if (!len || len > BENCH_FRAME_MAX)
		return -1;
	/* a scalar before the arithmetic (see synproxy.h sp_answer) */
	asm volatile("" : "+r"(cur));
	if (bpf_xdp_adjust_tail(ctx, (int)len - cur))
		return -1;
	return bpf_xdp_store_bytes(ctx, 0, (void *)bench_frame, len);
}

/* The XDP guard on a fresh copy of the frame. */
SEC("xdp")
int bench_sp_guard(struct xdp_md *ctx)
{
	if (bench_restore(ctx))
		return XDP_ABORTED;
	return xdp_guard(ctx);
}

/* Its baseline: the same copy, then XDP_PASS. */
SEC("xdp")
int bench_sp_base(struct xdp_md *ctx)
{
	if (bench_restore(ctx))
		return XDP_ABORTED;
	return XDP_PASS;
}

/* The baseline of apiguard_synproxy (TC ingress): it rewrites nothing, so
 * its runs need no copy. */
SEC("tc")
int bench_sp_tc_base(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}
