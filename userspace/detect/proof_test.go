package detect

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
)

// forged is every kind of packet evidence one can forge from a victim's
// address, from from on: SYNs to 40 closed ports, a SYN flood and a UDP flood
// over its own limits, invalid flags and deny-list hits.
func forged(victim string, from time.Duration) []loader.Event {
	var evs []loader.Event
	for p := 0; p < 40; p++ {
		evs = append(evs, event(evNoSvc, rNoSvc, victim, from+time.Duration(p)*10*time.Millisecond, port(uint16(1000+p))))
	}
	for i := 0; i < 15; i++ {
		at := from + time.Duration(i)*time.Second
		evs = append(evs, event(evBad, rTCPFlags, victim, at, flags(0x29)), event(evDeny, rDeny, victim, at))
		// one client's drop count is followed for one service at a time:
		// the SYN flood first, then the UDP flood
		if i < 5 {
			evs = append(evs, event(evSyn, rCPS, victim, at, count(1+uint64(i)*50)))
		}
	}
	evs = append(evs, flood(victim, from+5*time.Second, 12, 1000, service(4))...)
	return byTime(evs)
}

// banEverything: every packet rule bans, so that only the proof stands
// between forged evidence and a ban.
func banEverything() Config {
	cfg := DefaultConfig()
	for _, r := range []*Rule{&cfg.DenyProbe.Rule, &cfg.BadFlags.Rule, &cfg.Aggregate.Rule} {
		r.Action = ActionBan
	}
	return cfg
}

// Forged packets from a victim that never completed a handshake flag it,
// saying so, and ban nothing; the same evidence from a proven source bans.
func TestUnprovenSourceFlaggedNotBanned(t *testing.T) {
	h := newHarness(t, banEverything())
	h.proveAll = false
	h.feed(forged("192.0.2.10", 0)...)
	for _, r := range []Reason{Scan, SYNFlood, Flood, BadFlags, DenyProbe} {
		f := h.mustFlag("192.0.2.10", r)
		if f.Proven || f.Ban.Banned || f.Ban.Skipped != skipUnproven || !strings.Contains(f.Ban.String(), "unproven") {
			t.Errorf("%s: %+v", r, f)
		}
	}
	if len(h.bans.bans) != 0 {
		t.Fatalf("forged packets banned %v", h.bans.bans)
	}
	if tot := h.d.Totals(); tot.Unproven != 5 || tot.BansSkipped != 5 {
		t.Errorf("totals %+v", tot)
	}
	// again: one skip per episode, the proof asked about at most once a
	// second per flag, not per event
	h.feed(forged("192.0.2.10", 15*time.Second)...)
	episodes := 0
	for _, f := range h.d.Flags() {
		episodes += f.Episodes
	}
	if tot := h.d.Totals(); tot.Unproven != uint64(episodes) || tot.Events < 150 {
		t.Errorf("%d episodes, totals %+v", episodes, tot)
	}
	if h.proofAsks > 5*32 {
		t.Errorf("%d proof lookups for 30 s of evidence on 5 flags", h.proofAsks)
	}

	// the same from a source with a recent handshake
	h.prove("192.0.2.20/32", -time.Minute)
	h.feed(forged("192.0.2.20", 40*time.Second)...)
	for _, r := range []Reason{Scan, SYNFlood, Flood, BadFlags, DenyProbe} {
		if f := h.mustFlag("192.0.2.20", r); !f.Proven || !f.Ban.Banned {
			t.Errorf("proven %s: %+v", r, f)
		}
	}
	// ... but a handshake longer ago than proofTTL no longer proves it
	h.prove("192.0.2.30/32", 0)
	h.feed(forged("192.0.2.30", DefaultConfig().Bans.ProofTTL+time.Minute)...)
	if f := h.mustFlag("192.0.2.30", Scan); f.Proven || f.Ban.Banned {
		t.Errorf("a proof past proofTTL: %+v", f)
	}
}

// A source that proves itself while its episode goes on is banned then.
func TestProofDuringTheEpisodeBans(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.proveAll = false
	evs := flood("198.51.100.5", 0, 30, 100)
	h.feed(evs[:15]...)
	if f := h.mustFlag("198.51.100.5", Flood); f.Ban.Skipped != skipUnproven {
		t.Fatalf("before the proof: %+v", f.Ban)
	}
	h.prove("198.51.100.5/32", 15*time.Second)
	h.feed(evs[15:17]...)
	f := h.mustFlag("198.51.100.5", Flood)
	if !f.Proven || !f.Ban.Banned || f.Episodes != 1 || len(h.bans.bans) != 1 {
		t.Fatalf("after the proof: %+v, bans %v", f, h.bans.bans)
	}
}

// banUnproven opts a rule in, and only that rule.
func TestBanUnproven(t *testing.T) {
	cfg := banEverything()
	cfg.Scan.BanUnproven = true
	h := newHarness(t, cfg)
	h.proveAll = false
	h.feed(forged("203.0.113.9", 0)...)
	if f := h.mustFlag("203.0.113.9", Scan); f.Proven || !f.Ban.Banned {
		t.Errorf("scan with banUnproven: %+v", f)
	}
	if f := h.mustFlag("203.0.113.9", SYNFlood); f.Ban.Banned {
		t.Errorf("syn-flood without banUnproven: %+v", f)
	}
	if len(h.bans.bans) != 1 || h.bans.bans[0].reason != Scan {
		t.Fatalf("bans %v", h.bans.bans)
	}
}

// The API rules' evidence comes over completed connections: it bans without
// a packet-level proof, and says it is proven. A service is never proven.
func TestProofOfAPIAndServices(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.proveAll = false
	for i := 0; i < 21; i++ {
		req(h, "192.0.2.44", time.Duration(i)*time.Second, "POST", "/login", 401)
	}
	if f := h.mustFlag("192.0.2.44", AuthFailures); !f.Proven || !f.Ban.Banned {
		t.Errorf("auth-failures: %+v", f)
	}
	for i := 0; i < 12; i++ {
		h.feed(event(evSyn, rSvcCPS, "0.0.0.0", time.Duration(i)*500*time.Millisecond, service(3), anon()))
	}
	if f := h.mustFlag("service 3 (many sources)", SYNFlood); f.Proven {
		t.Errorf("a service flag says proven: %+v", f)
	}
	if h.proofAsks != 0 {
		t.Errorf("%d proof lookups for API and service flags", h.proofAsks)
	}
}

// An aggregate ban covers a prefix: the proof asked about is the prefix's.
func TestAggregateProof(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Aggregate.Action = ActionBan
	for _, proven := range []bool{false, true} {
		t.Run(fmt.Sprint("proven ", proven), func(t *testing.T) {
			h := newHarness(t, cfg)
			h.proveAll = false
			if proven {
				h.prove("203.0.113.77/32", 0)
			}
			h.feed(prefixOver("203.0.113.0", 0, 15)...)
			f := h.mustFlag("203.0.113.0/24", Aggregate)
			if f.Proven != proven || f.Ban.Banned != proven {
				t.Fatalf("%+v", f)
			}
		})
	}
}

// At most Bans.MaxPerMinute bans in any minute, API bans included: past it,
// flags are held back and counted, and banned once the minute has room and
// their episode goes on.
func TestBanRateCap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Bans.MaxPerMinute = 3
	cfg.Scan.Window = 2 * time.Minute // the scans below go on for a minute
	h := newHarness(t, cfg)
	scan := func(src string, at time.Duration) {
		for p := 0; p < 25; p++ {
			h.feed(event(evNoSvc, rNoSvc, src, at+time.Duration(p)*time.Millisecond, port(uint16(1000+p))))
		}
	}
	for i := 0; i < 2; i++ {
		scan(fmt.Sprintf("198.51.100.%d", i+1), time.Duration(i)*time.Second)
	}
	for i := 0; i < 21; i++ { // a third ban, from the API layer
		req(h, "192.0.2.44", 2*time.Second+time.Duration(i)*time.Millisecond, "POST", "/login", 401)
	}
	scan("198.51.100.3", 3*time.Second)
	scan("198.51.100.4", 4*time.Second)
	if len(h.bans.bans) != 3 {
		t.Fatalf("bans %v, want 3", h.bans.bans)
	}
	for _, src := range []string{"198.51.100.3", "198.51.100.4"} {
		if f := h.mustFlag(src, Scan); f.Ban.Banned || f.Ban.Skipped != skipCapped {
			t.Errorf("%s over the cap: %+v", src, f.Ban)
		}
	}
	if tot := h.d.Totals(); tot.Capped != 2 {
		t.Errorf("totals %+v", tot)
	}
	// a minute after the first ban: one has room again, the scan of .3
	// going on takes it, .4's waits
	for p := 0; p < 5; p++ {
		h.feed(event(evNoSvc, rNoSvc, "198.51.100.3", 60*time.Second+time.Duration(p)*time.Second, port(uint16(2000+p))))
	}
	if f := h.mustFlag("198.51.100.3", Scan); !f.Ban.Banned || f.Episodes != 1 {
		t.Errorf("the capped scanner, the cap lifted: %+v", f)
	}
	if len(h.bans.bans) != 4 || h.d.Totals().Capped != 2 {
		t.Errorf("bans %v, totals %+v", h.bans.bans, h.d.Totals())
	}
}
