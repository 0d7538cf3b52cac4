package detect

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
)

func TestFloodFlaggedAndBanned(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	evs := flood("192.0.2.10", 0, 15, 100)
	h.feed(evs[:10]...)
	h.noFlags() // 10 s of limiting: not longer than the 10 s threshold
	h.feed(evs[10])
	f := h.mustFlag("192.0.2.10", Flood)
	if f.Evidence.LimitedFor != 11*time.Second || f.Evidence.Drops != 1+10*100 || f.Evidence.Kernel != "client_pps" {
		t.Fatalf("evidence at the threshold: %+v", f.Evidence)
	}
	if !f.Ban.Banned || f.Ban.TTL != 10*time.Minute || f.Action != ActionBan {
		t.Fatalf("ban outcome %+v", f.Ban)
	}
	h.feed(evs[11:]...) // the same episode: no second ban, evidence grows
	want := []ban{{netip.MustParsePrefix("192.0.2.10/32"), 10 * time.Minute, Flood}}
	if !slices.Equal(h.bans.bans, want) {
		t.Fatalf("bans %v, want %v", h.bans.bans, want)
	}
	f = h.mustFlag("192.0.2.10", Flood)
	if f.Episodes != 1 || f.Evidence.LimitedFor != 15*time.Second || f.Evidence.Drops != 1+14*100 || !f.Active {
		t.Fatalf("after the episode went on: %+v", f)
	}
	if f.FirstSeen != wallBase.Add(t0+10*time.Second) || f.LastSeen != wallBase.Add(t0+14*time.Second) {
		t.Fatalf("first %v last %v", f.FirstSeen, f.LastSeen)
	}
	if tot := h.d.Totals(); tot.Flagged[Flood] != 1 || tot.Bans != 1 || tot.Events != 15 {
		t.Fatalf("totals %+v", tot)
	}
	// a minute of quiet: still listed, no longer active
	h.clock += 2 * time.Minute
	if f := h.mustFlag("192.0.2.10", Flood); f.Active {
		t.Fatal("flag still active after a quiet window")
	}
}

// A legitimate busy client: it touches its limit in short bursts, and it is
// dropped when the service as a whole is over its total. Neither is a flood.
func TestBusyClientNotFlagged(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	var evs []loader.Event
	drops := uint64(1)
	for burst := 0; burst < 20; burst++ { // 10 minutes: 4 s of limiting every 30 s
		for s := 0; s < 4; s++ {
			evs = append(evs, event(evLimit, rPPS, "192.0.2.20", time.Duration(burst*30+s)*time.Second, count(drops)))
			drops += 50
		}
	}
	// the service total limits everyone for a long stretch: not this client's
	// fault, and the kernel names no client for it
	for s := 0; s < 120; s++ {
		evs = append(evs, event(evLimit, rSvcPPS, "192.0.2.20", time.Duration(600+s)*time.Second, anon()))
	}
	// its /24 is over its prefix limit now and then, with the busy client alone in it
	for s := 0; s < 30; s++ {
		evs = append(evs, event(evLimit, rPrefix, "192.0.2.0", time.Duration(700+s)*time.Second))
	}
	// it opens connections a little faster than its limit now and then
	for s := 0; s < 3; s++ {
		evs = append(evs, event(evSyn, rCPS, "192.0.2.20", time.Duration(800+s)*time.Second, count(drops)))
		drops += 20
	}
	// and retries one closed port (a health check on a port that moved)
	for s := 0; s < 30; s++ {
		evs = append(evs, event(evNoSvc, rNoSvc, "192.0.2.20", time.Duration(900+s)*time.Second, port(8443)))
	}
	slices.SortFunc(evs, func(a, b loader.Event) int { return int(a.Ts>>30) - int(b.Ts>>30) })
	h.clientsIn = 1
	h.feed(evs...)
	for _, f := range h.d.Flags() {
		if f.Prefix.IsValid() {
			t.Fatalf("busy client flagged: %s", h.describe())
		}
	}
	if len(h.bans.bans) != 0 {
		t.Fatalf("bans %v", h.bans.bans)
	}
	// what is flagged is the service as a whole, over its total for minutes
	if f := h.mustFlag("service 1 (many sources)", Flood); f.Ban.Skipped != "many sources: nothing to ban" {
		t.Fatalf("service flag %+v", f)
	}
}

func TestSYNFlood(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		for i := 0; i < 5; i++ { // 50 refused SYNs a second
			h.feed(event(evSyn, rCPS, "198.51.100.7", time.Duration(i)*time.Second, count(1+uint64(i)*50)))
			if i < 2 && h.flag("198.51.100.7", SYNFlood) != nil {
				t.Fatalf("flagged after %d s, %d refusals", i+1, 1+i*50)
			}
		}
		f := h.mustFlag("198.51.100.7", SYNFlood)
		if f.Evidence.Drops != 201 || !f.Ban.Banned || f.Episodes != 1 {
			t.Fatalf("flag %+v", f)
		}
	})
	t.Run("refusals under the threshold", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		for i := 0; i < 30; i++ { // a pool warming up every 20 s: 40 refusals each time
			h.feed(event(evSyn, rCPS, "198.51.100.8", time.Duration(i)*20*time.Second, count(1+uint64(i)*40)))
		}
		h.noFlags()
	})
	t.Run("random sources against the service total", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		// the service bucket's event, about once a second on each of two CPUs
		for i := 0; i < 12; i++ {
			h.feed(event(evSyn, rSvcCPS, "0.0.0.0", time.Duration(i)*500*time.Millisecond, service(3), anon()))
			if i < 10 && h.flag("service 3 (many sources)", SYNFlood) != nil {
				t.Fatalf("flagged after %v", time.Duration(i)*500*time.Millisecond)
			}
		}
		f := h.mustFlag("service 3 (many sources)", SYNFlood)
		if f.Ban.Banned || f.Ban.Skipped != "many sources: nothing to ban" || f.Evidence.LimitedFor != 6*time.Second {
			t.Fatalf("service flag %+v", f)
		}
		if len(h.d.Flags()) != 1 || len(h.bans.bans) != 0 {
			t.Fatalf("sources flagged or banned: %s", h.describe())
		}
	})
}

func TestScan(t *testing.T) {
	t.Run("nmap-like", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		for p := 0; p < 100; p++ { // 100 ports in one second
			h.feed(event(evNoSvc, rNoSvc, "203.0.113.66", time.Duration(p)*10*time.Millisecond, port(uint16(1000-p))))
			if p < 20 && h.flag("203.0.113.66", Scan) != nil {
				t.Fatalf("flagged after %d ports", p+1)
			}
		}
		f := h.mustFlag("203.0.113.66", Scan)
		if !f.Ban.Banned || f.Evidence.Ports != 21 || len(f.Evidence.PortSample) != 16 || f.Evidence.PortSample[0] != 980 {
			t.Fatalf("scan flag when raised %+v", f)
		}
		// evidence follows at most once per second; the set stops growing at
		// its cap (64 for a threshold of 20)
		h.feed(event(evNoSvc, rNoSvc, "203.0.113.66", 1500*time.Millisecond, port(7)))
		f = h.mustFlag("203.0.113.66", Scan)
		if f.Evidence.Ports != 64 || !strings.Contains(f.Evidence.Summary, "at least 64 ports") {
			t.Fatalf("scan flag later %+v", f)
		}
		if !slices.IsSorted(f.Evidence.PortSample) {
			t.Fatalf("sample not sorted: %v", f.Evidence.PortSample)
		}
		if len(h.bans.bans) != 1 || h.bans.bans[0].reason != Scan {
			t.Fatalf("bans %v", h.bans.bans)
		}
	})
	t.Run("one closed port many times", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		for i := 0; i < 200; i++ {
			h.feed(event(evNoSvc, rNoSvc, "203.0.113.67", time.Duration(i)*100*time.Millisecond, port(22)))
		}
		h.noFlags()
	})
	t.Run("20 ports", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		for p := 0; p < 20; p++ {
			h.feed(event(evNoSvc, rNoSvc, "203.0.113.68", time.Duration(p)*100*time.Millisecond, port(uint16(100+p))))
		}
		h.noFlags()
	})
	t.Run("slower than the window", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		for p := 0; p < 200; p++ { // one port a second: 10 in any window
			h.feed(event(evNoSvc, rNoSvc, "203.0.113.69", time.Duration(p)*time.Second, port(uint16(100+p))))
		}
		h.noFlags()
	})
	t.Run("IPv6 client is its /64", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		for p := 0; p < 30; p++ { // a different address of the /64 for every port
			src := fmt.Sprintf("2001:db8:aa:bb::%x", p+1)
			h.feed(event(evNoSvc, rNoSvc, src, time.Duration(p)*time.Millisecond, port(uint16(100+p))))
		}
		h.mustFlag("2001:db8:aa:bb::/64", Scan)
		if len(h.bans.bans) != 1 || h.bans.bans[0].prefix != netip.MustParsePrefix("2001:db8:aa:bb::/64") {
			t.Fatalf("bans %v", h.bans.bans)
		}
	})
}

func TestDenyProbe(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	for i := 0; i < 12; i++ {
		typ, reason := evDeny, rDeny
		if i%2 == 1 {
			typ, reason = evBan, rBan
		}
		h.feed(event(typ, reason, "198.51.100.99", time.Duration(i)*time.Second))
		if i < 9 && h.flag("198.51.100.99", DenyProbe) != nil {
			t.Fatalf("flagged after %d hits", i+1)
		}
	}
	f := h.mustFlag("198.51.100.99", DenyProbe)
	if f.Action != ActionFlag || f.Ban.Banned || f.Ban.Skipped != "" || f.Evidence.Events != 12 {
		t.Fatalf("deny-probe flag %+v", f)
	}
	if len(h.bans.bans) != 0 {
		t.Fatalf("flag-only rule banned: %v", h.bans.bans)
	}
	// sparse hits (one every 10 s) never reach 10 in a minute
	h2 := newHarness(t, DefaultConfig())
	for i := 0; i < 50; i++ {
		h2.feed(event(evDeny, rDeny, "198.51.100.98", time.Duration(i)*10*time.Second))
	}
	h2.noFlags()
}

func TestBadFlags(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	for i := 0; i < 5; i++ {
		h.feed(event(evBad, rTCPFlags, "192.0.2.77", time.Duration(i)*time.Second, flags(0x29)))
	}
	h.noFlags()
	h.feed(event(evBad, rTCPFlags, "192.0.2.77", 5*time.Second, flags(0x00)))
	f := h.mustFlag("192.0.2.77", BadFlags)
	if f.Evidence.Events != 6 || !strings.Contains(f.Evidence.Summary, "latest NULL") {
		t.Fatalf("bad-flags flag %+v", f)
	}
}

// prefixOver is a prefix bucket over its limit: its event twice a second (two
// CPUs), named by the prefix.
func prefixOver(prefix string, from time.Duration, seconds int) []loader.Event {
	var out []loader.Event
	for i := 0; i < 2*seconds; i++ {
		out = append(out, event(evLimit, rPrefix, prefix, from+time.Duration(i)*500*time.Millisecond))
	}
	return out
}

func byTime(evs []loader.Event) []loader.Event {
	slices.SortStableFunc(evs, func(a, b loader.Event) int { return cmp.Compare(a.Ts, b.Ts) })
	return evs
}

func TestAggregate(t *testing.T) {
	t.Run("one /24 behind most of the limiting", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		evs := prefixOver("203.0.113.0", 0, 15)
		for i := 0; i < 15; i += 3 { // some other limiting: a client and the service
			evs = append(evs, event(evLimit, rPPS, "198.51.100.1", time.Duration(i)*time.Second))
			evs = append(evs, event(evLimit, rSvcPPS, "0.0.0.0", time.Duration(i)*time.Second, anon()))
		}
		h.feed(byTime(evs)...)
		f := h.mustFlag("203.0.113.0/24", Aggregate)
		if f.Evidence.Clients != 10 || f.Evidence.Share < 0.5 || f.Evidence.Events < 20 || f.Evidence.LimitedFor < 10*time.Second {
			t.Fatalf("aggregate evidence %+v", f.Evidence)
		}
		if f.Ban.Banned || len(h.bans.bans) != 0 {
			t.Fatal("aggregate is flag-only by default")
		}
		// the kernel's client table was walked once, not per event
		if h.clientsAsks != 1 {
			t.Fatalf("ClientsIn called %d times", h.clientsAsks)
		}
	})
	t.Run("too few clients in the prefix", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		h.clientsIn = 3
		h.feed(prefixOver("203.0.113.0", 0, 30)...)
		h.noFlags()
		// counted again only every clientsRecheck
		if h.clientsAsks < 2 || h.clientsAsks > 3 {
			t.Fatalf("ClientsIn called %d times in 30 s", h.clientsAsks)
		}
	})
	t.Run("limiting spread over many prefixes", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		var evs []loader.Event
		for p := 0; p < 4; p++ {
			evs = append(evs, prefixOver(fmt.Sprintf("198.51.%d.0", p), 0, 40)...)
		}
		h.feed(byTime(evs)...)
		h.noFlags()
	})
	t.Run("client-level limiting is flood's business", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		for i := 0; i < 100; i++ {
			h.feed(event(evLimit, rBPS, fmt.Sprintf("203.0.113.%d", i%50), time.Duration(i)*50*time.Millisecond))
		}
		h.noFlags()
		if h.d.Totals().Prefixes != 0 {
			t.Fatal("client events made prefix state")
		}
	})
	t.Run("connection limits count too", func(t *testing.T) {
		h := newHarness(t, DefaultConfig())
		for i := 0; i < 30; i++ {
			h.feed(event(evSyn, rPfxCPS, "2001:db8:77::", time.Duration(i)*500*time.Millisecond))
		}
		h.mustFlag("2001:db8:77::/48", Aggregate)
	})
	t.Run("ban action bans the prefix unless it is allow-listed", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Aggregate.Action = ActionBan
		for _, allowed := range []bool{false, true} {
			var allow []string
			if allowed {
				allow = []string{"203.0.113.255"}
			}
			h := newHarness(t, cfg, allow...)
			h.feed(prefixOver("203.0.113.0", 0, 15)...)
			f := h.mustFlag("203.0.113.0/24", Aggregate)
			if allowed && (f.Ban.Banned || f.Ban.Skipped != "allow-listed") {
				t.Fatalf("allowed prefix: %+v", f.Ban)
			}
			if !allowed && (!f.Ban.Banned || h.bans.bans[0].prefix != netip.MustParsePrefix("203.0.113.0/24")) {
				t.Fatalf("ban: %+v %v", f.Ban, h.bans.bans)
			}
		}
	})
	t.Run("without a client count", func(t *testing.T) {
		d, err := New(DefaultConfig(), Options{Logger: slog.New(slog.DiscardHandler), Wall: func(m uint64) time.Time { return wallBase.Add(time.Duration(m)) }})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range prefixOver("203.0.113.0", 0, 15) {
			d.Observe(&ev)
		}
		if fs := d.Flags(); len(fs) != 1 || fs[0].Reason != Aggregate || fs[0].Evidence.Clients != 0 {
			t.Fatalf("flags %+v", fs)
		}
	})
}

func TestAllowListedAttackerFlaggedNotBanned(t *testing.T) {
	h := newHarness(t, DefaultConfig(), "192.0.2.200")
	h.feed(flood("192.0.2.200", 0, 20, 1000)...)
	f := h.mustFlag("192.0.2.200", Flood)
	if f.Ban.Banned || f.Ban.Skipped != "allow-listed" || f.Action != ActionBan {
		t.Fatalf("allow-listed attacker: %+v", f)
	}
	if len(h.bans.bans) != 0 || h.d.Totals().BansSkipped != 1 {
		t.Fatalf("bans %v totals %+v", h.bans.bans, h.d.Totals())
	}
}

func TestMonitorModeFlagsWithoutBanning(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Monitor = true
	h := newHarness(t, cfg)
	h.feed(flood("192.0.2.201", 0, 20, 1000)...)
	for p := 0; p < 30; p++ {
		h.feed(event(evNoSvc, rNoSvc, "192.0.2.202", 20*time.Second+time.Duration(p)*time.Millisecond, port(uint16(2000+p))))
	}
	for _, subject := range []string{"192.0.2.201", "192.0.2.202"} {
		reason := Flood
		if subject == "192.0.2.202" {
			reason = Scan
		}
		if f := h.mustFlag(subject, reason); f.Ban.Banned || f.Ban.Skipped != "monitor mode" {
			t.Fatalf("%s: %+v", subject, f.Ban)
		}
	}
	if len(h.bans.bans) != 0 {
		t.Fatalf("monitor mode banned: %v", h.bans.bans)
	}

	// A service in monitor mode: its drops are passes, and so no ban either.
	h = newHarness(t, DefaultConfig())
	h.feed(flood("192.0.2.203", 0, 20, 1000, monitored())...)
	if f := h.mustFlag("192.0.2.203", Flood); f.Ban.Banned || f.Ban.Skipped != "the service is in monitor mode" {
		t.Fatalf("monitored service: %+v", f.Ban)
	}
	// SetMonitor switches a live detector
	h.d.SetMonitor(true)
	h.feed(flood("192.0.2.204", 30*time.Second, 20, 1000)...)
	if f := h.mustFlag("192.0.2.204", Flood); f.Ban.Skipped != "monitor mode" || len(h.bans.bans) != 0 {
		t.Fatalf("after SetMonitor: %+v", f.Ban)
	}
	// back to enforcing while the same flood goes on: that episode is banned
	h.d.SetMonitor(false)
	h.feed(flood("192.0.2.204", 50*time.Second, 5, 1000)...)
	if f := h.mustFlag("192.0.2.204", Flood); !f.Ban.Banned || len(h.bans.bans) != 1 {
		t.Fatalf("after switching back to enforce: %+v, bans %v", f.Ban, h.bans.bans)
	}
}

func TestRepeatOffenderTTLGrows(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Bans = BanPolicy{TTL: 10 * time.Minute, MaxTTL: 30 * time.Minute, Growth: 2, ForgetAfter: 6 * time.Hour}
	h := newHarness(t, cfg)
	at := time.Duration(0)
	wantTTLs := []time.Duration{10 * time.Minute, 20 * time.Minute, 30 * time.Minute, 30 * time.Minute}
	for i, want := range wantTTLs {
		h.feed(flood("192.0.2.50", at, 12, 500)...)
		if got := len(h.bans.bans); got != i+1 {
			t.Fatalf("round %d: %d bans", i, got)
		}
		if b := h.bans.bans[i]; b.ttl != want {
			t.Fatalf("round %d: ttl %v, want %v", i, b.ttl, want)
		}
		// banned: the client is quiet until the ban lapses, then comes back
		at += 12*time.Second + want + time.Minute
	}
	f := h.mustFlag("192.0.2.50", Flood)
	if f.Episodes != 4 || h.d.Totals().Flagged[Flood] != 4 {
		t.Fatalf("episodes %d, flagged %d", f.Episodes, h.d.Totals().Flagged[Flood])
	}
	// after ForgetAfter without a ban, it starts over
	at += 7 * time.Hour
	h.feed(flood("192.0.2.50", at, 12, 500)...)
	if b := h.bans.bans[len(h.bans.bans)-1]; b.ttl != 10*time.Minute {
		t.Fatalf("after forgetting: ttl %v", b.ttl)
	}
}

// A ban shorter than the window: when it lapses and the flood goes on, the
// client is banned again at once, for longer.
func TestRebanWhenShortBanLapses(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Bans = BanPolicy{TTL: 20 * time.Second, Growth: 3, MaxTTL: time.Hour}
	h := newHarness(t, cfg)
	h.feed(flood("192.0.2.51", 0, 11, 100)...) // banned at 10 s until 30 s
	if len(h.bans.bans) != 1 {
		t.Fatalf("bans %v", h.bans.bans)
	}
	h.feed(flood("192.0.2.51", 20*time.Second, 5, 100)...) // still banned: no ban again
	if len(h.bans.bans) != 1 {
		t.Fatalf("rebanned while the ban holds: %v", h.bans.bans)
	}
	h.feed(event(evLimit, rPPS, "192.0.2.51", 31*time.Second, count(5000)))
	if len(h.bans.bans) != 2 || h.bans.bans[1].ttl != time.Minute {
		t.Fatalf("bans after lapse %v", h.bans.bans)
	}
}

func TestBanErrorIsRecorded(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.bans.err = errors.New("bans map full")
	h.feed(flood("192.0.2.60", 0, 11, 10)...)
	f := h.mustFlag("192.0.2.60", Flood)
	if f.Ban.Banned || f.Ban.Error != "bans map full" || h.d.Totals().BanErrors != 1 {
		t.Fatalf("ban error: %+v", f.Ban)
	}
	if !strings.Contains(f.Ban.String(), "ban failed") {
		t.Fatal(f.Ban.String())
	}
}

func TestNoBannerFlagsOnly(t *testing.T) {
	d, err := New(DefaultConfig(), Options{Now: func() uint64 { return uint64(t0) }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range flood("192.0.2.61", 0, 11, 10) {
		d.Observe(&ev)
	}
	fs := d.Flags()
	if len(fs) != 1 || fs[0].Ban.Skipped != "no banner configured" {
		t.Fatalf("flags %+v", fs)
	}
}

func TestDisabledRulesStaySilent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Flood.Enabled, cfg.Scan.Enabled = false, false
	h := newHarness(t, cfg)
	h.feed(flood("192.0.2.62", 0, 30, 100)...)
	for p := 0; p < 50; p++ {
		h.feed(event(evNoSvc, rNoSvc, "192.0.2.63", 30*time.Second, port(uint16(p+1))))
	}
	h.noFlags()
}

func TestDropCountsSurviveReorderingAndResets(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	evs := []loader.Event{
		event(evSyn, rCPS, "192.0.2.70", 0, count(10)),                        // first seen: 1
		event(evSyn, rCPS, "192.0.2.70", time.Second, count(60)),              // +50
		event(evSyn, rCPS, "192.0.2.70", time.Second+1, count(55)),            // another CPU, late: +0
		event(evSyn, rCPS, "192.0.2.70", 2*time.Second, count(110)),           // +50
		event(evSyn, rCPS, "192.0.2.70", 3*time.Second, count(20)),            // kernel entry recreated: +20
		event(evSyn, rCPS, "192.0.2.70", 4*time.Second, count(99)),            // +79
		event(evSyn, rCPS, "192.0.2.70", 4*time.Second, count(5), service(2)), // other service: +1
	}
	h.feed(evs...)
	c, _ := h.d.clients.peek(addrKey(netip.MustParseAddr("192.0.2.70").As16()))
	if c == nil || c.syn.sum != 1+50+0+50+20+79+1 {
		t.Fatalf("refused SYNs counted: %+v", c.syn)
	}
}

func TestMemoryBounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxClients, cfg.MaxPrefixes, cfg.MaxFlags = 100, 10, 5
	cfg.Scan.Ports = 1
	h := newHarness(t, cfg)
	for i := 0; i < 10000; i++ {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		at := time.Duration(i) * time.Millisecond
		h.feed(event(evNoSvc, rNoSvc, src.String(), at, port(1)), event(evNoSvc, rNoSvc, src.String(), at, port(2)))
		h.feed(event(evLimit, rPrefix, src.String(), at))
	}
	tot := h.d.Totals()
	if tot.Clients > 100 || tot.Prefixes > 10 || tot.Flags > 5 {
		t.Fatalf("caps exceeded: %+v", tot)
	}
	if tot.Evicted == 0 || tot.Flagged[Scan] != 10000 {
		t.Fatalf("totals %+v", tot)
	}
	// idle state goes; flags stay for their retention
	h.clock += 2 * time.Minute
	h.d.Prune()
	if tot := h.d.Totals(); tot.Clients != 0 || tot.Prefixes != 0 || tot.Flags != 5 {
		t.Fatalf("after idle prune: %+v", tot)
	}
	h.clock += cfg.FlagRetention
	h.d.Prune()
	if tot := h.d.Totals(); tot.Flags != 0 {
		t.Fatalf("flags past retention: %d", tot.Flags)
	}
}

// A source seen once (a random-source flood of SYNs to closed ports, deny
// hits, invalid flags) costs no client entry; its second event counts both.
func TestOneEventSourcesStayOutOfTheClientTable(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	for i := 0; i < 20000; i++ {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
		typ, reason := []loader.GuardAgEventType{evNoSvc, evDeny, evBad}[i%3], []loader.GuardAgReason{rNoSvc, rDeny, rTCPFlags}[i%3]
		h.feed(event(typ, reason, src, time.Duration(i)*time.Microsecond, port(uint16(i))))
	}
	if tot := h.d.Totals(); tot.Clients != 0 || tot.Flags != 0 {
		t.Fatalf("one-event sources tracked: %+v", tot)
	}
	// 21 ports from one source, interleaved with that flood: the first port
	// is replayed when the second arrives, so the scan counts all 21
	for p := 0; p < 21; p++ {
		h.feed(event(evNoSvc, rNoSvc, "203.0.113.70", 20*time.Millisecond+time.Duration(p)*time.Millisecond, port(uint16(5000+p))))
		src := netip.AddrFrom4([4]byte{10, 9, 0, byte(p)}).String()
		h.feed(event(evNoSvc, rNoSvc, src, 20*time.Millisecond+time.Duration(p)*time.Millisecond, port(1)))
	}
	f := h.mustFlag("203.0.113.70", Scan)
	if f.Evidence.Ports != 21 || f.Evidence.PortSample[0] != 5000 {
		t.Fatalf("scan evidence %+v", f.Evidence)
	}
	if tot := h.d.Totals(); tot.Clients != 1 {
		t.Fatalf("clients %d, want the scanner only", tot.Clients)
	}
}

func TestForget(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.feed(flood("192.0.2.80", 0, 11, 10)...)
	p := netip.MustParsePrefix("192.0.2.80/32")
	if err := h.d.Forget(p); err != nil {
		t.Fatal(err)
	}
	if len(h.d.Flags()) != 0 {
		t.Fatal("flag kept")
	}
	if err := h.d.Forget(p); !errors.Is(err, ErrNoFlag) {
		t.Fatalf("second forget: %v", err)
	}
	// the offence history went too: the next ban is a first one
	h.feed(flood("192.0.2.80", 11*time.Minute, 11, 10)...)
	if b := h.bans.bans[len(h.bans.bans)-1]; b.ttl != 10*time.Minute {
		t.Fatalf("ttl after forget %v", b.ttl)
	}
}

func TestFlagJSON(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.feed(flood("192.0.2.90", 0, 11, 10)...)
	b, err := json.Marshal(h.d.Flags())
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	f := got[0]
	ev := f["evidence"].(map[string]any)
	ban := f["ban"].(map[string]any)
	if f["prefix"] != "192.0.2.90/32" || f["reason"] != "flood" || ev["window"] != "1m0s" ||
		ev["limited_for"] != "11s" || ban["ttl"] != "10m0s" || ban["banned"] != true || ev["summary"] == "" {
		t.Fatalf("json %s", b)
	}
}

func TestFlagJSONRoundTrip(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.feed(flood("192.0.2.92", 0, 12, 10)...)
	want := h.d.Flags()
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got []Flag
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Evidence.Window != time.Minute || got[0].Evidence.LimitedFor != 12*time.Second ||
		got[0].Ban.TTL != 10*time.Minute || !got[0].Ban.Expires.Equal(want[0].Ban.Expires) || got[0].Evidence.Summary != want[0].Evidence.Summary {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	var bad Flag
	if err := json.Unmarshal([]byte(`{"evidence":{"window":"soon"}}`), &bad); err == nil {
		t.Fatal("a bad duration decoded")
	}
}

func TestConfigValidation(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config (all defaults) invalid: %v", err)
	}
	bad := DefaultConfig()
	bad.Flood.Action = "kill"
	bad.Flood.LimitedFor = 2 * time.Minute
	bad.Aggregate.Share = 1.5
	bad.Bans.Growth = 0.5
	bad.Bans.MaxTTL = time.Minute
	bad.Scan.Window = 10 * time.Millisecond
	bad.ClientBits4 = 33
	err := bad.Validate()
	for _, want := range []string{`flood: action "kill"`, "flood: limitedFor 2m0s", "aggregate: share 1.5",
		"bans: growth 0.5", "bans: maxTTL 1m0s is shorter", "scan: window 10ms is shorter", "IPv4 key lengths"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if _, err := New(bad, Options{}); err == nil {
		t.Fatal("New accepted a bad config")
	}
	h := newHarness(t, DefaultConfig())
	if err := h.d.SetConfig(bad); err == nil {
		t.Fatal("SetConfig accepted a bad config")
	}
	// a reload keeps the flags
	h.feed(flood("192.0.2.91", 0, 11, 10)...)
	cfg := DefaultConfig()
	cfg.Flood.Window = 2 * time.Minute
	if err := h.d.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	h.mustFlag("192.0.2.91", Flood)
	if h.d.Config().Flood.Window != 2*time.Minute {
		t.Fatal("config not replaced")
	}
}

func TestReasonCodes(t *testing.T) {
	seen := map[uint32]bool{}
	for _, r := range Reasons() {
		c := r.Code()
		if c == 0 || seen[c] {
			t.Fatalf("%s: code %d", r, c)
		}
		seen[c] = true
		if back, ok := ReasonFromCode(c); !ok || back != r {
			t.Fatalf("%s: code %d back to %q", r, c, back)
		}
	}
	if _, ok := ReasonFromCode(1); ok {
		t.Fatal("code 1 is not the detector's")
	}
	if Reason("nope").Code() != 0 {
		t.Fatal("unknown reason has a code")
	}
	// the kernel keeps these codes across restarts: a row moved in the table
	// would rename the bans already made
	for r, code := range map[Reason]uint32{Flood: 0x100, Aggregate: 0x105, AuthFailures: 0x106, ErrorBurst: 0x109} {
		if r.Code() != code {
			t.Errorf("%s: code %#x, was %#x", r, r.Code(), code)
		}
	}
	// every row's rule is where its reason says
	cfg := DefaultConfig()
	for _, s := range table {
		r := s.rule(&cfg)
		r.Window = 42 * time.Hour
		if cfg.rule(s.reason).Window != 42*time.Hour {
			t.Errorf("%s: the table's rule is not the config's", s.reason)
		}
	}
}

// the loader's reason numbering is what limited() decodes levels from
func TestKernelReasonLayout(t *testing.T) {
	if rServiceCPS-rClientPPS != 3*kinds-1 || loader.Reason(rPrefix).String() != "prefix_pps" {
		t.Fatal("reason layout changed: update limited()")
	}
}
