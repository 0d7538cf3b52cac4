// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Benchmarks of the SYN proxy through the real guard, not shipped: it is
 * built from apiguard.c itself and loaded beside the datapath, sharing its
 * maps (test/bench/synproxy). BPF_PROG_TEST_RUN reuses one buffer and the
 * proxy rewrites it (a SYN becomes its SYN-ACK), so every run first puts the
 * frame back; the baseline puts it back the same way and passes. */
#include "apiguard.c"

#define BENCH_FRAME_MAX 256

/* The frame every run starts from, set before load. */
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

/* apiguard_xdp on a fresh copy of the frame. */
SEC("xdp")
int bench_guard(struct xdp_md *ctx)
{
	if (bench_restore(ctx))
		return XDP_ABORTED;
	return apiguard_xdp(ctx);
}

/* The baseline: the same copy, then XDP_PASS. */
SEC("xdp")
int bench_base(struct xdp_md *ctx)
{
	if (bench_restore(ctx))
		return XDP_ABORTED;
	return XDP_PASS;
}

/* The baseline of apiguard_synproxy (TC ingress): it rewrites nothing, so
 * its runs need no copy. */
SEC("tc")
int bench_tc_base(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}
