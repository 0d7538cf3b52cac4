package detect

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
)

// t0 is where synthetic streams start: kernel time well after boot.
const t0 = 1000 * time.Second

var wallBase = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type ban struct {
	prefix netip.Prefix
	ttl    time.Duration
	reason Reason
}

type recorder struct {
	bans []ban
	err  error
}

func (r *recorder) Ban(p netip.Prefix, ttl time.Duration, reason Reason, evidence string) error {
	if evidence == "" {
		return errors.New("a ban without evidence")
	}
	if r.err != nil {
		return r.err
	}
	r.bans = append(r.bans, ban{p, ttl, reason})
	return nil
}

// harness is a Detector on a clock the test moves.
type harness struct {
	t     *testing.T
	d     *Detector
	bans  *recorder
	clock time.Duration
	// clientsIn answers ClientsIn; counts how often it was asked
	clientsIn   int
	clientsAsks int
	// proofs answer ProofOf: when a source inside the prefix asked about
	// completed a handshake. proveAll (the default) proves every source now,
	// for the tests that are about the rules, not the proof.
	proofs    map[netip.Prefix]time.Duration
	proveAll  bool
	proofAsks int
}

// prove records a completed handshake from p at time at (relative to t0).
func (h *harness) prove(p string, at time.Duration) {
	h.proveAll = false
	h.proofs[netip.MustParsePrefix(p)] = t0 + at
}

func (h *harness) proofOf(p netip.Prefix) (int64, bool) {
	h.proofAsks++
	if h.proveAll {
		return int64(h.clock), true
	}
	var latest time.Duration
	found := false
	for q, at := range h.proofs {
		if p.Overlaps(q) && (!found || at > latest) {
			latest, found = at, true
		}
	}
	return int64(latest), found
}

func newHarness(t *testing.T, cfg Config, allowed ...string) *harness {
	t.Helper()
	h := &harness{t: t, bans: &recorder{}, clock: t0, clientsIn: 10, proofs: map[netip.Prefix]time.Duration{}, proveAll: true}
	allow := map[netip.Addr]bool{}
	for _, a := range allowed {
		allow[netip.MustParseAddr(a)] = true
	}
	d, err := New(cfg, Options{
		Banner:    h.bans,
		IsAllowed: func(a netip.Addr) bool { return allow[a] },
		Now:       func() uint64 { return uint64(h.clock) },
		Wall:      func(mono uint64) time.Time { return wallBase.Add(time.Duration(mono)) },
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		ClientsIn: func(netip.Prefix, time.Time) (int, error) { h.clientsAsks++; return h.clientsIn, nil },
		ProofOf:   h.proofOf,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.d = d
	return h
}

type evOpt func(*loader.Event)

func count(n uint64) evOpt   { return func(e *loader.Event) { e.Count = n } }
func port(p uint16) evOpt    { return func(e *loader.Event) { e.Dport = p } }
func service(s uint32) evOpt { return func(e *loader.Event) { e.Service = s } }
func flags(f uint8) evOpt    { return func(e *loader.Event) { e.TcpFlags = f } }
func monitored() evOpt       { return func(e *loader.Event) { e.Action = uint8(loader.ActionMonitor) } }

// anon is a service-level event: the kernel names no source for a bucket that
// many sources fill.
func anon() evOpt { return func(e *loader.Event) { e.Addr = [16]byte{} } }

// event builds what the kernel would send at time at (relative to t0).
func event(typ loader.GuardAgEventType, reason loader.GuardAgReason, src string, at time.Duration, opts ...evOpt) loader.Event {
	a := netip.MustParseAddr(src)
	fam := uint8(6)
	if a.Is4() {
		fam = 4
	}
	ev := loader.Event{
		Ts: uint64(t0 + at), Addr: a.As16(), Count: 1, Service: 1, Dport: 443,
		Type: uint8(typ), Reason: uint8(reason), Family: fam, Proto: loader.ProtoTCP,
		Action: uint8(loader.ActionDrop),
	}
	if reason == loader.GuardAgReasonAG_R_NO_SERVICE {
		ev.Action = uint8(loader.ActionPass)
		ev.Service = 0
		ev.TcpFlags = 0x02
	}
	for _, o := range opts {
		o(&ev)
	}
	return ev
}

const (
	evLimit   = loader.GuardAgEventTypeAG_EV_LIMITED
	evSyn     = loader.GuardAgEventTypeAG_EV_SYN_LIMITED
	evDeny    = loader.GuardAgEventTypeAG_EV_DENY_HIT
	evBan     = loader.GuardAgEventTypeAG_EV_BAN_HIT
	evBad     = loader.GuardAgEventTypeAG_EV_BAD_FLAGS
	evNoSvc   = loader.GuardAgEventTypeAG_EV_NO_SERVICE
	rPPS      = loader.GuardAgReasonAG_R_CLIENT_PPS
	rBPS      = loader.GuardAgReasonAG_R_CLIENT_BPS
	rCPS      = loader.GuardAgReasonAG_R_CLIENT_CPS
	rPrefix   = loader.GuardAgReasonAG_R_PREFIX_PPS
	rPfxCPS   = loader.GuardAgReasonAG_R_PREFIX_CPS
	rSvcPPS   = loader.GuardAgReasonAG_R_SERVICE_PPS
	rSvcCPS   = loader.GuardAgReasonAG_R_SERVICE_CPS
	rNoSvc    = loader.GuardAgReasonAG_R_NO_SERVICE
	rDeny     = loader.GuardAgReasonAG_R_DENY
	rBan      = loader.GuardAgReasonAG_R_BAN
	rTCPFlags = loader.GuardAgReasonAG_R_TCP_FLAGS
)

// feed observes events in order, moving the clock along.
func (h *harness) feed(evs ...loader.Event) {
	for i := range evs {
		h.clock = max(h.clock, time.Duration(evs[i].Ts))
		h.d.Observe(&evs[i])
	}
}

// flag returns the flag for subject and reason, or nil.
func (h *harness) flag(subject string, reason Reason) *Flag {
	for _, f := range h.d.Flags() {
		if f.Subject() == subject && f.Reason == reason {
			return &f
		}
	}
	return nil
}

func (h *harness) mustFlag(subject string, reason Reason) Flag {
	h.t.Helper()
	f := h.flag(subject, reason)
	if f == nil {
		h.t.Fatalf("%s not flagged %s; flags: %s", subject, reason, h.describe())
	}
	return *f
}

func (h *harness) noFlags() {
	h.t.Helper()
	if fs := h.d.Flags(); len(fs) != 0 {
		h.t.Fatalf("unexpected flags: %s", h.describe())
	}
	if len(h.bans.bans) != 0 {
		h.t.Fatalf("unexpected bans: %v", h.bans.bans)
	}
}

func (h *harness) describe() string {
	s := ""
	for _, f := range h.d.Flags() {
		s += fmt.Sprintf("\n  %s %s: %s [%s]", f.Subject(), f.Reason, f.Evidence.Summary, f.Ban)
	}
	if s == "" {
		return "none"
	}
	return s
}

// flood is a client limited every second for n seconds, its drop count
// growing by perSecond.
func flood(src string, from time.Duration, n int, perSecond uint64, opts ...evOpt) []loader.Event {
	var out []loader.Event
	for i := 0; i < n; i++ {
		o := append([]evOpt{count(1 + uint64(i)*perSecond)}, opts...)
		out = append(out, event(evLimit, rPPS, src, from+time.Duration(i)*time.Second, o...))
	}
	return out
}
