package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"

	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/crowdsec"
)

// decisions100k is 50k IPv4 addresses and 50k IPv6 /64 ranges: the kernel's
// ban maps hold 65,536 prefixes per family.
func decisions100k() []crowdsec.Decision {
	out := make([]crowdsec.Decision, 0, 100_000)
	for i := range 50_000 {
		out = append(out, crowdsec.Decision{ID: int64(len(out) + 1), Origin: "CAPI", Scenario: "crowdsecurity/ssh-bf",
			Scope: "Ip", Type: "ban", Value: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(), Duration: "23h59m58.5s"})
	}
	for i := range 50_000 {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, byte(i >> 8), byte(i)}
		out = append(out, crowdsec.Decision{ID: int64(len(out) + 1), Origin: "lists", Scenario: "lists:firehol",
			Scope: "Range", Type: "ban", Value: netip.PrefixFrom(netip.AddrFrom16(a), 64).String(), Duration: "167h59m58.5s"})
	}
	return out
}

// BenchmarkCrowdSecStartup100k: a startup pull of 100k decisions from a LAPI
// on loopback, through the daemon's batched writes, into the kernel's maps.
// Reports the time per full load, decisions per second, and the heap the
// bouncer's bookkeeping keeps.
func BenchmarkCrowdSecStartup100k(b *testing.B) {
	decs := decisions100k()
	lapi := newMiniLAPI(b, decs)
	testenv.RequireRoot(b)
	d := startBans(b, testPinDir(b), b.TempDir())
	ctx := context.Background()
	// signed: at one iteration the heap can shrink across a load (garbage
	// of the setup collected), and the figure must say so, not wrap around
	var kept int64
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		// start from empty maps each time, as a fresh host would
		prefixes, err := d.CrowdSecBans()
		if err != nil {
			b.Fatal(err)
		}
		if err := d.ApplyCrowdSec(nil, prefixes); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		bo, err := crowdsec.NewBouncer(crowdsec.BouncerConfig{URL: lapi.srv.URL, APIKey: lapi.key,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, d)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := bo.Pull(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		st := bo.Stats()
		if st.Active != len(decs) {
			b.Fatalf("%d bans active, want %d", st.Active, len(decs))
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		kept = int64(after.HeapAlloc) - int64(before.HeapAlloc)
		runtime.KeepAlive(bo)
		b.StartTimer()
	}
	b.StopTimer()
	in, err := d.CrowdSecBans()
	if err != nil || len(in) != len(decs) {
		b.Fatalf("%d crowdsec bans in the kernel, want %d (%v)", len(in), len(decs), err)
	}
	b.ReportMetric(float64(len(decs))*float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	b.ReportMetric(float64(kept)/float64(len(decs)), "heap-B/decision")
	b.Logf("%s", fmt.Sprintf("bookkeeping heap after a load: %.1f MiB", float64(kept)/(1<<20)))
}
