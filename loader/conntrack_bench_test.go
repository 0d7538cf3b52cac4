package loader

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/bench/guardbench"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
)

// Connection tracking's per-packet cost, measured like BenchmarkDatapath:
// baseline and guard back to back, several rounds, medians. Each case runs a
// packet to a service with connection caps ("tracked") and the same packet to
// the same service without caps ("untracked"), so tracked-untracked is what
// following connections adds. docs/conntrack.md has the figures.

// connBenchPolicy: tcp 8443 with caps no benchmark reaches, tcp 8080 without,
// tcp 9443 with an ACL of 1,000 prefixes and 10.0.0.0/8, all with the high
// limits of benchPolicy's service 1 (so the guard does the same limiter work
// on each).
func connBenchPolicy() *Policy {
	p := benchPolicy()
	high := Rate{PerSecond: 1 << 40, Burst: 1 << 40}
	lim := Limits{Packets: high, Bytes: high}
	acl := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for i := 0; i < 1000; i++ {
		acl = append(acl, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(i >> 8), byte(i), 0}), 24))
	}
	// ids after benchPolicy's own, however many it has
	id := uint32(len(p.Services))
	p.Services = append(p.Services,
		Service{ID: id + 1, Name: "tracked", Proto: ProtoTCP, Ports: []PortRange{{8443, 8443}}, Client: lim,
			MaxConns: ConnLimits{ClientEstablished: 1 << 30, TotalEstablished: 1 << 30}},
		Service{ID: id + 2, Name: "untracked", Proto: ProtoTCP, Ports: []PortRange{{8080, 8080}}, Client: lim},
		Service{ID: id + 3, Name: "acl", Proto: ProtoTCP, Ports: []PortRange{{9443, 9443}}, Client: lim, ACL: acl})
	return p
}

type progTimes struct {
	base, guard []time.Duration
}

func (pt *progTimes) report(b *testing.B, name string) time.Duration {
	g, bl := median(pt.guard), median(pt.base)
	b.ReportMetric(float64(g.Nanoseconds()), name+"-ns/pkt")
	return g - bl
}

// benchPair measures the benchmark guard on frame against the baseline,
// rounds times n packets, calling before (untimed) ahead of each guard round.
func benchPair(b *testing.B, pr *guardbench.Programs, frame []byte, n int, before func()) progTimes {
	var pt progTimes
	for r := 0; r < benchRounds; r++ {
		_, bt, err := pr.Baseline.Benchmark(frame, n, nil)
		if err != nil {
			b.Fatal(err)
		}
		if before != nil {
			b.StopTimer()
			before()
			b.StartTimer()
		}
		_, gt, err := pr.Guard.Benchmark(frame, n, nil)
		if err != nil {
			b.Fatal(err)
		}
		pt.base, pt.guard = append(pt.base, bt), append(pt.guard, gt)
	}
	return pt
}

// BenchmarkConntrack reports, per case, tracked-ns/pkt and untracked-ns/pkt,
// baseline-ns/pkt, delta-ns (tracked against the baseline) and conntrack-ns
// (tracked against untracked).
func BenchmarkConntrack(b *testing.B) {
	b.Run("established_packet", func(b *testing.B) {
		d := newDatapath(b, Options{})
		mustApply(b, d, connBenchPolicy())
		c := newConn("10.0.0.1", 8443)
		for _, step := range []struct {
			egress bool
			frame  []byte
		}{{false, c.in(fSYN, 100, 0)}, {true, c.out(fSYNACK, 5000, 101)}, {false, c.in(fACK, 101, 5001)}} {
			if step.egress {
				runEgress(b, d, step.frame)
			} else {
				runXDP(b, d, step.frame)
			}
		}
		if f := flowOf(b, d, c); f.State != stEst {
			b.Fatalf("flow %v, want established", f.State)
		}
		pr := benchPrograms(b, d, 0)
		n := max(b.N/benchRounds, 1)
		b.ResetTimer()
		tracked := benchPair(b, pr, c.in(fPSH, 101, 5001), n, nil)
		untracked := benchPair(b, pr, newConn("10.0.0.1", 8080).in(fPSH, 101, 5001), n, nil)
		b.StopTimer()
		reportConn(b, tracked, untracked)
		if f := flowOf(b, d, c); f.State != stEst {
			b.Fatalf("flow %v after the benchmark, want established", f.State)
		}
	})

	// A packet from inside a service's ACL, against the same service without one.
	b.Run("acl_inside", func(b *testing.B) {
		d := newDatapath(b, Options{})
		mustApply(b, d, connBenchPolicy())
		pr := benchPrograms(b, d, 0)
		n := max(b.N/benchRounds, 1)
		b.ResetTimer()
		withACL := benchPair(b, pr, newConn("10.0.0.1", 9443).in(fPSH, 1, 1), n, nil)
		without := benchPair(b, pr, newConn("10.0.0.1", 8080).in(fPSH, 1, 1), n, nil)
		b.StopTimer()
		reportConn(b, withACL, without)
	})

	// Every SYN from a new source (16M drawn): a new client, a new flow. The
	// tables are emptied before each round, untimed, so no round fills them.
	b.Run("new_syn", func(b *testing.B) {
		const batch = 100_000
		d := newDatapath(b, Options{FlowCapacity: 4 * batch})
		mustApply(b, d, connBenchPolicy())
		pr := benchPrograms(b, d, 1<<24)
		n := min(max(b.N/benchRounds, 1), batch)
		reset := func() { clearFlowTables(b, d) }
		b.ResetTimer()
		tracked := benchPair(b, pr, newConn("10.0.0.1", 8443).in(fSYN, 100, 0), n, reset)
		untracked := benchPair(b, pr, newConn("10.0.0.1", 8080).in(fSYN, 100, 0), n, nil)
		b.StopTimer()
		reportConn(b, tracked, untracked)
		st, err := d.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if st.FlowTableFull != 0 || st.FlowsNew < uint64(n) {
			b.Fatalf("stats %+v: the SYNs did not each make a flow", st)
		}
	})

	// The egress program on the server's packet of an established flow,
	// against the same packet when no service has caps (the program then
	// stops after reading the policy slot): TC test runs cost more than XDP
	// ones, so the XDP baseline does not apply here.
	b.Run("egress_established", func(b *testing.B) {
		d := newDatapath(b, Options{})
		mustApply(b, d, connBenchPolicy())
		c := newConn("10.0.0.1", 8443)
		runXDP(b, d, c.in(fSYN, 100, 0))
		runEgress(b, d, c.out(fSYNACK, 5000, 101))
		runXDP(b, d, c.in(fACK, 101, 5001))
		frame := c.out(fPSH, 5001, 101)
		n := max(b.N/benchRounds, 1)
		b.ResetTimer()
		var tracked, idle []time.Duration
		for r := 0; r < benchRounds; r++ {
			_, t, err := d.Egress().Benchmark(frame, n, nil)
			if err != nil {
				b.Fatal(err)
			}
			tracked = append(tracked, t)
		}
		b.StopTimer()
		mustApply(b, d, benchPolicy()) // no caps anywhere
		b.StartTimer()
		for r := 0; r < benchRounds; r++ {
			_, t, err := d.Egress().Benchmark(frame, n, nil)
			if err != nil {
				b.Fatal(err)
			}
			idle = append(idle, t)
		}
		b.StopTimer()
		tr, id := median(tracked), median(idle)
		b.ReportMetric(float64(tr.Nanoseconds()), "tracked-ns/pkt")
		b.ReportMetric(float64(id.Nanoseconds()), "no-caps-ns/pkt")
		b.ReportMetric(float64(tr.Nanoseconds()-id.Nanoseconds()), "conntrack-ns")
	})
}

// What proven clients cost: the egress program on a server segment with data
// to a proven client (payload length, a port lookup and an LRU lookup; the
// entry is rewritten at most once a second), and a proven client's SYN (one
// more LRU lookup, a charge on the total), each against the same packet with
// provenClientTTL 0. TC and XDP test runs.
func BenchmarkProvenClients(b *testing.B) {
	policy := func(ttl time.Duration) *Policy {
		high := Rate{PerSecond: 1 << 40, Burst: 1 << 40}
		return &Policy{ProvenTTL: ttl, Services: []Service{{ID: 1, Name: "web", Proto: ProtoTCP,
			Ports: []PortRange{{80, 80}}, Client: Limits{Conns: high}, Total: Limits{Conns: high}}}}
	}
	c := newConn("10.0.0.1", 80)
	for _, k := range []struct {
		name  string
		prog  func(d *Datapath) *ebpf.Program
		frame []byte
	}{
		{"egress_data", (*Datapath).Egress, serverSays(c, packet.ACK|packet.PSH, 100)},
		{"ingress_syn", (*Datapath).XDP, c.in(fSYN, 100, 0)},
	} {
		b.Run(k.name, func(b *testing.B) {
			n := max(b.N/benchRounds/2, 1)
			var on, off []time.Duration
			for _, ttl := range []time.Duration{10 * time.Minute, 0} {
				d := newDatapath(b, Options{})
				mustApply(b, d, policy(ttl))
				runEgress(b, d, serverSays(c, packet.ACK|packet.PSH, 100)) // proves the client when on
				for r := 0; r < benchRounds; r++ {
					_, t, err := k.prog(d).Benchmark(k.frame, n, nil)
					if err != nil {
						b.Fatal(err)
					}
					if ttl > 0 {
						on = append(on, t)
					} else {
						off = append(off, t)
					}
				}
			}
			pr, of := median(on), median(off)
			b.ReportMetric(float64(pr.Nanoseconds()), "proven-ns/pkt")
			b.ReportMetric(float64(of.Nanoseconds()), "off-ns/pkt")
			b.ReportMetric(float64(pr.Nanoseconds()-of.Nanoseconds()), "proven-cost-ns")
		})
	}
}

// What proving sources (proof.h) costs, each case against the same packet
// with the proof off (ProveSources), the two datapaths round by round in the
// same run:
//
//   - egress_plain_service: the egress program on a server segment with data
//     to a client of a TCP service without limits or caps. With the proof it
//     parses the segment, looks the port up, the handshake table is not
//     touched (no SYN-ACK) and the source is looked up in the LRU (written at
//     most once a second); without it, the program stops after reading the
//     policy slot: the ratio is what the proof adds to every server segment of
//     a host whose services have no caps.
//   - egress_capped_service: the same on a capped service, whose segments
//     conntrack parses anyway.
//   - ingress_ack: the XDP guard on a client's data segment (with ACK) to a TCP
//     service: the handshake check reads one slot of the handshake table.
//   - egress_synack: the egress program on a SYN-ACK, which writes one.
func BenchmarkSourceProof(b *testing.B) {
	c := newConn("10.0.0.1", 80)
	for _, k := range []struct {
		name   string
		policy func(on bool) *Policy
		prog   func(d *Datapath) *ebpf.Program
		frame  []byte
	}{
		{"egress_plain_service", func(on bool) *Policy { return proofPolicy(on, 0, 0) }, (*Datapath).Egress,
			serverSays(c, packet.ACK|packet.PSH, 100)},
		{"egress_capped_service", func(on bool) *Policy {
			p := proofPolicy(on, 0, 0)
			p.Services[0].MaxConns = ConnLimits{ClientEstablished: 1 << 30, TotalEstablished: 1 << 30}
			return p
		}, (*Datapath).Egress, serverSays(c, packet.ACK|packet.PSH, 100)},
		{"ingress_ack", func(on bool) *Policy { return proofPolicy(on, 0, 0) }, (*Datapath).XDP,
			packet.Build(packet.Spec{Src: c.client, Dst: c.server(), Proto: packet.TCP, SrcPort: c.cport, DstPort: c.sport,
				TCPFlags: packet.ACK | packet.PSH, Seq: 101, Ack: 5001, Payload: 100})},
		{"egress_synack", func(on bool) *Policy { return proofPolicy(on, 0, 0) }, (*Datapath).Egress, c.out(fSYNACK, 5000, 101)},
	} {
		b.Run(k.name, func(b *testing.B) {
			n := max(b.N/benchRounds/2, 1)
			var on, off []time.Duration
			dps := map[bool]*Datapath{}
			for _, prove := range []bool{true, false} {
				d := newDatapath(b, Options{})
				mustApply(b, d, k.policy(prove))
				if k.name == "egress_capped_service" { // an established flow, as in Conntrack/egress_established
					runXDP(b, d, c.in(fSYN, 100, 0))
					runEgress(b, d, c.out(fSYNACK, 5000, 101))
					runXDP(b, d, c.in(fACK, 101, 5001))
				}
				runEgress(b, d, serverSays(c, packet.ACK|packet.PSH, 100)) // proves the client when on
				dps[prove] = d
			}
			if _, ok, err := dps[true].SourceProof(netip.MustParsePrefix("10.0.0.1/32")); err != nil || !ok {
				b.Fatalf("the segment did not prove its client (err %v)", err)
			}
			b.ResetTimer()
			for r := 0; r < benchRounds; r++ {
				for _, prove := range []bool{true, false} {
					_, t, err := k.prog(dps[prove]).Benchmark(k.frame, n, nil)
					if err != nil {
						b.Fatal(err)
					}
					if prove {
						on = append(on, t)
					} else {
						off = append(off, t)
					}
				}
			}
			b.StopTimer()
			pr, of := median(on), median(off)
			b.ReportMetric(float64(pr.Nanoseconds()), "proof-ns/pkt")
			b.ReportMetric(float64(of.Nanoseconds()), "off-ns/pkt")
			b.ReportMetric(float64(pr.Nanoseconds()-of.Nanoseconds()), "proof-cost-ns")
			b.ReportMetric(float64(pr)/float64(of), "ratio")
		})
	}
}

func reportConn(b *testing.B, tracked, untracked progTimes) {
	bl := median(append(append([]time.Duration(nil), tracked.base...), untracked.base...))
	tr, un := median(tracked.guard), median(untracked.guard)
	b.ReportMetric(float64(tr.Nanoseconds()), "tracked-ns/pkt")
	b.ReportMetric(float64(un.Nanoseconds()), "untracked-ns/pkt")
	b.ReportMetric(float64(bl.Nanoseconds()), "baseline-ns/pkt")
	b.ReportMetric(float64(tr.Nanoseconds()-bl.Nanoseconds()), "delta-ns")
	b.ReportMetric(float64(tr.Nanoseconds()-un.Nanoseconds()), "conntrack-ns")
}

// clearFlowTables empties the flow table and the client counts, and zeroes the
// service totals: a fresh start for a benchmark round.
func clearFlowTables(tb testing.TB, d *Datapath) {
	tb.Helper()
	if err := deleteAll[GuardAgFlowKey](d.objs.Flows); err != nil {
		tb.Fatal(err)
	}
	if err := deleteAll[GuardAgClientKey](d.objs.ConnClients); err != nil {
		tb.Fatal(err)
	}
	for id := uint32(0); id <= uint32(MaxServices); id++ {
		if err := d.objs.ConnTotals.Update(id, uint64(0), ebpf.UpdateAny); err != nil {
			tb.Fatal(err)
		}
	}
}

func deleteAll[K any](m *ebpf.Map) error {
	var keys []K
	var k K
	var v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return err
	}
	for start := 0; start < len(keys); start += 4096 {
		end := min(start+4096, len(keys))
		if _, err := m.BatchDelete(keys[start:end], nil); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete: %w", err)
		}
	}
	return nil
}

// memlock is the kernel's account of a map's memory (fdinfo "memlock"): for a
// hash map without preallocation, its buckets plus its elements as they are.
func memlock(tb testing.TB, m *ebpf.Map) int64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD()))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "memlock:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no memlock in fdinfo")
	return 0
}

// BenchmarkConntrackMemory reports the kernel memory one followed connection
// costs: its flow entry, and its client's count entry when the client has no
// other connection (the worst case: one connection per client), as the kernel
// accounts them, with the empty tables' buckets left out.
func BenchmarkConntrackMemory(b *testing.B) {
	const flows = 100_000
	d := newDatapath(b, Options{FlowCapacity: 1 << 18})
	mustApply(b, d, connBenchPolicy())
	pr := benchPrograms(b, d, 1<<24)
	emptyFlows, emptyClients := memlock(b, d.objs.Flows), memlock(b, d.objs.ConnClients)
	b.ResetTimer()
	if _, _, err := pr.Guard.Benchmark(newConn("10.0.0.1", 8443).in(fSYN, 100, 0), flows, nil); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	var n int
	if err := d.Flows(func(Flow) error { n++; return nil }); err != nil {
		b.Fatal(err)
	}
	perFlow := float64(memlock(b, d.objs.Flows)-emptyFlows) / float64(n)
	perClient := float64(memlock(b, d.objs.ConnClients)-emptyClients) / float64(n)
	b.ReportMetric(float64(n), "flows")
	b.ReportMetric(perFlow, "flow-B")
	b.ReportMetric(perClient, "client-count-B")
	b.ReportMetric(perFlow+perClient, "B/flow")
	b.ReportMetric(float64(emptyFlows+emptyClients)/float64(1<<18), "empty-tables-B/slot")
}
