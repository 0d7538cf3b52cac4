package trafgen_test

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/bench/trafgen"
	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// pair is a generator namespace and a receiving one, joined by a veth pair.
type pair struct {
	gen, dut *netns.Namespace
	lg, ld   *netns.Link
}

// methods are the generators a test runs, each where the kernel allows it.
var methods = []trafgen.Method{trafgen.LiveFrames, trafgen.Redirect, trafgen.Packet}

// newPair builds the namespaces for a test of method m (Best: any).
func newPair(tb testing.TB, m trafgen.Method) *pair {
	tb.Helper()
	testenv.RequireRoot(tb)
	if m == trafgen.LiveFrames {
		testenv.RequireLiveFrames(tb)
	}
	p := &pair{}
	var err error
	if p.gen, err = netns.New("aggen"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.gen.Close() })
	if p.dut, err = netns.New("agdut"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.dut.Close() })
	if p.lg, p.ld, err = netns.Veth(p.gen, p.dut, 91); err != nil {
		tb.Fatal(err)
	}
	return p
}

// guard loads apiguard on the receiving end with one UDP service on 9000:
// every source that reaches it becomes a client.
func (p *pair) guard(tb testing.TB) *loader.Datapath {
	tb.Helper()
	d, err := loader.Load(loader.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	if _, err := d.Apply(&loader.Policy{Services: []loader.Service{{ID: 1, Name: "udp", Proto: loader.ProtoUDP, Ports: []loader.PortRange{{First: 9000, Last: 9000}}}}}); err != nil {
		tb.Fatal(err)
	}
	if err := p.dut.Do(func() error { _, err := d.Attach(p.ld.Name, loader.AttachNative); return err }); err != nil {
		tb.Fatal(err)
	}
	return d
}

// Each method's frames arrive at the peer with the sources it promised and
// checksums the receiving program accepts (apiguard counts a client per
// source only for frames it parsed as valid UDP to its service).
func TestGeneratorReachesPeer(t *testing.T) {
	for _, m := range methods {
		t.Run(m.String(), func(t *testing.T) {
			p := newPair(t, m)
			d := p.guard(t)
			for _, fam := range []struct{ src, dst netip.Addr }{{p.lg.Addr4, p.ld.Addr4}, {p.lg.Addr6, p.ld.Addr6}} {
				before := clients(t, d)
				frame := packet.Build(packet.Spec{Src: fam.src, Dst: fam.dst, Proto: packet.UDP, SrcPort: 1, DstPort: 9000, Payload: 18})
				g, err := trafgen.Open(p.gen, p.lg.Name, trafgen.Config{Frame: frame, Sources: 500, Method: m})
				if err != nil {
					t.Fatal(err)
				}
				if g.Method() != m {
					t.Fatalf("asked for %v, got %v", m, g.Method())
				}
				// in turn over 500 sources: 5000 frames name each of them 10 times
				if _, err := g.Send(5000); err != nil {
					t.Fatal(err)
				}
				g.Close()
				want := 500
				if got := clients(t, d) - before; got != want {
					t.Errorf("%v: %d new clients seen at the peer, want %d", fam.src, got, want)
				}
			}
		})
	}
}

// Best takes live frames where the kernel allows them, else the redirect
// generator, and says which.
func TestBestMethod(t *testing.T) {
	p := newPair(t, trafgen.Best)
	p.guard(t)
	frame := packet.Build(packet.Spec{Src: p.lg.Addr4, Dst: p.ld.Addr4, Proto: packet.UDP, SrcPort: 1, DstPort: 9000})
	g, err := trafgen.Open(p.gen, p.lg.Name, trafgen.Config{Frame: frame})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	want := trafgen.Redirect
	if trafgen.ProbeLiveFrames() == nil {
		want = trafgen.LiveFrames
	}
	if g.Method() != want {
		t.Errorf("best generator here is %v, want %v (live frames: %v)", g.Method(), want, trafgen.ProbeLiveFrames())
	}
}

func clients(t *testing.T, d *loader.Datapath) int {
	n := 0
	if err := d.Clients(func(loader.Client) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// BenchmarkGenerator measures each method's rate from one core, counted at
// the receiver: a trivial XDP_DROP program on the peer (so the generator, not
// the receiver, is the bottleneck) and the peer's rx_packets. It reports
// received frames per second, the share of offered frames that arrived, the
// offered rate (the sender's own: it runs flat out, and a veth whose peer is
// full drops the frame rather than stop the sender) and the share of the run
// the receiver's NAPI thread was busy: near 0.95, the real-time limit, the
// receiver, not the generator, set rx-pps.
// Run with -benchtime Nx: N seconds of flood per method.
func BenchmarkGenerator(b *testing.B) {
	for _, m := range methods {
		b.Run(m.String(), func(b *testing.B) {
			testenv.RequireCPUs(b, 2)
			p := newPair(b, m)
			prog, err := trafgen.DropProgram()
			if err != nil {
				b.Fatal(err)
			}
			defer prog.Close()
			attachDrop(b, p, prog)
			// the receiver on CPU 1, the generator on CPU 0
			napi, err := p.ld.ThreadedNAPI(1)
			if err != nil {
				b.Fatal(err)
			}
			frame := packet.Build(packet.Spec{Src: p.lg.Addr4, Dst: p.ld.Addr4, Proto: packet.UDP, SrcPort: 1, DstPort: 9000, Payload: 18})
			g, err := trafgen.Open(p.gen, p.lg.Name, trafgen.Config{Frame: frame, Sources: 1 << 16, Random: true, Method: m, Pinned: true, CPU: 0})
			if err != nil {
				b.Fatal(err)
			}
			defer g.Close()
			rx0, busy0 := rxPackets(b, p), napiCPU(b, napi)
			start := time.Now()
			var offered uint64
			b.ResetTimer()
			for range b.N {
				n, err := g.Flood(time.Second, 1<<30)
				offered += n
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			time.Sleep(20 * time.Millisecond) // the receiver drains its ring
			rx, busy := rxPackets(b, p)-rx0, napiCPU(b, napi)-busy0
			el := time.Since(start)
			b.ReportMetric(float64(rx)/el.Seconds(), "rx-pps")
			b.ReportMetric(float64(offered)/el.Seconds(), "offered-pps")
			b.ReportMetric(float64(rx)/float64(max(offered, 1)), "arrived/offered")
			b.ReportMetric(float64(busy)/float64(el), "rx-busy")
		})
	}
}

// attachDrop attaches prog in native mode on the receiving end until the
// benchmark ends.
func attachDrop(tb testing.TB, p *pair, prog *ebpf.Program) {
	tb.Helper()
	err := p.dut.Do(func() error {
		ifc, err := net.InterfaceByName(p.ld.Name)
		if err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		if err != nil {
			return fmt.Errorf("attach XDP_DROP to %s: %w", p.ld.Name, err)
		}
		tb.Cleanup(func() { l.Close() })
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// napiCPU is the CPU time the receiver's NAPI threads have run.
func napiCPU(tb testing.TB, pids []int) time.Duration {
	tb.Helper()
	var sum time.Duration
	for _, pid := range pids {
		d, err := netns.ThreadCPU(pid)
		if err != nil {
			tb.Fatal(err)
		}
		sum += d
	}
	return sum
}

func rxPackets(tb testing.TB, p *pair) uint64 {
	tb.Helper()
	out, err := p.dut.Exec("cat", "/sys/class/net/"+p.ld.Name+"/statistics/rx_packets")
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
