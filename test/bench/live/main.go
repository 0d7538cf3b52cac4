// Command live measures apiguard's datapath on a live veth path against
// nftables doing the same job, a trivial XDP_DROP program (the ceiling for
// drops), a trivial XDP_PASS program (the ceiling for passed traffic) and no
// filter at all. A generator namespace floods a guarded namespace through one
// veth pair with the project's generator (test/bench/trafgen: live frames where
// the kernel allows them, else AF_PACKET multiplied by an XDP devmap
// broadcast); the guarded side's receive work runs in threaded NAPI kthreads
// pinned to their own CPU, whose exact run time (schedstat) divided by the
// packets they received is the guarded CPU's cost per packet. Every figure is
// counted at the receiver, never taken from the generator. A row whose guarded
// CPU was not kept busy is generator-bound: its rate says nothing about the
// filter, its ns/pkt still does. Configurations are interleaved and each is
// run several times; medians are reported.
//
// Needs root, Linux 6.6+ (TCX), nft, ethtool. Run: make bench-live.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/apiguard/apiguard/test/bench/trafgen"
	"github.com/apiguard/apiguard/test/packet"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-live:", err)
		os.Exit(1)
	}
}

type flood struct {
	name    string
	dport   uint16
	sources uint32
	six     bool
}

func floods() []flood {
	return []flood{
		{name: "1 source, far over its limit", dport: floodPort, sources: 1},
		{name: "64k sources, each under its limit, over the service total", dport: floodPort, sources: 65536},
		{name: "legitimate: 1k sources, no limit reached", dport: legitPort, sources: 1024},
	}
}

// sample is one run of one flood through one configuration.
type sample struct {
	offered  uint64        // frames the generator offered
	received uint64        // rx_packets at the guarded veth
	counted  uint64        // what the filter itself counted (0 when it cannot)
	napi     time.Duration // run time of the guarded NAPI threads
	elapsed  time.Duration
}

func (s sample) kpps() float64 { return float64(s.received) / s.elapsed.Seconds() / 1000 }

func (s sample) nsPerPkt() float64 {
	if s.received == 0 {
		return 0
	}
	return float64(s.napi.Nanoseconds()) / float64(s.received)
}

// busy is the share of the run the guarded CPU spent receiving.
func (s sample) busy() float64 { return s.napi.Seconds() / s.elapsed.Seconds() }

// genBound is the busy share under which a run is the generator's limit, not
// the guarded CPU's: the receiver waited for frames.
const genBound = 0.9

func run() error {
	runs := flag.Int("runs", 3, "runs of each configuration and flood (medians are reported)")
	dur := flag.Duration("duration", 2*time.Second, "length of each run")
	out := flag.String("out", "", "also write the markdown table to this file")
	gen := flag.String("generator", "best", "best, live-frames, redirect or af-packet (test/bench/trafgen)")
	fanout := flag.Int("fanout", 16, "copies the redirect generator makes of each frame it sends (1..64)")
	flag.Parse()
	if *runs < 1 || *runs > 20 || *dur < 500*time.Millisecond || *dur > time.Minute {
		return errors.New("--runs must be 1..20 and --duration 0.5s..1m")
	}
	method, err := trafgen.ParseMethod(*gen)
	if err != nil {
		return err
	}
	if method == trafgen.Best {
		method = trafgen.Redirect
		if trafgen.ProbeLiveFrames() == nil {
			method = trafgen.LiveFrames
		}
	}
	if runtime.NumCPU() < 2 {
		return errors.New("needs two CPUs: one for the generator, one for the guarded side")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "generator: %s (live frames: %v); the guarded program receives %s\n",
		method, liveFramesState(), method.Delivers())

	topo, err := newTopology(0, 1)
	if err != nil {
		return fmt.Errorf("build topology: %w", err)
	}
	defer topo.close()

	cfgs := configs()
	fls := floods()
	gc := trafgen.Config{Method: method, Fanout: *fanout, Pinned: true, CPU: topo.genCPU}
	results := map[[2]int][]sample{}
	for r := 0; r < *runs; r++ {
		for ci, c := range cfgs {
			for fi, f := range fls {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s, err := measure(topo, c, f, gc, *dur)
				if err != nil {
					return fmt.Errorf("%s / %s: %w", c.name, f.name, err)
				}
				results[[2]int{ci, fi}] = append(results[[2]int{ci, fi}], s)
				fmt.Fprintf(os.Stderr, "run %d  %-18s %-58s %8.0f kpps  %6.0f ns/pkt  busy %3.0f%%\n",
					r+1, c.name, f.name, s.kpps(), s.nsPerPkt(), 100*s.busy())
			}
		}
	}
	var w io.Writer = os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = io.MultiWriter(os.Stdout, f)
	}
	report(w, cfgs, fls, results, *runs, *dur, gc)
	return nil
}

func liveFramesState() string {
	if err := trafgen.ProbeLiveFrames(); err != nil {
		return err.Error()
	}
	return "allowed"
}

func measure(topo *topology, c config, f flood, gc trafgen.Config, d time.Duration) (sample, error) {
	teardown, counted, err := c.setup(topo)
	if err != nil {
		return sample{}, err
	}
	defer teardown()
	if err := topo.pinNAPI(); err != nil {
		return sample{}, err
	}
	src, dst := topo.lg.Addr4, topo.ld.Addr4
	if f.six {
		src, dst = topo.lg.Addr6, topo.ld.Addr6
	}
	gc.Frame = packet.Build(packet.Spec{Src: src, Dst: dst, Proto: packet.UDP, SrcPort: 40000, DstPort: f.dport, Payload: 18})
	gc.Sources = f.sources
	g, err := trafgen.Open(topo.gen, topo.lg.Name, gc)
	if err != nil {
		return sample{}, err
	}
	defer g.Close()

	// warm up: clients and sets exist, caches settle
	if _, err := g.Flood(300*time.Millisecond, 1<<30); err != nil {
		return sample{}, err
	}
	rx0, err := topo.rxPackets()
	if err != nil {
		return sample{}, err
	}
	cpu0 := topo.napiTime()
	var cnt0 uint64
	if counted != nil {
		if cnt0, err = counted(); err != nil {
			return sample{}, err
		}
	}
	start := time.Now()
	offered, err := g.Flood(d, 1<<34)
	if err != nil {
		return sample{}, err
	}
	// let the receiver drain its ring before reading
	time.Sleep(50 * time.Millisecond)
	elapsed := time.Since(start) - 50*time.Millisecond
	rx1, err := topo.rxPackets()
	if err != nil {
		return sample{}, err
	}
	s := sample{offered: offered, received: rx1 - rx0, napi: topo.napiTime() - cpu0, elapsed: elapsed}
	if counted != nil {
		c1, err := counted()
		if err != nil {
			return sample{}, err
		}
		s.counted = c1 - cnt0
	}
	return s, nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func report(w io.Writer, cfgs []config, fls []flood, res map[[2]int][]sample, runs int, d time.Duration, gc trafgen.Config) {
	host, _ := os.Hostname()
	var uts unix.Utsname
	unix.Uname(&uts)
	gen := gc.Method.String()
	if gc.Method == trafgen.Redirect {
		gen = fmt.Sprintf("redirect ×%d", gc.Fanout)
	}
	fmt.Fprintf(w, "Live path, %s, Linux %s, %d CPUs; %d runs of %v per cell, medians; packets counted at the guarded veth.\n",
		host, strings.TrimRight(string(uts.Release[:]), "\x00"), runtime.NumCPU(), runs, d)
	fmt.Fprintf(w, "Generator: %s from one core; the guarded program receives %s. "+
		"busy: share of the run the guarded CPU spent receiving; below %.0f%% the row is generator-bound "+
		"(\"gen\"): its rate and rate ratios say nothing about the filter, its ns/pkt does.\n\n",
		gen, gc.Method.Delivers(), 100*genBound)
	idx := func(name string) int {
		for i, c := range cfgs {
			if c.name == name {
				return i
			}
		}
		return -1
	}
	for fi, f := range fls {
		fmt.Fprintf(w, "#### %s\n\n", f.name)
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(tw, "| configuration\t guarded CPU ns/pkt\t ns/pkt vs nftables\t kpps at receiver\t busy\t bound by\t offered kpps\t counted by filter\t kpps vs nftables\t kpps vs XDP_DROP\t kpps vs no filter\t")
		fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t")
		med := func(ci int, fn func(sample) float64) float64 {
			var xs []float64
			for _, s := range res[[2]int{ci, fi}] {
				xs = append(xs, fn(s))
			}
			return median(xs)
		}
		bound := func(ci int) bool { return med(ci, sample.busy) < genBound }
		ratio := func(ci, ref int) string {
			if bound(ci) || bound(ref) {
				return "gen"
			}
			return fmt.Sprintf("%.2f×", med(ci, sample.kpps)/med(ref, sample.kpps))
		}
		nft, drop, none := idx("nftables"), idx("trivial XDP_DROP"), idx("no filter")
		for ci, c := range cfgs {
			counted := "—"
			if cnt := med(ci, func(s sample) float64 { return float64(s.counted) }); cnt > 0 {
				counted = fmt.Sprintf("%.0f k", cnt/1000)
			}
			by := "guarded CPU"
			if bound(ci) {
				by = "**generator**"
			}
			ns := med(ci, sample.nsPerPkt)
			fmt.Fprintf(tw, "| %s\t %.0f\t %.2f×\t %.0f\t %.0f%%\t %s\t %.0f\t %s\t %s\t %s\t %s\t\n", c.name,
				ns, ns/med(nft, sample.nsPerPkt), med(ci, sample.kpps), 100*med(ci, sample.busy), by,
				med(ci, func(s sample) float64 { return float64(s.offered) / s.elapsed.Seconds() / 1000 }),
				counted, ratio(ci, nft), ratio(ci, drop), ratio(ci, none))
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
}
