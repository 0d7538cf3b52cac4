// Command live measures apiguard's datapath on a live veth path against
// nftables doing the same job, a trivial XDP_DROP program (the ceiling for
// drops), a trivial XDP_PASS program (the ceiling for passed traffic) and no
// filter at all. A generator namespace floods a guarded namespace through one
// veth pair with the project's live-frames generator (test/bench/trafgen); the
// guarded side's receive work runs in a threaded NAPI kthread pinned to its own
// CPU. Every figure is counted at the receiver, never taken from the generator.
// Configurations are interleaved and each is run several times; medians are
// reported, with ratios against nftables and XDP_DROP from the same run.
//
// Needs root, Linux 6.6+ (TCX), nft, ethtool, taskset. Run: make bench-live.
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
	offered  uint64        // frames the generator queued
	received uint64        // rx_packets at the guarded veth
	counted  uint64        // what the filter itself counted (0 when it cannot)
	napi     time.Duration // CPU time of the guarded NAPI thread
	elapsed  time.Duration
}

func (s sample) kpps() float64 { return float64(s.received) / s.elapsed.Seconds() / 1000 }

func (s sample) nsPerPkt() float64 {
	if s.received == 0 {
		return 0
	}
	return float64(s.napi.Nanoseconds()) / float64(s.received)
}

func run() error {
	runs := flag.Int("runs", 3, "runs of each configuration and flood (medians are reported)")
	dur := flag.Duration("duration", 2*time.Second, "length of each run")
	out := flag.String("out", "", "also write the markdown table to this file")
	flag.Parse()
	if *runs < 1 || *runs > 20 || *dur < 500*time.Millisecond || *dur > time.Minute {
		return errors.New("--runs must be 1..20 and --duration 0.5s..1m")
	}
	if runtime.NumCPU() < 2 {
		return errors.New("needs two CPUs: one for the generator, one for the guarded side")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	topo, err := newTopology(0, 1)
	if err != nil {
		return fmt.Errorf("build topology: %w", err)
	}
	defer topo.close()

	cfgs := configs()
	fls := floods()
	results := map[[2]int][]sample{}
	for r := 0; r < *runs; r++ {
		for ci, c := range cfgs {
			for fi, f := range fls {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s, err := measure(topo, c, f, *dur)
				if err != nil {
					return fmt.Errorf("%s / %s: %w", c.name, f.name, err)
				}
				results[[2]int{ci, fi}] = append(results[[2]int{ci, fi}], s)
				fmt.Fprintf(os.Stderr, "run %d  %-18s %-58s %8.0f kpps  %6.0f ns/pkt\n", r+1, c.name, f.name, s.kpps(), s.nsPerPkt())
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
	report(w, cfgs, fls, results, *runs, *dur)
	return nil
}

func measure(topo *topology, c config, f flood, d time.Duration) (sample, error) {
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
	frame := packet.Build(packet.Spec{Src: src, Dst: dst, Proto: packet.UDP, SrcPort: 40000, DstPort: f.dport, Payload: 18})
	g, err := trafgen.New(trafgen.Config{Frame: frame, Sources: f.sources})
	if err != nil {
		return sample{}, err
	}
	defer g.Close()

	// warm up: clients and sets exist, caches settle
	if err := topo.sendOn(g, 300*time.Millisecond); err != nil {
		return sample{}, err
	}
	rx0, err := topo.rxPackets()
	if err != nil {
		return sample{}, err
	}
	cpu0, err := topo.napiTime()
	if err != nil {
		return sample{}, err
	}
	var cnt0 uint64
	if counted != nil {
		if cnt0, err = counted(); err != nil {
			return sample{}, err
		}
	}
	start := time.Now()
	var offered uint64
	err = topo.gen.Do(func() error {
		pin(topo.genCPU)
		n, err := g.Flood(topo.genIfidx, d, 1<<20, 1<<31)
		offered = n
		return err
	})
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
	cpu1, err := topo.napiTime()
	if err != nil {
		return sample{}, err
	}
	s := sample{offered: offered, received: rx1 - rx0, napi: cpu1 - cpu0, elapsed: elapsed}
	if counted != nil {
		c1, err := counted()
		if err != nil {
			return sample{}, err
		}
		s.counted = c1 - cnt0
	}
	return s, nil
}

func (t *topology) sendOn(g *trafgen.Generator, d time.Duration) error {
	return t.gen.Do(func() error {
		pin(t.genCPU)
		_, err := g.Flood(t.genIfidx, d, 1<<18, 1<<30)
		return err
	})
}

// pin keeps the calling (locked) thread on cpu.
func pin(cpu int) {
	var set unix.CPUSet
	set.Set(cpu)
	unix.SchedSetaffinity(0, &set)
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func report(w io.Writer, cfgs []config, fls []flood, res map[[2]int][]sample, runs int, d time.Duration) {
	host, _ := os.Hostname()
	var uts unix.Utsname
	unix.Uname(&uts)
	fmt.Fprintf(w, "Live path, %s, Linux %s, %d CPUs; %d runs of %v per cell, medians; packets counted at the guarded veth.\n\n",
		host, strings.TrimRight(string(uts.Release[:]), "\x00"), runtime.NumCPU(), runs, d)
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
		fmt.Fprintln(tw, "| configuration\t kpps at receiver\t guarded CPU ns/pkt\t offered kpps\t counted by filter\t vs nftables\t vs XDP_DROP\t vs XDP_PASS\t vs no filter\t")
		fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t")
		med := func(ci int, fn func(sample) float64) float64 {
			var xs []float64
			for _, s := range res[[2]int{ci, fi}] {
				xs = append(xs, fn(s))
			}
			return median(xs)
		}
		nft := med(idx("nftables"), sample.kpps)
		drop := med(idx("trivial XDP_DROP"), sample.kpps)
		none := med(idx("no filter"), sample.kpps)
		pass := med(idx("trivial XDP_PASS"), sample.kpps)
		for ci, c := range cfgs {
			k := med(ci, sample.kpps)
			counted := "—"
			if cnt := med(ci, func(s sample) float64 { return float64(s.counted) }); cnt > 0 {
				counted = fmt.Sprintf("%.0f k", cnt/1000)
			}
			fmt.Fprintf(tw, "| %s\t %.0f\t %.0f\t %.0f\t %s\t %.2f×\t %.2f×\t %.2f×\t %.2f×\t\n", c.name, k,
				med(ci, sample.nsPerPkt), med(ci, func(s sample) float64 { return float64(s.offered) / s.elapsed.Seconds() / 1000 }),
				counted, k/nft, k/drop, k/pass, k/none)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
}
