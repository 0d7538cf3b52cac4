package metrics

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
)

// scrapeLoad is how many clients and bans BenchmarkScrape100k puts in the
// kernel's maps.
const scrapeLoad = 100_000

// loaded100k is a datapath whose client table holds scrapeLoad clients (one
// packet each to a limited service) and whose ban maps hold scrapeLoad bans.
func loaded100k(tb testing.TB) *loader.Datapath {
	tb.Helper()
	testenv.RequireRoot(tb)
	d, err := loader.Load(loader.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	if _, err := d.Apply(&loader.Policy{Services: []loader.Service{{ID: 1, Name: "api", Proto: loader.ProtoTCP,
		Ports:  []loader.PortRange{{First: 8080, Last: 8080}},
		Client: loader.Limits{Packets: loader.Rate{PerSecond: 1000, Burst: 1000}}}}}); err != nil {
		tb.Fatal(err)
	}
	spec := packet.Spec{Dst: netip.MustParseAddr("192.0.2.1"), Proto: packet.TCP, SrcPort: 1234, DstPort: 8080, TCPFlags: packet.ACK}
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := range scrapeLoad {
		a := base
		a[1], a[2], a[3] = byte(i>>16), byte(i>>8), byte(i)
		spec.Src = netip.AddrFrom4(a)
		if _, err := d.XDP().Run(&ebpf.RunOptions{Data: packet.Build(spec)}); err != nil {
			tb.Fatal(err)
		}
		a[0] = 172
		if err := d.Ban(loader.Ban{Prefix: netip.PrefixFrom(netip.AddrFrom4(a), 32), Expires: time.Now().Add(time.Hour)}); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}

// clientSums is the daemon's Services source in miniature: the clients map
// summed by service, one walk per call.
type clientSums struct{ d *loader.Datapath }

func (c clientSums) ServiceStats() ([]ServiceStat, error) {
	s := ServiceStat{Name: "api", Protocol: "tcp", Ports: "8080"}
	err := c.d.Clients(func(cl loader.Client) error {
		s.Clients++
		s.Packets += cl.Packets
		s.Bytes += cl.Bytes
		s.Drops += cl.Drops
		return nil
	})
	return []ServiceStat{s}, err
}

// BenchmarkScrape100k is one scrape (Gather) of a daemon with 100k clients
// and 100k bans: walking the maps on every scrape (the baseline), with the
// per-service sums too (one more walk of the clients, reading their
// values), and with the default WalkEvery, where scrapes within 5 s of a
// walk reuse it.
func BenchmarkScrape100k(b *testing.B) {
	d := loaded100k(b)
	for _, bc := range []struct {
		name     string
		every    time.Duration
		services bool
	}{{"walk-every-scrape", -1, false}, {"walk-every-scrape-with-services", -1, true}, {"walk-every-5s", 0, true}} {
		b.Run(bc.name, func(b *testing.B) {
			src := Sources{Datapath: d, WalkEvery: bc.every}
			if bc.services {
				src.Services = clientSums{d}
			}
			c, err := NewCollector(src)
			if err != nil {
				b.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)
			for b.Loop() {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// countingDatapath counts the walks (Usage, Bans) made of it.
type countingDatapath struct {
	*fakeDatapath
	usages, bans atomic.Int32
}

func (c *countingDatapath) Usage() ([]loader.MapUsage, error) {
	c.usages.Add(1)
	return c.fakeDatapath.Usage()
}

func (c *countingDatapath) Bans() ([]loader.Ban, error) {
	c.bans.Add(1)
	return c.fakeDatapath.Bans()
}

// TestMapWalksAreBounded: scrapes within WalkEvery of a walk reuse its
// figures, concurrent ones included; a failed walk is not reused.
func TestMapWalksAreBounded(t *testing.T) {
	src := fakeSources()
	dp := &countingDatapath{fakeDatapath: src.Datapath.(*fakeDatapath)}
	clock := now
	var clockMu sync.Mutex
	src.Datapath = dp
	src.Now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	reg := newTestRegistry(t, src)
	walks := func() int32 {
		if u, b := dp.usages.Load(), dp.bans.Load(); u != b {
			t.Fatalf("%d usage walks, %d ban walks", u, b)
		}
		return dp.usages.Load()
	}

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := sample(t, reg)["apiguard_map_entries{map=clients}"]; got != 77 || walks() != 1 {
		t.Errorf("9 scrapes at once: %d walks, clients %v; want 1 walk", walks(), got)
	}

	dp.usage = []loader.MapUsage{{Name: "clients", Entries: 78, Capacity: 1 << 17}}
	clockMu.Lock()
	clock = clock.Add(DefaultWalkEvery - time.Millisecond)
	clockMu.Unlock()
	if got := sample(t, reg)["apiguard_map_entries{map=clients}"]; got != 77 || walks() != 1 {
		t.Errorf("within WalkEvery: %d walks, clients %v; want the first walk's 77", walks(), got)
	}
	clockMu.Lock()
	clock = clock.Add(time.Millisecond)
	clockMu.Unlock()
	if got := sample(t, reg)["apiguard_map_entries{map=clients}"]; got != 78 || walks() != 2 {
		t.Errorf("WalkEvery later: %d walks, clients %v; want a second walk and 78", walks(), got)
	}

	// a failed walk is reported and tried again on the next scrape
	dp.usageErr = errors.New("boom")
	clockMu.Lock()
	clock = clock.Add(DefaultWalkEvery)
	clockMu.Unlock()
	if _, err := reg.Gather(); err == nil {
		t.Error("a failed walk is not reported")
	}
	dp.usageErr = nil
	dp.usage = []loader.MapUsage{{Name: "clients", Entries: 79, Capacity: 1 << 17}}
	if got := sample(t, reg)["apiguard_map_entries{map=clients}"]; got != 79 {
		t.Errorf("after a failed walk: clients %v, want a fresh walk's 79", got)
	}

	// negative: every scrape walks
	src.WalkEvery = -1
	dp2 := &countingDatapath{fakeDatapath: dp.fakeDatapath}
	src.Datapath = dp2
	reg = newTestRegistry(t, src)
	for range 3 {
		sample(t, reg)
	}
	if dp2.usages.Load() != 3 {
		t.Errorf("WalkEvery -1: %d walks for 3 scrapes", dp2.usages.Load())
	}
}
