package crowdsec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Ban is one prefix the bouncer wants banned.
type Ban struct {
	Prefix  netip.Prefix
	Expires time.Time
	Origin  string // the decision's origin: cscli, crowdsec, CAPI, lists, apiguard, ...
}

// Kernel is where the bouncer's bans go: the daemon, which writes them to the
// kernel's ban maps with source crowdsec and keeps its ban book in line.
type Kernel interface {
	// ApplyCrowdSec adds or replaces the bans in add and lifts those in remove,
	// touching only bans of source crowdsec: a manual or detector ban on the
	// same prefix wins and stays.
	ApplyCrowdSec(add []Ban, remove []netip.Prefix) error
	// CrowdSecBans lists the prefixes the kernel bans with source crowdsec
	// (from this run or an earlier one), for a startup pull to reconcile.
	CrowdSecBans() ([]netip.Prefix, error)
}

// Defaults of BouncerConfig.
const (
	DefaultPollInterval = 10 * time.Second
	DefaultBatch        = 4096
)

// BouncerConfig configures a Bouncer. URL and APIKey are required, except
// that CertAuth stands for the key.
type BouncerConfig struct {
	URL    string
	APIKey string
	// CertAuth says HTTPClient presents a client certificate the LAPI knows
	// the bouncer by: no API key is needed.
	CertAuth bool
	// MinPrefix4 and MinPrefix6 are the broadest ranges enforced; a broader
	// decision is refused and counted (DefaultMinPrefix4, DefaultMinPrefix6).
	MinPrefix4, MinPrefix6 int
	// Interval is the time between two pulls (DefaultPollInterval).
	Interval time.Duration
	// Scopes and Origins filter the decisions the LAPI sends (empty: all
	// origins; scopes Ip and Range).
	Scopes  []string
	Origins []string
	// Own says whether this host reported the prefix itself: such decisions
	// come back with origin apiguard and are not applied a second time.
	Own func(netip.Prefix) bool
	// Batch is how many bans go to the kernel per call (DefaultBatch).
	Batch      int
	HTTPClient *http.Client
	Version    string
	Logger     *slog.Logger
	Now        func() time.Time
}

// BouncerStats is what `apiguard status` and the metrics show of the bouncer.
type BouncerStats struct {
	URL string `json:"url"`
	// Reachable is whether the last pull succeeded.
	Reachable bool `json:"reachable"`
	// LastPull is the latest pull's time, LastSuccess the latest successful one.
	LastPull    time.Time `json:"last_pull,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Pulls       uint64    `json:"pulls"`
	PullErrors  uint64    `json:"pull_errors"`
	// Outages counts transitions from reachable (or never tried) to failing.
	Outages uint64 `json:"outages"`
	// Active is the prefixes banned for the LAPI's decisions right now.
	Active int `json:"active"`
	// Decisions is the LAPI decisions those bans stand for.
	Decisions int `json:"decisions"`
	// Applied and Removed count kernel writes; Ignored counts decisions not
	// enforced (refused, expired, this host's own).
	Applied uint64 `json:"applied"`
	Removed uint64 `json:"removed"`
	Ignored uint64 `json:"ignored"`
	// Refused counts the decisions refused, by reason (RefusedReasons).
	Refused map[string]uint64 `json:"refused,omitempty"`
}

// held is one banned prefix: how many live decisions stand behind it, the
// latest expiry (Unix nanoseconds) and the origin (an index into origins).
// 16 bytes a prefix keeps 100k decisions' bookkeeping small.
type held struct {
	expires int64
	n       int32
	origin  uint16
}

func (h held) ban(p netip.Prefix, origins []string) Ban {
	return Ban{Prefix: p, Expires: time.Unix(0, h.expires), Origin: origins[h.origin]}
}

// loudRefusals is how many too-broad decisions one pull logs as warnings;
// the rest are counted. A LAPI that sends thousands must not flood the log.
const loudRefusals = 5

// maxOrigins bounds the origin table: origins are a handful, and a hostile
// LAPI must not grow it; the rest share one name.
const maxOrigins = 1024

// Bouncer pulls the LAPI's decision stream into the kernel's bans.
type Bouncer struct {
	cfg    BouncerConfig
	c      *client
	kernel Kernel
	log    *slog.Logger

	// pullMu serialises pulls; mu guards everything below. The request to the
	// LAPI runs without mu, so status and metrics never wait on a slow LAPI.
	pullMu   sync.Mutex
	mu       sync.Mutex
	byID     map[int64]netip.Prefix
	byPrefix map[netip.Prefix]held
	origins  []string          // origin names by index
	originIx map[string]uint16 // and their indexes
	// startup says the next pull asks for the full set: at start, and after
	// an outage or a failed kernel write, when changes may have been missed.
	startup bool
	down    bool
	st      BouncerStats
	// loud counts this pull's too-broad decisions, for loudRefusals.
	loud int
}

// NewBouncer checks cfg; nothing is contacted until Run or Pull.
func NewBouncer(cfg BouncerConfig, k Kernel) (*Bouncer, error) {
	if cfg.APIKey == "" && !cfg.CertAuth {
		return nil, errors.New("crowdsec bouncer: no API key (and no client certificate)")
	}
	if cfg.MinPrefix4 == 0 {
		cfg.MinPrefix4 = DefaultMinPrefix4
	}
	if cfg.MinPrefix6 == 0 {
		cfg.MinPrefix6 = DefaultMinPrefix6
	}
	if cfg.MinPrefix4 < 0 || cfg.MinPrefix4 > 32 || cfg.MinPrefix6 < 0 || cfg.MinPrefix6 > 128 {
		return nil, fmt.Errorf("crowdsec bouncer: minimum prefixes /%d (IPv4) and /%d (IPv6) are outside 0–32 and 0–128",
			cfg.MinPrefix4, cfg.MinPrefix6)
	}
	if k == nil {
		return nil, errors.New("crowdsec bouncer: no kernel to write bans to")
	}
	c, err := newClient(cfg.URL, cfg.HTTPClient, cfg.Version)
	if err != nil {
		return nil, fmt.Errorf("crowdsec bouncer: %w", err)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultPollInterval
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{ScopeIP, ScopeRange}
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Own == nil {
		cfg.Own = func(netip.Prefix) bool { return false }
	}
	return &Bouncer{
		cfg: cfg, c: c, kernel: k, log: cfg.Logger,
		byID: map[int64]netip.Prefix{}, byPrefix: map[netip.Prefix]held{},
		origins: []string{"other"}, originIx: map[string]uint16{},
		startup: true, st: BouncerStats{URL: cfg.URL},
	}, nil
}

// Run pulls at once and then every Interval until ctx ends. A failing LAPI
// never stops it: bans already in the kernel stay until their own expiry.
func (b *Bouncer) Run(ctx context.Context) error {
	t := time.NewTicker(b.cfg.Interval)
	defer t.Stop()
	for {
		// the error is logged and counted by Pull; the next tick tries again
		_ = b.Pull(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Stats returns a snapshot of the bouncer's state.
func (b *Bouncer) Stats() BouncerStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.st
	st.Refused = maps.Clone(b.st.Refused)
	st.Active = len(b.byPrefix)
	st.Decisions = len(b.byID)
	return st
}

// Origin names the LAPI origin of a prefix the bouncer banned ("" if none).
func (b *Bouncer) Origin(p netip.Prefix) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h, ok := b.byPrefix[p]; ok {
		return b.origins[h.origin]
	}
	return ""
}

// Pull makes one pull: the full set (startup) the first time and after a
// failure, the changes since the last pull otherwise.
func (b *Bouncer) Pull(ctx context.Context) error {
	b.pullMu.Lock()
	defer b.pullMu.Unlock()
	b.mu.Lock()
	startup := b.startup
	b.loud = 0
	b.st.Pulls++
	b.st.LastPull = b.cfg.Now()
	b.mu.Unlock()
	ans, err := b.c.stream(ctx, b.cfg.APIKey, startup, b.cfg.Scopes, b.cfg.Origins)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return err // shutting down, not an outage
		}
		b.failLocked(err)
		return err
	}
	now := b.cfg.Now()
	if startup {
		err = b.reconcileLocked(ans, now)
	} else {
		err = b.changesLocked(ans, now)
	}
	if err != nil {
		// the LAPI has moved this bouncer's cursor past changes the kernel
		// may not have taken: the next pull starts over
		b.startup = true
		b.failLocked(err)
		return err
	}
	if b.down {
		b.log.Info("CrowdSec LAPI reachable again; decisions reconciled", "url", b.cfg.URL, "active", len(b.byPrefix))
	}
	b.down, b.startup = false, false
	b.st.Reachable = true
	b.st.LastSuccess = now
	b.st.LastError = ""
	return nil
}

// failLocked records a failed pull, logging only the first of an outage.
func (b *Bouncer) failLocked(err error) {
	b.st.PullErrors++
	b.st.Reachable = false
	b.st.LastError = err.Error()
	b.startup = true
	if !b.down {
		b.down = true
		b.st.Outages++
		b.log.Warn("CrowdSec LAPI pull failed; bans already in the kernel stay until they expire, retrying every poll interval",
			"url", b.cfg.URL, "err", err, "interval", b.cfg.Interval)
	}
}

func (b *Bouncer) intern(s string) uint16 {
	if i, ok := b.originIx[s]; ok {
		return i
	}
	if len(b.origins) >= maxOrigins {
		return 0 // "other"
	}
	i := uint16(len(b.origins))
	b.origins = append(b.origins, s)
	b.originIx[s] = i
	return i
}

// addLocked tracks a new decision; it reports whether it is enforced.
func (b *Bouncer) addLocked(d *Decision, now time.Time, dirty map[netip.Prefix]struct{}) bool {
	t, ref := d.parse(now, b.cfg.MinPrefix4, b.cfg.MinPrefix6)
	if ref != nil {
		b.refusedLocked(ref)
		return false
	}
	if !t.expires.After(now) {
		return false
	}
	if d.Origin == OriginApiguard && b.cfg.Own(t.prefix) {
		return false // this host's own report: its local ban is already in force
	}
	if old, ok := b.byID[d.ID]; ok {
		if old != t.prefix {
			b.dropLocked(d.ID, dirty)
		} else {
			// the same decision again (a startup pull after an outage): refresh
			h := b.byPrefix[t.prefix]
			if exp := t.expires.UnixNano(); exp > h.expires {
				h.expires = exp
				b.byPrefix[t.prefix] = h
				dirty[t.prefix] = struct{}{}
			}
			return true
		}
	}
	b.byID[d.ID] = t.prefix
	h := b.byPrefix[t.prefix]
	h.n++
	if exp := t.expires.UnixNano(); exp > h.expires {
		h.expires = exp
		h.origin = b.intern(d.Origin)
	}
	b.byPrefix[t.prefix] = h
	dirty[t.prefix] = struct{}{}
	return true
}

// refusedLocked counts a refused decision. A too-broad one is logged as a
// warning (the first few of each pull): it is either a mistake to correct at
// the LAPI or someone trying to cut this host off. The others are routine
// (CrowdSec also sends captchas and country scopes) and logged at debug.
func (b *Bouncer) refusedLocked(r *refusal) {
	if b.st.Refused == nil {
		b.st.Refused = map[string]uint64{}
	}
	b.st.Refused[r.reason]++
	if r.reason != RefusedTooBroad {
		b.log.Debug("CrowdSec decision not enforced", "reason", r.reason, "err", r.err)
		return
	}
	if b.loud++; b.loud <= loudRefusals {
		b.log.Warn("CrowdSec decision refused: its range is broader than the bouncer's minimum prefix (crowdsec.bouncer.minPrefix)",
			"err", r.err, "min_ipv4", b.cfg.MinPrefix4, "min_ipv6", b.cfg.MinPrefix6)
	} else if b.loud == loudRefusals+1 {
		b.log.Warn("more too-broad CrowdSec decisions in this pull; counted, not logged")
	}
}

// dropLocked forgets a decision; the prefix goes once no decision holds it.
func (b *Bouncer) dropLocked(id int64, dirty map[netip.Prefix]struct{}) {
	p, ok := b.byID[id]
	if !ok {
		return
	}
	delete(b.byID, id)
	if h, ok := b.byPrefix[p]; ok {
		if h.n--; h.n <= 0 {
			delete(b.byPrefix, p)
		} else {
			b.byPrefix[p] = h
		}
	}
	dirty[p] = struct{}{}
}

// changesLocked applies an incremental answer.
func (b *Bouncer) changesLocked(ans *streamAnswer, now time.Time) error {
	dirty := map[netip.Prefix]struct{}{}
	for i := range ans.Deleted {
		b.dropLocked(ans.Deleted[i].ID, dirty)
	}
	for i := range ans.New {
		if !b.addLocked(&ans.New[i], now, dirty) {
			b.st.Ignored++
		}
	}
	b.pruneLocked(now)
	var add []Ban
	var remove []netip.Prefix
	for p := range dirty {
		if h, ok := b.byPrefix[p]; ok {
			add = append(add, h.ban(p, b.origins))
		} else {
			remove = append(remove, p)
		}
	}
	return b.writeLocked(add, remove)
}

// reconcileLocked replaces the whole state with a startup answer and lifts
// the crowdsec bans in the kernel that no decision holds any more.
func (b *Bouncer) reconcileLocked(ans *streamAnswer, now time.Time) error {
	b.byID = make(map[int64]netip.Prefix, len(ans.New))
	b.byPrefix = make(map[netip.Prefix]held, len(ans.New))
	dirty := make(map[netip.Prefix]struct{}, len(ans.New))
	for i := range ans.New {
		if !b.addLocked(&ans.New[i], now, dirty) {
			b.st.Ignored++
		}
	}
	inKernel, err := b.kernel.CrowdSecBans()
	if err != nil {
		return fmt.Errorf("list the kernel's crowdsec bans: %w", err)
	}
	var remove []netip.Prefix
	for _, p := range inKernel {
		if _, ok := b.byPrefix[p]; !ok {
			remove = append(remove, p)
		}
	}
	add := make([]Ban, 0, len(b.byPrefix))
	for p, h := range b.byPrefix {
		add = append(add, h.ban(p, b.origins))
	}
	return b.writeLocked(add, remove)
}

// pruneLocked forgets decisions past their expiry: the kernel ignores those
// bans already and the sweeper frees them.
func (b *Bouncer) pruneLocked(now time.Time) {
	for p, h := range b.byPrefix {
		if h.expires <= now.UnixNano() {
			delete(b.byPrefix, p)
		}
	}
	for id, p := range b.byID {
		if _, ok := b.byPrefix[p]; !ok {
			delete(b.byID, id)
		}
	}
}

// writeLocked hands the changes to the kernel in batches, so that a startup
// pull of 100k decisions never holds the daemon's ban lock for long.
func (b *Bouncer) writeLocked(add []Ban, remove []netip.Prefix) error {
	for len(remove) > 0 {
		n := min(len(remove), b.cfg.Batch)
		if err := b.kernel.ApplyCrowdSec(nil, remove[:n]); err != nil {
			return err
		}
		b.st.Removed += uint64(n)
		remove = remove[n:]
	}
	for len(add) > 0 {
		n := min(len(add), b.cfg.Batch)
		if err := b.kernel.ApplyCrowdSec(add[:n], nil); err != nil {
			return err
		}
		b.st.Applied += uint64(n)
		add = add[n:]
	}
	return nil
}
