package crowdsec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Defaults of ReporterConfig.
const (
	DefaultQueue      = 1000
	DefaultAlertBatch = 50
	DefaultFlushEvery = time.Second
	DefaultMaxBackoff = time.Minute
	// tokenMargin: a token this close to its expiry is renewed before use.
	tokenMargin = 5 * time.Minute
)

// ReporterConfig configures a Reporter. URL, MachineID and Password are required.
type ReporterConfig struct {
	URL       string
	MachineID string
	Password  string
	// BanDuration is the duration of the decision sent with each alert; zero
	// sends the local ban's own duration.
	BanDuration time.Duration
	// Queue bounds the reports waiting while the LAPI is unreachable; the
	// oldest go first when it is full (DefaultQueue).
	Queue int
	// Batch is the most alerts per request (DefaultAlertBatch).
	Batch int
	// FlushEvery is how long a report may wait for others to share its
	// request (DefaultFlushEvery).
	FlushEvery time.Duration
	// MaxBackoff caps the wait between retries after a failure.
	MaxBackoff time.Duration
	HTTPClient *http.Client
	Version    string
	Logger     *slog.Logger
	Now        func() time.Time
}

// ReporterStats is what `apiguard status` and the metrics show of the reporter.
type ReporterStats struct {
	MachineID string    `json:"machine_id"`
	Sent      uint64    `json:"sent"`
	Errors    uint64    `json:"errors"`
	Dropped   uint64    `json:"dropped"`
	Queued    int       `json:"queued"`
	Logins    uint64    `json:"logins"`
	LastSent  time.Time `json:"last_sent,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// report is one local ban waiting to be sent.
type report struct {
	prefix   netip.Prefix
	reason   string
	message  string
	at       time.Time
	duration time.Duration
	expires  time.Time // the local ban's end: after it, the report is moot
}

// Reporter posts the bans apiguard's detector makes to the LAPI as alerts
// with a ban decision, so that every bouncer of the LAPI enforces them.
type Reporter struct {
	cfg ReporterConfig
	c   *client
	log *slog.Logger

	wake chan struct{}

	mu       sync.Mutex
	queue    []report
	reported map[netip.Prefix]time.Time // prefix → end of the decision sent
	token    string
	tokenExp time.Time
	down     bool
	st       ReporterStats
}

// NewReporter checks cfg; nothing is contacted until Run.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	if cfg.MachineID == "" || cfg.Password == "" {
		return nil, errors.New("crowdsec reporter: a machine id and a password are needed")
	}
	c, err := newClient(cfg.URL, cfg.HTTPClient, cfg.Version)
	if err != nil {
		return nil, fmt.Errorf("crowdsec reporter: %w", err)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultAlertBatch
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = DefaultFlushEvery
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Reporter{cfg: cfg, c: c, log: cfg.Logger, wake: make(chan struct{}, 1),
		reported: map[netip.Prefix]time.Time{}, st: ReporterStats{MachineID: cfg.MachineID}}, nil
}

// Report queues a local ban of p for ttl. A prefix already reported with a
// decision still running is not reported again.
func (r *Reporter) Report(p netip.Prefix, ttl time.Duration, reason, message string) {
	now := r.cfg.Now()
	dur := r.cfg.BanDuration
	if dur <= 0 {
		dur = ttl
	}
	if dur <= 0 {
		return // a ban without end is a local matter: a decision needs a duration
	}
	r.mu.Lock()
	if end, ok := r.reported[p]; ok && end.After(now) {
		r.mu.Unlock()
		return
	}
	r.reported[p] = now.Add(dur)
	if len(r.queue) >= r.cfg.Queue {
		r.queue = r.queue[1:]
		r.st.Dropped++
	}
	r.queue = append(r.queue, report{prefix: p, reason: reason, message: message, at: now, duration: dur, expires: now.Add(dur)})
	full := len(r.queue) >= r.cfg.Batch
	r.mu.Unlock()
	if full {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// Own says whether this host reported p and the decision is still running:
// the bouncer then skips it when it comes back with origin apiguard.
func (r *Reporter) Own(p netip.Prefix) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	end, ok := r.reported[p]
	return ok && end.After(r.cfg.Now())
}

// Stats returns a snapshot.
func (r *Reporter) Stats() ReporterStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.Queued = len(r.queue)
	return st
}

// Run sends queued reports every FlushEvery (or as soon as a batch is full)
// until ctx ends, backing off after failures.
func (r *Reporter) Run(ctx context.Context) error {
	wait := r.cfg.FlushEvery
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-r.wake:
			t.Stop()
		}
		if err := r.Flush(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait = min(max(2*wait, r.cfg.FlushEvery), r.cfg.MaxBackoff)
			continue
		}
		wait = r.cfg.FlushEvery
	}
}

// Flush sends everything queued, a batch at a time. On failure the batch
// stays queued for the next attempt.
func (r *Reporter) Flush(ctx context.Context) error {
	for {
		r.mu.Lock()
		now := r.cfg.Now()
		r.pruneLocked(now)
		n := min(len(r.queue), r.cfg.Batch)
		batch := append([]report(nil), r.queue[:n]...)
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		if err := r.send(ctx, batch, now); err != nil {
			r.mu.Lock()
			r.st.Errors++
			r.st.LastError = err.Error()
			if !r.down {
				r.down = true
				r.log.Warn("reporting bans to the CrowdSec LAPI failed; they stay queued and are retried with back-off",
					"url", r.cfg.URL, "err", err, "queued", len(r.queue))
			}
			r.mu.Unlock()
			return err
		}
		r.mu.Lock()
		// the queue may have lost its head to overflow meanwhile: drop what was sent
		sent := 0
		for sent < len(r.queue) && sent < n && r.queue[sent].prefix == batch[sent].prefix && r.queue[sent].at.Equal(batch[sent].at) {
			sent++
		}
		r.queue = r.queue[sent:]
		r.st.Sent += uint64(n)
		r.st.LastSent = now
		r.st.LastError = ""
		if r.down {
			r.down = false
			r.log.Info("reporting to the CrowdSec LAPI works again", "url", r.cfg.URL)
		}
		r.mu.Unlock()
	}
}

// pruneLocked drops reports whose local ban is over and forgets decisions
// that have ended.
func (r *Reporter) pruneLocked(now time.Time) {
	keep := r.queue[:0]
	for _, q := range r.queue {
		if q.expires.After(now) {
			keep = append(keep, q)
		} else {
			r.st.Dropped++
		}
	}
	clear(r.queue[len(keep):])
	r.queue = keep
	for p, end := range r.reported {
		if !end.After(now) {
			delete(r.reported, p)
		}
	}
}

// send posts one batch, logging in first when the token is missing or about
// to expire, and once more when the LAPI refuses the token.
func (r *Reporter) send(ctx context.Context, batch []report, now time.Time) error {
	alerts := make([]alert, len(batch))
	for i, q := range batch {
		alerts[i] = newAlert(q, now)
	}
	for attempt := 0; ; attempt++ {
		tok, err := r.tokenFor(ctx, now)
		if err != nil {
			return err
		}
		err = r.c.postAlerts(ctx, tok, alerts)
		var he *HTTPError
		if attempt == 0 && errors.As(err, &he) && he.Status == http.StatusUnauthorized {
			r.mu.Lock()
			r.token = "" // expired or revoked early: log in again
			r.mu.Unlock()
			continue
		}
		return err
	}
}

func (r *Reporter) tokenFor(ctx context.Context, now time.Time) (string, error) {
	r.mu.Lock()
	tok, exp := r.token, r.tokenExp
	r.mu.Unlock()
	if tok != "" && exp.Sub(now) > tokenMargin {
		return tok, nil
	}
	ans, err := r.c.login(ctx, r.cfg.MachineID, r.cfg.Password, scenarioNames())
	if err != nil {
		return "", err
	}
	if ans.Expire.IsZero() {
		ans.Expire = now.Add(time.Hour) // the LAPI's documented token lifetime
	}
	r.mu.Lock()
	r.token, r.tokenExp = ans.Token, ans.Expire
	r.st.Logins++
	r.mu.Unlock()
	return ans.Token, nil
}

// The detector's reasons, as the scenarios this machine announces at login.
var reasons = []string{"flood", "syn-flood", "scan", "deny-probe", "bad-flags", "aggregate"}

func scenarioNames() []string {
	out := make([]string, len(reasons))
	for i, r := range reasons {
		out[i] = "apiguard/" + r
	}
	return out
}

// alert is POST /v1/alerts's element, with every field LAPI 1.4.6 requires.
type alert struct {
	Scenario        string          `json:"scenario"`
	ScenarioHash    string          `json:"scenario_hash"`
	ScenarioVersion string          `json:"scenario_version"`
	Message         string          `json:"message"`
	EventsCount     int32           `json:"events_count"`
	StartAt         string          `json:"start_at"`
	StopAt          string          `json:"stop_at"`
	Capacity        int32           `json:"capacity"`
	Leakspeed       string          `json:"leakspeed"`
	Simulated       bool            `json:"simulated"`
	Events          []alertEvent    `json:"events"`
	Source          alertSource     `json:"source"`
	Decisions       []alertDecision `json:"decisions"`
}

type alertEvent struct {
	Timestamp string      `json:"timestamp"`
	Meta      []alertMeta `json:"meta"`
}

type alertMeta struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type alertSource struct {
	Scope string `json:"scope"`
	Value string `json:"value"`
	IP    string `json:"ip,omitempty"`
	Range string `json:"range,omitempty"`
}

type alertDecision struct {
	Type     string `json:"type"`
	Duration string `json:"duration"`
	Scope    string `json:"scope"`
	Value    string `json:"value"`
	Origin   string `json:"origin"`
	Scenario string `json:"scenario"`
}

func newAlert(q report, now time.Time) alert {
	scope, value := scopeOf(q.prefix)
	scenario := "apiguard/" + q.reason
	src := alertSource{Scope: scope, Value: value}
	if scope == ScopeIP {
		src.IP = value
	} else {
		src.Range = value
	}
	msg := q.message
	if msg == "" {
		msg = fmt.Sprintf("apiguard banned %s (%s)", value, q.reason)
	}
	// the decision runs for what is left of the local ban, not from the send
	dur := q.expires.Sub(now).Round(time.Second)
	if dur < time.Second {
		dur = time.Second
	}
	ts := q.at.UTC().Format(time.RFC3339)
	return alert{
		Scenario: scenario, Message: msg, EventsCount: 1,
		StartAt: ts, StopAt: ts, Leakspeed: "0s",
		Events: []alertEvent{{Timestamp: ts, Meta: []alertMeta{{Key: "source_ip", Value: value}, {Key: "reason", Value: q.reason}}}},
		Source: src,
		Decisions: []alertDecision{{Type: "ban", Duration: dur.String(), Scope: scope, Value: value,
			Origin: OriginApiguard, Scenario: scenario}},
	}
}
