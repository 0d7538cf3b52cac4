package loader

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/bench/guardbench"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// What the SYN proxy costs per packet, in one run beside what it replaces:
// a flood SYN answered with a cookie against a flood SYN dropped by its
// service's total (the path a spoofed flood takes without the proxy), and a
// handshake ACK with a valid cookie against a known client's packet (its
// state cached). Every case runs the real XDP guard from the benchmark
// object (test/bench/guardbench), which starts each run from a fresh copy of
// the frame, against a baseline making the same copy: the ratios that matter
// are between the cases' deltas over that baseline. In a namespace with a
// listener on the proxied port and an established connection to it, as the
// socket lookups need.

const (
	spBenchFlooded    = 8082 // no proxy, a total connection limit long used up
	spBenchAckFlooded = 8083 // proxied, a total packet limit long used up
)

func synProxyBenchPolicy() *Policy {
	high := Rate{PerSecond: 1 << 40, Burst: 1 << 40}
	limits := func(s Service) Service {
		s.Proto = ProtoTCP
		s.Client = Limits{Packets: high, Bytes: high, Conns: high}
		s.Prefix = Limits{Packets: high}
		s.Total = Limits{Packets: high, Conns: high}
		return s
	}
	flooded := limits(Service{ID: 3, Name: "flooded", Ports: []PortRange{{spBenchFlooded, spBenchFlooded}}})
	flooded.Total.Conns = Rate{PerSecond: 1, Burst: 1}
	ackFlooded := limits(Service{ID: 4, Name: "ack-flooded", Ports: []PortRange{{spBenchAckFlooded, spBenchAckFlooded}},
		SynProxy: SynProxyAlways})
	ackFlooded.Total.Packets = Rate{PerSecond: 1, Burst: 1}
	// the reflection bound is checked and charged, never reached: the
	// answered SYN keeps its path through every run
	return &Policy{TCPFlagSanity: true, SynProxyAnswers: high, Services: []Service{
		limits(Service{ID: 1, Name: "api", Ports: []PortRange{{spPort, spPort}}, SynProxy: SynProxyAlways}),
		limits(Service{ID: 2, Name: "twin", Ports: []PortRange{{spPlainPort, spPlainPort}}}),
		flooded, ackFlooded,
	}}
}

type spBenchCase struct {
	name  string
	frame func(key [2]uint64, conn netip.AddrPort, slot uint64) []byte
	want  uint32 // the guard's verdict, checked once before measuring
	tc    bool   // apiguard_synproxy (TC ingress) against its baseline
}

// tcActUnspec: TC_ACT_UNSPEC (-1), as prog.Run returns it
const tcActUnspec = 0xffffffff

func established(_ [2]uint64, conn netip.AddrPort, _ uint64) []byte {
	return packet.Build(packet.Spec{Src: conn.Addr(), Dst: conn.Addr(), Proto: packet.TCP, SrcPort: conn.Port(),
		DstPort: spPort, TCPFlags: packet.ACK, Seq: 5, Ack: 6, TCPOptions: ackOptions(true, 5, 6)})
}

func spBenchCases() []spBenchCase {
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}
	syn := func(port uint16) []byte {
		s := synCase{src: "198.51.100.50", offer: linux}.spec(0x11223344, 99)
		s.DstPort = port
		return packet.Build(s)
	}
	ack := func(port uint16, seq, ack uint32) []byte {
		return packet.Build(packet.Spec{Src: addr("198.51.100.51"), Dst: guarded4, Proto: packet.TCP, SrcPort: 40003,
			DstPort: port, TCPFlags: packet.ACK, Seq: seq, Ack: ack, TCPOptions: ackOptions(true, 5, 6)})
	}
	return []spBenchCase{
		// what a spoofed flood's SYN costs without the proxy
		{name: "syn_dropped_over_total", want: xdpDrop, frame: func([2]uint64, netip.AddrPort, uint64) []byte { return syn(spBenchFlooded) }},
		{name: "syn_answered", want: xdpTX, frame: func([2]uint64, netip.AddrPort, uint64) []byte { return syn(spPort) }},
		// what a known client's segment costs without the proxy
		{name: "known_client_ack", want: xdpPass, frame: func([2]uint64, netip.AddrPort, uint64) []byte { return ack(spPlainPort, 5, 6) }},
		{name: "cookie_ack", want: xdpPass, frame: func(key [2]uint64, _ netip.AddrPort, slot uint64) []byte {
			return ackCase{src: "198.51.100.52", offer: linux}.frame(key, slot)
		}},
		{name: "bad_cookie_ack", want: xdpDrop, frame: func([2]uint64, netip.AddrPort, uint64) []byte { return ack(spPort, 5, 6) }},
		// a forged-ACK flood far over its service's packet total (a
		// listener on its port: only the listener would take them)
		{name: "bad_cookie_ack_over_total", want: xdpDrop, frame: func([2]uint64, netip.AddrPort, uint64) []byte {
			return ack(spBenchAckFlooded, 5, 6)
		}},
		// what the proxy adds to an established connection's segments
		{name: "established_ack", want: xdpPass, frame: established},
		// what the TC program beside the XDP guard adds to them (a hash:
		// no lookup unless the cookie is valid), and to other services'
		{name: "tc_established_ack", tc: true, want: tcActUnspec, frame: established},
		{name: "tc_other_service", tc: true, want: tcActUnspec, frame: func([2]uint64, netip.AddrPort, uint64) []byte { return ack(spPlainPort, 5, 6) }},
	}
}

// spBenchRounds: the cases are measured in turn, round after round, so a
// busy machine weighs on all of them alike; medians over the rounds.
const spBenchRounds = 11

func BenchmarkSynProxy(b *testing.B) {
	s := newSpNetns(b)
	d, key := newSynProxy(b, spHost)
	mustApply(b, d, synProxyBenchPolicy())
	if err := s.ns.Do(func() error {
		var lc net.ListenConfig
		ln, err := lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(netip.IPv6Unspecified(), spBenchAckFlooded).String())
		if err != nil {
			return err
		}
		b.Cleanup(func() { ln.Close() })
		return nil
	}); err != nil {
		b.Fatalf("listen on the flooded proxied port: %v", err)
	}
	cases := spBenchCases()
	progs := make([]*spBench, len(cases))
	frames := make([][]byte, len(cases))
	for i, c := range cases {
		// a cookie stays valid in the slot after its own: over a minute
		frames[i] = c.frame(key, s.conn, coarseNow(b)>>ckSlotShift)
		progs[i] = loadSynProxyBench(b, d, frames[i])
		if c.tc {
			progs[i].Guard, progs[i].Baseline = progs[i].Accept, progs[i].TCBaseline
		}
		var ret uint32
		if err := s.ns.Do(func() (err error) {
			// the first runs create the clients' state and use up the
			// flooded service's burst
			if _, _, err := progs[i].Guard.Benchmark(frames[i], 100, nil); err != nil {
				return err
			}
			ret, err = progs[i].Guard.Run(&ebpf.RunOptions{Data: frames[i]})
			return err
		}); err != nil {
			b.Fatal(err)
		}
		if ret != c.want {
			b.Fatalf("%s: verdict %d, want %d: the case does not take its path", c.name, ret, c.want)
		}
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run-time statistics: %v", err)
	}
	defer stats.Close()
	guard := make([][]time.Duration, len(cases))
	base := make([][]time.Duration, len(cases))
	n := max(b.N/spBenchRounds, 1)
	b.ResetTimer()
	if err := s.ns.Do(func() error {
		for range spBenchRounds {
			for i := range cases {
				bt, err := runTime(progs[i].Baseline, frames[i], n)
				if err != nil {
					return err
				}
				gt, err := runTime(progs[i].Guard, frames[i], n)
				if err != nil {
					return err
				}
				base[i], guard[i] = append(base[i], bt), append(guard[i], gt)
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	delta := map[string]float64{}
	for i, c := range cases {
		g, bl := median(guard[i]), median(base[i])
		delta[c.name] = float64(g.Nanoseconds() - bl.Nanoseconds())
		b.ReportMetric(delta[c.name], c.name+"-delta-ns")
	}
	b.ReportMetric(float64(median(base[0]).Nanoseconds()), "baseline-ns")
	ratio := func(a, over string) float64 { return delta[a] / max(delta[over], 1) }
	b.ReportMetric(ratio("syn_answered", "syn_dropped_over_total"), "answered/dropped")
	b.ReportMetric(ratio("cookie_ack", "known_client_ack"), "cookie-ack/known")
	b.ReportMetric(ratio("bad_cookie_ack_over_total", "bad_cookie_ack"), "forged-over/under-total")
	b.ReportMetric(ratio("established_ack", "known_client_ack"), "established/known")
}

// spBench are the SYN proxy's benchmark programs and the datapath's own
// hand-over program (LoadAlongside leaves out what the shipped object has).
type spBench struct {
	*guardbench.SynProxyPrograms
	Accept *ebpf.Program
}

// loadSynProxyBench loads the benchmark programs with d's constants and maps,
// their runs starting from frame.
func loadSynProxyBench(tb testing.TB, d *Datapath, frame []byte) *spBench {
	tb.Helper()
	progs, err := guardbench.OpenSynProxy(d, frame)
	if err != nil {
		tb.Fatalf("load the benchmark object: %v", err)
	}
	tb.Cleanup(func() { progs.Close() })
	return &spBench{SynProxyPrograms: progs, Accept: d.objs.ApiguardSynproxy}
}
