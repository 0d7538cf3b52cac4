package loader

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/bench/guardbench"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The datapath's per-packet cost in isolation (BPF_PROG_TEST_RUN). The
// programs come from the benchmark object (test/bench/guardbench), which
// includes bpf/apiguard.c and is loaded beside the datapath on its maps:
// prog.Run reuses one buffer, so each run redraws the low 24 bits of the
// source address (bpf_get_prandom_u32) and the client maps see many clients;
// the trivial baseline program pays the same draw.
// Every case measures baseline and guard back to back, several rounds, and
// reports medians: ns/pkt, baseline-ns/pkt, delta-ns (the guard's own cost)
// and ratio. Times come from the kernel's per-program run-time statistics
// (BPF_ENABLE_STATS), which count only time inside the program: a benchmark
// thread descheduled by other work on the machine does not inflate them. The
// statistics' own clock reads cost the same for both programs and cancel in
// the delta.

const benchRounds = 5

// benchPolicy has 1,000 allow and 1,000 deny prefixes outside 10.0.0.0/8 and a
// service whose limits no benchmark client reaches.
func benchPolicy() *Policy {
	rng := rand.New(rand.NewPCG(1, 2))
	p := &Policy{TCPFlagSanity: true}
	randPrefix := func(first byte) netip.Prefix {
		a := [4]byte{first, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
		return netip.PrefixFrom(netip.AddrFrom4(a), 16+rng.IntN(17)).Masked()
	}
	for i := 0; i < 1000; i++ {
		p.Allow = append(p.Allow, randPrefix(byte(100+rng.IntN(20))))
		p.Deny = append(p.Deny, randPrefix(byte(150+rng.IntN(20))))
	}
	high := Rate{PerSecond: 1 << 40, Burst: 1 << 40}
	p.Services = []Service{
		{ID: 1, Name: "api", Proto: ProtoUDP, Ports: []PortRange{{9000, 9000}},
			Client: Limits{Packets: high, Bytes: high}, Prefix: Limits{Packets: high}, Total: Limits{Packets: high}},
		{ID: 2, Name: "flooded", Proto: ProtoUDP, Ports: []PortRange{{9001, 9001}},
			Client: Limits{Packets: Rate{PerSecond: 1, Burst: 1}}},
		// the live benchmark's 64k-source case: every client under its own
		// limit, all of them together far over the service total
		{ID: 3, Name: "total", Proto: ProtoUDP, Ports: []PortRange{{9002, 9002}},
			Client: Limits{Packets: Rate{PerSecond: 1000, Burst: 100}},
			Total:  Limits{Packets: Rate{PerSecond: 100000, Burst: 1000}}},
		// the live benchmark's legitimate case: per-client counters, no limit
		{ID: 4, Name: "unlimited", Proto: ProtoUDP, Ports: []PortRange{{9003, 9003}}},
	}
	return p
}

type benchCase struct {
	name     string
	cycle    uint32 // distinct clients drawn per packet; 0 = one client
	capacity uint32
	deny     bool
	spec     packet.Spec
	warm     int // packets to run before measuring, so the clients exist
}

func benchCases() []benchCase {
	known := udp("10.0.0.1", 9000, 64)
	return []benchCase{
		{name: "deny_hit", cycle: 1 << 16, deny: true, spec: known},
		{name: "no_service", cycle: 1 << 16, spec: udp("10.0.0.1", 7, 64)},
		{name: "known_client", cycle: 1 << 16, spec: known, warm: 2_000_000},
		// one client, its state in cache: the datapath's own work on the pass path
		{name: "known_client_cached", spec: known, warm: 1000},
		// 16M sources through a 128k LRU: nearly every packet is a new client
		{name: "new_client", cycle: 1 << 24, spec: known, warm: 500_000},
		{name: "one_source_over_limit", spec: udp("10.0.0.1", 9001, 64), warm: 1000},
		{name: "1k_clients_no_limits", cycle: 1 << 10, spec: udp("10.0.0.1", 9003, 64), warm: 100_000},
		{name: "64k_sources_over_total", cycle: 1 << 16, spec: udp("10.0.0.1", 9002, 64), warm: 2_000_000},
	}
}

func BenchmarkDatapath(b *testing.B) {
	for _, c := range benchCases() {
		b.Run(c.name, func(b *testing.B) {
			d := newDatapath(b, Options{ClientCapacity: c.capacity})
			p := benchPolicy()
			if c.deny {
				p.Deny = append(p.Deny, netip.MustParsePrefix("10.0.0.0/8"))
			}
			mustApply(b, d, p)
			pr := benchPrograms(b, d, c.cycle)
			benchAgainstBaseline(b, pr.Baseline, pr.Guard, packet.Build(c.spec), c.warm)
		})
	}
}

// runTime runs prog n times and returns the kernel's mean time per run.
func runTime(prog *ebpf.Program, frame []byte, n int) (time.Duration, error) {
	before, err := prog.Stats()
	if err != nil {
		return 0, err
	}
	if _, _, err := prog.Benchmark(frame, n, nil); err != nil {
		return 0, err
	}
	after, err := prog.Stats()
	if err != nil {
		return 0, err
	}
	runs := after.RunCount - before.RunCount
	if runs == 0 {
		return 0, errors.New("no runs counted: are BPF statistics enabled?")
	}
	return (after.Runtime - before.Runtime) / time.Duration(runs), nil
}

// benchPrograms loads the benchmark programs beside d, drawing each run's
// source from sources values (0: the frame's own).
func benchPrograms(tb testing.TB, d *Datapath, sources uint32) *guardbench.Programs {
	tb.Helper()
	pr, err := guardbench.Open(d, sources)
	if err != nil {
		tb.Fatalf("load the benchmark programs: %v", err)
	}
	tb.Cleanup(func() { pr.Close() })
	return pr
}

// The platform's share: what one random access to per-source state costs on
// this machine, measured with the simplest possible program (u32 key, u64
// value, one LRU lookup and an increment) against the same baseline, over 64k
// sources like known_client.
func BenchmarkCalibrationNaiveBucket(b *testing.B) {
	calibrate(b, 1<<16, func(pr *guardbench.Programs) *ebpf.Program { return pr.NaiveBucket }, 2_000_000)
}

// What a new client cannot do without: one insert into an LRU of the client
// table's kind, key and value, with 16M sources like new_client (nearly every
// insert evicts).
func BenchmarkCalibrationLRUInsert(b *testing.B) {
	calibrate(b, 1<<24, func(pr *guardbench.Programs) *ebpf.Program { return pr.LRUInsert }, 500_000)
}

// The other platform share: one read of the precise clock (bpf_ktime_get_ns).
func BenchmarkCalibrationClock(b *testing.B) {
	calibrate(b, 1<<16, func(pr *guardbench.Programs) *ebpf.Program { return pr.Clock }, 0)
}

// How far the coarse clock (bpf_ktime_get_coarse_ns) lags the precise one
// inside a BPF program: the premise of any "coarse clock for limits" scheme,
// which needs the lag bounded (docs/datapath.md, "Why the limits read the
// precise clock"). Each iteration is one run of a program that reads the
// precise clock, then the coarse one, and returns the difference (a lower
// bound of the lag at the coarse read). Reports the quantiles in ticks
// (clock_getres(CLOCK_MONOTONIC_COARSE)) and how often the coarse clock lagged
// more than a tick; meaningful from -benchtime 1000000x on.
func BenchmarkCoarseClockLag(b *testing.B) {
	const ahead = 0xffffffff
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "coarse_lag",
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.FnKtimeGetNs.Call(),
			asm.Mov.Reg(asm.R6, asm.R0),
			asm.FnKtimeGetCoarseNs.Call(),
			// an update between the two reads: no lag to report
			asm.JGT.Reg(asm.R0, asm.R6, "ahead"),
			asm.Sub.Reg(asm.R6, asm.R0),
			asm.Mov.Reg(asm.R0, asm.R6),
			asm.Return(),
			asm.Mov.Imm32(asm.R0, -1).WithSymbol("ahead"),
			asm.Return(),
		},
	})
	if err != nil {
		b.Fatalf("load the clock probe: %v", err)
	}
	defer prog.Close()
	var res unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_MONOTONIC_COARSE, &res); err != nil {
		b.Fatalf("coarse clock resolution: %v", err)
	}
	tick := float64(res.Nano())
	frame := packet.Build(udp("10.0.0.1", 9000, 64))
	lags := make([]float64, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ret, err := prog.Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			b.Fatal(err)
		}
		if ret != ahead {
			lags = append(lags, float64(ret)/tick)
		}
	}
	b.StopTimer()
	if len(lags) == 0 {
		return
	}
	sort.Float64s(lags)
	over := sort.SearchFloat64s(lags, 1.0)
	q := func(f float64) float64 { return lags[min(int(f*float64(len(lags))), len(lags)-1)] }
	b.ReportMetric(q(0), "min-ticks")
	b.ReportMetric(q(0.5), "p50-ticks")
	b.ReportMetric(q(0.999), "p99.9-ticks")
	b.ReportMetric(lags[len(lags)-1], "max-ticks")
	b.ReportMetric(float64(len(lags)-over)/float64(len(lags)), "share-over-1-tick")
	b.ReportMetric(tick, "tick-ns")
}

// calibrate measures a calibration program against the baseline with the same
// source draw.
func calibrate(b *testing.B, sources uint32, prog func(*guardbench.Programs) *ebpf.Program, warm int) {
	pr := benchPrograms(b, newDatapath(b, Options{}), sources)
	benchAgainstBaseline(b, pr.Baseline, prog(pr), packet.Build(udp("10.0.0.1", 9000, 64)), warm)
}

// benchAgainstBaseline measures prog and baseline back to back, benchRounds
// rounds, medians of the kernel's run-time statistics.
func benchAgainstBaseline(b *testing.B, baseline, prog *ebpf.Program, frame []byte, warm int) {
	if warm > 0 {
		if _, _, err := prog.Benchmark(frame, warm, nil); err != nil {
			b.Fatal(err)
		}
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run-time statistics: %v", err)
	}
	defer stats.Close()
	var guard, base []time.Duration
	n := max(b.N/benchRounds, 1)
	b.ResetTimer()
	for r := 0; r < benchRounds; r++ {
		bt, err := runTime(baseline, frame, n)
		if err != nil {
			b.Fatal(err)
		}
		gt, err := runTime(prog, frame, n)
		if err != nil {
			b.Fatal(err)
		}
		base, guard = append(base, bt), append(guard, gt)
	}
	b.StopTimer()
	g, bl := median(guard), median(base)
	b.ReportMetric(float64(g.Nanoseconds()), "ns/pkt")
	b.ReportMetric(float64(bl.Nanoseconds()), "baseline-ns/pkt")
	b.ReportMetric(float64(g.Nanoseconds()-bl.Nanoseconds()), "delta-ns")
	b.ReportMetric(float64(g)/float64(max(bl, 1)), "ratio")
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// The issue-15 targets as ratios measured in the same rounds: the datapath's
// case and its calibration alternate with the baseline, so the other tenants'
// use of the shared cache weighs on both alike. known_vs_naive: a known client
// among 64k against the naive bucket over the same 64k sources (target ≤ 2);
// new_vs_lru_insert: a new client among 16M against one bare insert into an
// LRU of the client table's kind (target ≤ 2).
func BenchmarkAgainstCalibration(b *testing.B) {
	for _, c := range []struct {
		name  string
		cycle uint32
		calib func(*guardbench.Programs) *ebpf.Program
		warm  int
	}{
		{"known_vs_naive", 1 << 16, func(pr *guardbench.Programs) *ebpf.Program { return pr.NaiveBucket }, 2_000_000},
		{"new_vs_lru_insert", 1 << 24, func(pr *guardbench.Programs) *ebpf.Program { return pr.LRUInsert }, 500_000},
	} {
		b.Run(c.name, func(b *testing.B) {
			d := newDatapath(b, Options{})
			mustApply(b, d, benchPolicy())
			pr := benchPrograms(b, d, c.cycle)
			frame := packet.Build(udp("10.0.0.1", 9000, 64))
			calib := c.calib(pr)
			for _, p := range []*ebpf.Program{pr.Guard, calib} {
				if _, _, err := p.Benchmark(frame, c.warm, nil); err != nil {
					b.Fatal(err)
				}
			}
			stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
			if err != nil {
				b.Fatalf("enable BPF run-time statistics: %v", err)
			}
			defer stats.Close()
			var guard, cal []time.Duration
			n := max(b.N/benchRounds, 1)
			b.ResetTimer()
			for r := 0; r < benchRounds; r++ {
				var t [3]time.Duration
				for i, p := range []*ebpf.Program{pr.Baseline, pr.Guard, calib} {
					if t[i], err = runTime(p, frame, n); err != nil {
						b.Fatal(err)
					}
				}
				guard, cal = append(guard, t[1]-t[0]), append(cal, t[2]-t[0])
			}
			b.StopTimer()
			g, k := median(guard), median(cal)
			b.ReportMetric(float64(g.Nanoseconds()), "delta-ns")
			b.ReportMetric(float64(k.Nanoseconds()), "calib-delta-ns")
			b.ReportMetric(float64(g)/float64(max(k, 1)), "ratio")
		})
	}
}
