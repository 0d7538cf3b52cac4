package loader

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/bench/trafgen"
	"github.com/apiguard/apiguard/test/packet"
)

// The SYN proxy's lab figures (issue 16; docs/synproxy.md "Lab"): fresh
// clients, each from a source address never seen before, open connections to
// a real server through the largest spoofed random-source SYN flood the lab's
// generator makes, against a service whose total connection limit is far
// below it; once with synProxy off and once with auto, in the same run, for
// IPv4 and IPv6, beside a baseline without a flood. A connection counts when
// its HTTP request is answered within 1 s of the dial. Reported, not
// asserted: the figures depend on the machine (make bench prints them).
func BenchmarkFreshClientsUnderSYNFlood(b *testing.B) {
	for _, fam := range []int{4, 6} {
		b.Run(fmt.Sprintf("ipv%d", fam), func(b *testing.B) {
			for range b.N {
				freshClientsUnderSYNFlood(b, fam)
			}
		})
	}
}

const (
	labClients = 200 // fresh clients per phase
	labWorkers = 8
	labTotal   = 100 // the service's total new connections per second (and burst)
	labBudget  = time.Second
)

type labPhase struct {
	name     string
	mode     SynProxyMode
	total    uint64 // the service's total new connections per second; 0: labTotal
	flood    bool
	ok       int             // answered within labBudget
	connects []time.Duration // dial times of those answered
	offered  float64         // flood SYN/s
	overflow int64           // TcpExtListenOverflows + ListenDrops during the phase
}

func freshClientsUnderSYNFlood(b *testing.B, fam int) {
	lab := newVethLab(b)
	d := newDatapath(b, Options{})
	p := synProxyPolicy()
	p.Services[0].SynProxy = SynProxyOff
	p.Services[0].Total.Conns = Rate{PerSecond: labTotal, Burst: labTotal}
	mustApply(b, d, p)
	attachSynProxyGuard(b, d, lab, AttachNative)
	// the answers to the flood's spoofed sources leave the lab at its edge,
	// as they leave a host through its NIC; the clients' come in
	edge, err := trafgen.AttachEdge(lab.a, lab.la.Name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { edge.Close() })
	if err := edge.Allow(lab.la.Addr4, lab.la.Addr6); err != nil {
		b.Fatal(err)
	}
	if err := lab.b.IP("route", "add", "10.78.0.0/16", "dev", lab.lb.Name); err != nil {
		b.Fatal(err)
	}
	startInfoServer(b, lab.b, spPort, false)
	srv := netip.AddrPortFrom(lab.lb.Addr4, spPort)
	src := lab.la.Addr4
	if fam == 6 {
		srv, src = netip.AddrPortFrom(lab.lb.Addr6, spPort), lab.la.Addr6
	}
	frame := packet.Build(packet.Spec{Src: src, Dst: srv.Addr(), Proto: packet.TCP, SrcPort: 40000, DstPort: spPort,
		TCPFlags: packet.SYN, Seq: 1, TCPOptions: synOptions(synOffer{mss: 1460, wscale: 7, sack: true, ts: true}, 1)})
	g, err := trafgen.Open(lab.a, lab.la.Name, trafgen.Config{Frame: frame, Sources: 1 << 24, Random: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Close() })

	phases := []*labPhase{
		// no flood, and a limit the clients alone do not reach
		{name: "baseline", mode: SynProxyOff, total: 1_000_000},
		{name: "off", mode: SynProxyOff, flood: true},
		{name: "auto", mode: SynProxyAuto, flood: true},
	}
	for i, ph := range phases {
		p.Services[0].SynProxy = ph.mode
		total := cmp.Or(ph.total, labTotal)
		p.Services[0].Total.Conns = Rate{PerSecond: total, Burst: total}
		mustApply(b, d, p)
		addrs := labAddrs(b, lab, fam, i)
		if err := edge.Allow(addrs...); err != nil {
			b.Fatal(err)
		}
		before := netstat(b, lab.b)
		stop := labFlood(b, g, ph.flood)
		labClientsRun(lab, addrs, srv, ph)
		ph.offered = stop()
		after := netstat(b, lab.b)
		ph.overflow = after["ListenOverflows"] - before["ListenOverflows"] + after["ListenDrops"] - before["ListenDrops"]
		// let the flood's half-open handshakes time out of the listener
		time.Sleep(500 * time.Millisecond)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	base, off, auto := phases[0], phases[1], phases[2]
	b.Logf("ipv%d, %s generator, load %s", fam, g.Method(), strings.Join(strings.Fields(string(load))[:3], " "))
	for _, ph := range phases {
		b.Logf("%-8s flood %8.0f SYN/s: %3d/%d first connections answered within %v, p50 %v, p99 %v, listen overflows+drops %d",
			ph.name, ph.offered, ph.ok, labClients, labBudget, pct(ph.connects, 50), pct(ph.connects, 99), ph.overflow)
	}
	b.ReportMetric(auto.offered, "flood-SYN/s")
	b.ReportMetric(100*float64(off.ok)/labClients, "off-ok-%")
	b.ReportMetric(100*float64(auto.ok)/labClients, "auto-ok-%")
	b.ReportMetric(ms(pct(base.connects, 99)), "baseline-p99-ms")
	b.ReportMetric(ms(pct(auto.connects, 99)), "auto-p99-ms")
	if p := pct(base.connects, 99); p > 0 {
		b.ReportMetric(float64(pct(auto.connects, 99))/float64(p), "auto-p99/baseline")
	}
	b.ReportMetric(float64(auto.overflow), "auto-listen-overflows")
	b.ReportMetric(float64(off.overflow), "off-listen-overflows")
}

// labAddrs adds labClients addresses of family fam, never used before in this
// lab (phase picks the range), to the client's link.
func labAddrs(b *testing.B, lab *vethLab, fam, phase int) []netip.Addr {
	b.Helper()
	var cmds []string
	out := make([]netip.Addr, 0, labClients)
	for i := range labClients {
		if fam == 4 {
			// outside the link's /24: the server reaches them on-link (labRoutes)
			a := netip.AddrFrom4([4]byte{10, 78, byte(1 + phase), byte(1 + i)})
			out = append(out, a)
			cmds = append(cmds, fmt.Sprintf("addr add %s/32 dev %s", a, lab.la.Name))
		} else {
			a := netip.MustParseAddr(fmt.Sprintf("fd00:4d::%x:%x", 1+phase, 1+i))
			out = append(out, a)
			cmds = append(cmds, fmt.Sprintf("addr add %s/64 dev %s nodad", a, lab.la.Name))
		}
	}
	f, err := os.CreateTemp(b.TempDir(), "ip-batch")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.WriteString(strings.Join(cmds, "\n") + "\n"); err != nil {
		b.Fatal(err)
	}
	f.Close()
	if err := lab.a.IP("-batch", f.Name()); err != nil {
		b.Fatal(err)
	}
	return out
}

// labFlood floods (when on) until the returned stop is called, which gives
// the offered rate.
func labFlood(b *testing.B, g *trafgen.Generator, on bool) (stop func() float64) {
	if !on {
		return func() float64 { return 0 }
	}
	var done atomic.Bool
	var sent atomic.Uint64
	start := time.Now()
	finished := make(chan error, 1)
	go func() {
		for !done.Load() {
			n, err := g.Flood(100*time.Millisecond, 1<<31)
			sent.Add(n)
			if err != nil {
				finished <- err
				return
			}
		}
		finished <- nil
	}()
	// the flood reaches its rate (and auto turns on) before the clients come
	time.Sleep(300 * time.Millisecond)
	return func() float64 {
		done.Store(true)
		if err := <-finished; err != nil {
			b.Fatal(err)
		}
		return float64(sent.Load()) / time.Since(start).Seconds()
	}
}

// labClientsRun has each address open one connection and make one request,
// labWorkers at a time.
func labClientsRun(lab *vethLab, addrs []netip.Addr, srv netip.AddrPort, ph *labPhase) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan netip.Addr)
	for range labWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for from := range work {
				dial, ok := labConnect(lab, from, srv)
				if ok {
					mu.Lock()
					ph.ok++
					ph.connects = append(ph.connects, dial)
					mu.Unlock()
				}
			}
		}()
	}
	for _, a := range addrs {
		work <- a
	}
	close(work)
	wg.Wait()
}

// labConnect dials srv from from and sends a request: the dial's time, and
// whether the answer came within labBudget of the dial's start.
func labConnect(lab *vethLab, from netip.Addr, srv netip.AddrPort) (time.Duration, bool) {
	var dial time.Duration
	ok := false
	lab.a.Do(func() error {
		start := time.Now()
		d := net.Dialer{Timeout: labBudget, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
		c, err := d.Dial("tcp", srv.String())
		if err != nil {
			return nil
		}
		defer c.Close()
		dial = time.Since(start)
		c.SetDeadline(start.Add(labBudget))
		if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
			return nil
		}
		buf := make([]byte, 12)
		if n, err := c.Read(buf); err == nil && strings.HasPrefix(string(buf[:n]), "HTTP/1.") {
			ok = true
		}
		return nil
	})
	return dial, ok
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, (len(s)*p+99)/100-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
