// Package detect turns the datapath's events into flagged clients and timed
// bans. Each behaviour is a named Reason with its own rule (rules.go): a
// sliding window over the kernel's (throttled) events or the API layer's
// signals, a threshold, and an action, flag or ban.
//
// The files follow the detector's flow: detector.go is its lifecycle (build,
// configure, observe, prune, read); packet.go and api.go count the evidence of
// the packet and API rules, over the client tables of clients.go; episode.go
// turns a threshold crossed into a flag and its episodes; decide.go decides
// whether a flag bans, and ttl.go for how long.
//
// Time comes from the events themselves (the kernel's CLOCK_MONOTONIC stamps),
// so the same stream always gives the same flags, however fast it is replayed.
// Memory is bounded: clients, prefixes, flags and offenders each have a cap,
// and state idle for longer than every window is dropped.
package detect

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/attack"
	"golang.org/x/sys/unix"
)

// Banner applies a ban. The daemon decides how (loader.Datapath.Ban with an
// expiry, and a record of the reason and evidence); it must not call back into
// the Detector.
type Banner interface {
	Ban(p netip.Prefix, ttl time.Duration, reason Reason, evidence string) error
}

// BanFunc adapts a function to Banner.
type BanFunc func(p netip.Prefix, ttl time.Duration, reason Reason, evidence string) error

// Ban calls f.
func (f BanFunc) Ban(p netip.Prefix, ttl time.Duration, reason Reason, evidence string) error {
	return f(p, ttl, reason, evidence)
}

// Options are the Detector's collaborators. Zero values take the defaults.
type Options struct {
	// Banner applies bans; nil means rules with action ban only flag.
	Banner Banner
	// IsAllowed reports clients that must never be banned (they are still
	// flagged). The kernel's allow list skips every check, so those clients
	// make no events; this is for addresses that must stay reachable anyway.
	IsAllowed func(netip.Addr) bool
	// Now is the current CLOCK_MONOTONIC time in ns (default: the system's).
	Now func() uint64
	// Wall converts a kernel timestamp to wall time (default loader.MonoToWall).
	Wall func(mono uint64) time.Time
	// Logger gets one line per flag raised (default slog.Default()).
	Logger *slog.Logger
	// NeverBan reports subjects no ban may cover (the host's own addresses,
	// its gateways and resolvers, ...), and why: a ban on p would cover such
	// an address. They are flagged, saying why, and never banned.
	NeverBan func(p netip.Prefix) (why string, ok bool)
	// ProofOf is when a source inside p last completed a TCP handshake with
	// this host (CLOCK_MONOTONIC ns), as the daemon reads it from the
	// datapath's proven sources (loader.Datapath.SourceProof): p is a client
	// key, or a prefix for aggregate. nil means nothing is ever proven, so
	// packet rules ban only with BanUnproven.
	ProofOf func(p netip.Prefix) (mono int64, ok bool)
	// ClientsIn counts the distinct client keys inside p seen since then in
	// the kernel's per-client table (the daemon walks loader.Datapath.Clients).
	// The aggregate rule needs it for MinClients: prefix events name only the
	// prefix. It is called at most once per prefix per clientsRecheck; nil
	// means MinClients is not checked.
	ClientsIn func(p netip.Prefix, since time.Time) (int, error)
}

// Totals are the Detector's counters since it started.
type Totals struct {
	// Flagged counts flags raised (a flag that starts again counts again).
	Flagged map[Reason]uint64
	// Bans made, bans the Banner refused, and ban rules that did not ban
	// (monitor mode, allow-listed, unproven, nothing to ban), once per episode.
	Bans, BanErrors, BansSkipped uint64
	// Unproven counts the episodes of packet ban rules held back because
	// their source never proved itself, NeverBan those of subjects in the
	// never-ban set, Capped those over the ban-rate cap (all are part of
	// BansSkipped).
	Unproven, NeverBan, Capped uint64
	// Events observed.
	Events uint64
	// Clients evicted to stay under MaxClients while still within a window.
	Evicted uint64
	// What is tracked now.
	Clients, Prefixes, Flags int
}

// Detector is safe for concurrent use: the event consumer calls Observe while
// the control API lists Flags.
type Detector struct {
	mu   sync.Mutex
	cfg  Config
	opts Options
	log  *slog.Logger

	// spans cuts each reason's window into buckets, by table row
	spans [numReasons]span
	// idle: packet-side state unseen for this long is in no window any more
	idle int64

	// the packet rules' state (packet.go, clients.go)
	clients  *lru[addrKey, *client]
	prefixes *lru[addrKey, *prefixState]
	services map[uint32]*serviceState
	aggTotal ring
	first    []sighting
	// the API rules' state (api.go); matcher is api.matcher, published for
	// readers without the lock (Matcher)
	api     apiState
	matcher atomic.Pointer[attack.Matcher]

	// flags and their episodes (episode.go), repeat offenders (ttl.go),
	// the times of the bans made within the last minute (decide.go)
	flags     *lru[flagKey, *flagState]
	offenders *lru[netip.Prefix, *offender]
	recent    []int64

	clock, lastPrune int64

	flagged                                    [numReasons]uint64
	bans, banErrors, banSkipped, seen, evicted uint64
	unproven, neverBan, capped                 uint64
}

// New returns a Detector; cfg's zero fields take DefaultConfig's values.
func New(cfg Config, opts Options) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("detection config: %w", err)
	}
	if opts.Now == nil {
		opts.Now = monotonicNow
	}
	if opts.Wall == nil {
		opts.Wall = loader.MonoToWall
	}
	if opts.IsAllowed == nil {
		opts.IsAllowed = func(netip.Addr) bool { return false }
	}
	if opts.NeverBan == nil {
		opts.NeverBan = func(netip.Prefix) (string, bool) { return "", false }
	}
	d := &Detector{
		opts:      opts,
		log:       opts.Logger,
		clients:   newLRU[addrKey, *client](),
		prefixes:  newLRU[addrKey, *prefixState](),
		services:  map[uint32]*serviceState{},
		flags:     newLRU[flagKey, *flagState](),
		offenders: newLRU[netip.Prefix, *offender](),
		first:     make([]sighting, firstSightSlots),
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	cfg = cfg.withDefaults()
	m, err := attack.Compile(cfg.API.matcherConfig())
	if err != nil {
		return nil, fmt.Errorf("detection config: %w", err)
	}
	d.setConfig(cfg, m)
	return d, nil
}

func monotonicNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("CLOCK_MONOTONIC unavailable: " + err.Error())
	}
	return uint64(ts.Nano())
}

// SetConfig replaces the thresholds (a policy reload). Flags and offenders are
// kept; per-client windows are restarted if their shape changed.
func (d *Detector) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("detection config: %w", err)
	}
	cfg = cfg.withDefaults()
	m, err := attack.Compile(cfg.API.matcherConfig())
	if err != nil {
		return fmt.Errorf("detection config: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setConfig(cfg, m)
	return nil
}

func (d *Detector) setConfig(cfg Config, m *attack.Matcher) {
	d.api.matcher = m
	d.matcher.Store(m)
	var spans [numReasons]span
	packetChanged, apiChanged := false, false
	d.idle, d.api.idle = 0, 0
	for i, s := range table {
		sp := newSpan(s.rule(&cfg).Window, cfg.EventInterval)
		spans[i] = sp
		changed := sp != d.spans[i]
		idle := int64(sp.window) + sp.bucket
		if s.layer == packetLayer {
			packetChanged = packetChanged || changed
			d.idle = max(d.idle, idle)
		} else {
			apiChanged = apiChanged || changed
			d.api.idle = max(d.api.idle, idle)
		}
	}
	clientKey := cfg.ClientBits4 != d.cfg.ClientBits4 || cfg.ClientBits6 != d.cfg.ClientBits6
	prefixKey := cfg.PrefixBits4 != d.cfg.PrefixBits4 || cfg.PrefixBits6 != d.cfg.PrefixBits6
	if packetChanged || clientKey || prefixKey {
		d.clients = newLRU[addrKey, *client]()
		d.prefixes = newLRU[addrKey, *prefixState]()
		d.services = map[uint32]*serviceState{}
		d.aggTotal = ring{}
		clear(d.first)
	}
	if d.api.clients == nil || apiChanged || clientKey {
		d.resetAPI()
	}
	d.spans = spans
	d.cfg = cfg
}

// span is reason r's window, in buckets.
func (d *Detector) span(r Reason) span { return d.spans[r.index()] }

// Config is the configuration in force, defaults filled in.
func (d *Detector) Config() Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// SetMonitor switches monitor mode (flag, never ban) without touching the rest.
func (d *Detector) SetMonitor(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfg.Monitor = on
}

// Observe feeds one event. Events should come roughly in kernel order (the
// ring buffer's); ones older than a window are ignored by that window.
func (d *Detector) Observe(ev *loader.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen++
	now := int64(ev.Ts)
	d.clock = max(d.clock, now)
	switch ev.Type {
	case evLimited, evSynLimited:
		d.limited(ev, now)
	case evDenyHit, evBanHit, evBadFlags, evNoService:
		d.sighted(ev, now)
	}
	if now-d.lastPrune >= int64(time.Second) {
		d.prune(now)
		d.lastPrune = now
	}
}

func (d *Detector) now() int64 {
	return max(d.clock, int64(d.opts.Now()))
}

// Prune drops idle state and expired flags now; Observe also prunes as event
// time moves on, so the daemon only needs this when events stop.
func (d *Detector) Prune() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.prune(d.now())
}

func (d *Detector) prune(now int64) {
	d.pruneAPI(now)
	d.prunePackets(now)
	d.pruneFlags(now)
	d.pruneOffenders(now)
}

// Flags lists flags, the latest evidence first.
func (d *Detector) Flags() []Flag {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	out := make([]Flag, 0, d.flags.len())
	d.flags.each(func(_ flagKey, fs *flagState) bool {
		f := fs.flag
		f.FirstSeen = d.opts.Wall(uint64(fs.first))
		f.LastSeen = d.opts.Wall(uint64(fs.last))
		f.Active = now-fs.last < int64(fs.window)
		f.Evidence.PortSample = slices.Clone(f.Evidence.PortSample)
		out = append(out, f)
		return true
	})
	slices.SortStableFunc(out, func(a, b Flag) int { return b.LastSeen.Compare(a.LastSeen) })
	return out
}

// Totals reads the counters.
func (d *Detector) Totals() Totals {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := Totals{
		Flagged: make(map[Reason]uint64, numReasons),
		Bans:    d.bans, BanErrors: d.banErrors, BansSkipped: d.banSkipped, Unproven: d.unproven, NeverBan: d.neverBan, Capped: d.capped,
		Events: d.seen, Evicted: d.evicted,
		Clients: d.clients.len(), Prefixes: d.prefixes.len(), Flags: d.flags.len(),
	}
	for i, s := range table {
		t.Flagged[s.reason] = d.flagged[i]
	}
	return t
}

// ErrNoFlag is returned by Forget for a prefix without flags.
var ErrNoFlag = errors.New("no flag for this client")

// Forget drops every flag and the offence history of prefix (an operator
// cleared a false positive); the next offence starts from the base TTL.
func (d *Detector) Forget(p netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var keys []flagKey
	d.flags.each(func(k flagKey, fs *flagState) bool {
		if fs.flag.Prefix == p {
			keys = append(keys, k)
		}
		return true
	})
	_, offended := d.offenders.peek(p)
	if len(keys) == 0 && !offended {
		return fmt.Errorf("forget %v: %w", p, ErrNoFlag)
	}
	for _, k := range keys {
		d.flags.remove(k)
	}
	d.offenders.remove(p)
	return nil
}
