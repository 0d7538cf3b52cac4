package applog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/apiguard/apiguard/userspace/attack"
	"github.com/apiguard/apiguard/userspace/clientip"
	"github.com/apiguard/apiguard/userspace/detect"
	"golang.org/x/sys/unix"
)

// SourceConfig is one access log to follow.
type SourceConfig struct {
	Follow FollowOptions
	// Format is "combined" or "json".
	Format string
	// Fields is the JSON mapping (json only).
	Fields Fields
	// Forwarded (combined only) says the line ends with a quoted
	// X-Forwarded-For field; it is believed only from Proxies, for the hops
	// each trusted proxy added (clientip).
	Forwarded bool
	Proxies   clientip.Trusted
	// Windows returns the API rules' windows in force (they change with the
	// policy): a line older than its rule's window is ignored. nil: the
	// defaults' minute for every rule.
	Windows func() Windows
	// Matcher returns the matcher of the API rules in force
	// (detect.Detector.Matcher): a line answered below 400 becomes a signal
	// only when it carries what the matcher finds (a payload, a scanner's
	// user agent). nil, or a nil Matcher: only 4xx and 5xx lines count.
	Matcher func() *attack.Matcher
	// Clock returns the wall time and CLOCK_MONOTONIC (the detector's clock),
	// read together (default: the system's).
	Clock func() (time.Time, int64)
}

// defaultWindow is every API rule's default window (policy.Defaults).
const defaultWindow = time.Minute

// SourceStats are a Source's counters and its follower's.
type SourceStats struct {
	FollowStats
	Format string
	// ParseErrors counts lines skipped as malformed (too long ones included).
	ParseErrors uint64
	// Signals counts lines that counted for a detector rule.
	Signals uint64
	// Probes counts lines that carried a payload or a scanner's user agent
	// (before attribution and dating).
	Probes uint64
	// AllTrusted counts lines that may count (4xx, 5xx, or carrying a
	// payload or a scanner's user agent) with nobody but trusted proxies in
	// their chain (a trusted peer without a forwarded field included), and
	// BadHops those whose chain had a hop that did not parse: nobody is
	// blamed for either.
	AllTrusted, BadHops uint64
	// Stale counts such lines older than their rules' windows, Future
	// those dated more than MaxSkew ahead: ignored.
	Stale, Future uint64
}

// Source follows an access log and turns its lines into the detector's
// signals.
type Source struct {
	cfg    SourceConfig
	follow *Follower
	parser Parser
	sink   func(detect.Signal) bool
	log    *slog.Logger

	parseErrors, signals, probes atomic.Uint64
	allTrusted, badHops          atomic.Uint64
	stale, future                atomic.Uint64
	// sc is the matcher's working memory: Run is one goroutine
	sc attack.Scratch
}

// NewSource checks cfg. sink gets each line's signal and reports whether it
// counted (detect.Detector.ObserveSignal).
func NewSource(cfg SourceConfig, sink func(detect.Signal) bool, log *slog.Logger) (*Source, error) {
	if sink == nil {
		return nil, errors.New("source: no sink")
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.Windows == nil {
		cfg.Windows = func() Windows {
			return Windows{defaultWindow, defaultWindow, defaultWindow, defaultWindow, defaultWindow, defaultWindow, defaultWindow}
		}
	}
	if cfg.Matcher == nil {
		cfg.Matcher = func() *attack.Matcher { return nil }
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock
	}
	var p Parser
	switch cfg.Format {
	case "combined", "":
		cfg.Format = "combined"
		p = Combined{Forwarded: cfg.Forwarded}
	case "json":
		jp, err := NewJSONLines(cfg.Fields)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", cfg.Follow.Path, err)
		}
		p = jp
	default:
		return nil, fmt.Errorf("source %s: format %q is neither combined nor json", cfg.Follow.Path, cfg.Format)
	}
	s := &Source{cfg: cfg, parser: p, sink: sink, log: log}
	opts := cfg.Follow
	if opts.Notify == nil {
		opts.Notify = s.notify
	}
	f, err := NewFollower(opts)
	if err != nil {
		return nil, err
	}
	s.follow = f
	return s, nil
}

// notify logs the follower's news: a log that cannot be opened or read is an
// error (the API detectors are blind to it), said once per problem.
func (s *Source) notify(err error) {
	if err != nil {
		s.log.Error("cannot read access log; retrying", "path", s.cfg.Follow.Path, "err", err)
		return
	}
	s.log.Info("following access log", "path", s.cfg.Follow.Path, "format", s.cfg.Format)
}

// Path is the followed file.
func (s *Source) Path() string { return s.cfg.Follow.Path }

// Run follows the log until ctx ends.
func (s *Source) Run(ctx context.Context) error {
	var e Entry
	return s.follow.Run(ctx, func(line []byte) {
		if err := s.parser.Parse(line, &e); err != nil {
			s.parseError(err, line)
			return
		}
		// what a request carried counts whatever the answer; below 400 the
		// status counts for no rule
		payload, scanner := s.screen(&e)
		carried := payload || scanner
		if carried {
			s.probes.Add(1)
		}
		if e.Status < 400 && !carried {
			return
		}
		at, age, ok := s.date(&e, line, carried)
		if !ok {
			return
		}
		client, res := s.cfg.Proxies.Client(e.Remote, e.Forwarded)
		switch res {
		case clientip.AllTrusted:
			s.allTrusted.Add(1)
			return
		case clientip.BadHop:
			s.badHops.Add(1)
			return
		}
		sig := detect.Signal{Client: client, At: at, Age: age, Method: string(e.Method), Path: string(e.Path), Status: e.Status}
		// the detector looks again; what the screen found nothing in it
		// need not see (nor this side copy)
		if payload || scanner {
			sig.Query, sig.UserAgent = string(e.Query), string(e.UserAgent())
		}
		if s.sink(sig) {
			s.signals.Add(1)
		}
	})
}

// screen looks for what the matcher of the rules in force finds in what the
// request carried: a payload in its path, query or user agent, a scanner's
// user agent.
func (s *Source) screen(e *Entry) (payload, scanner bool) {
	m := s.cfg.Matcher()
	if m == nil {
		return false, false
	}
	var ua []byte
	if m.InjectionOn() || m.AgentsOn() {
		ua = e.UserAgent()
	}
	payload = m.Injection(e.Path, e.Query, ua, &s.sc).Class != attack.NoClass
	if len(ua) > 0 {
		_, scanner = m.ScannerAgent(ua, &s.sc)
	}
	return payload, scanner
}

// parseError counts a skipped line; the first few are logged, to show a
// format mismatch.
//
// The line itself is never logged: the policy may name any file as an access
// log, and its lines are not ours to show.
func (s *Source) parseError(err error, line []byte) {
	if s.parseErrors.Add(1) <= 3 {
		s.log.Warn("access log line skipped", "path", s.cfg.Follow.Path, "err", err, "bytes", len(line))
	}
}

// date turns the line's own time into the detector's clock (CLOCK_MONOTONIC
// ns, 0 for now) and says how old the line is. A line older than the
// windows of the rules it may count for, or dated beyond MaxSkew in the
// future, is counted and ignored; one whose time does not parse is a parse
// error. (The detector drops a line, by its age, from each rule whose own
// window it is older than.)
func (s *Source) date(e *Entry, line []byte, carried bool) (int64, time.Duration, bool) {
	t, err := ParseTime(e.Time)
	if err != nil {
		s.parseError(err, line)
		return 0, 0, false
	}
	now, mono := s.cfg.Clock()
	age := now.Sub(t)
	switch {
	case age > s.cfg.Windows().For(e.Status, carried):
		s.stale.Add(1)
		return 0, 0, false
	case age < -MaxSkew:
		s.future.Add(1)
		return 0, 0, false
	case age <= 0:
		return 0, 0, true // within the skew: now
	}
	// a line from before this boot (a log kept across a reboot) is placed
	// at the boot: 0 would mean now
	return max(mono-int64(age), 1), age, true
}

// clockBase pairs a reading of CLOCK_MONOTONIC with one of Go's clock, whose
// monotonic part is CLOCK_MONOTONIC read through the vDSO: later readings of
// CLOCK_MONOTONIC are the base plus the time since, without a system call
// (x/sys/unix's ClockGettime is one) on every line that is dated.
var clockBase = func() (b struct {
	wall time.Time
	mono int64
}) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("CLOCK_MONOTONIC unavailable: " + err.Error())
	}
	b.wall, b.mono = time.Now(), ts.Nano()
	return b
}()

func systemClock() (time.Time, int64) {
	now := time.Now()
	return now, clockBase.mono + int64(now.Sub(clockBase.wall))
}

// Stats reads the counters.
func (s *Source) Stats() SourceStats {
	fs := s.follow.Stats()
	return SourceStats{FollowStats: fs, Format: s.cfg.Format,
		ParseErrors: s.parseErrors.Load() + fs.TooLong, Signals: s.signals.Load(), Probes: s.probes.Load(),
		AllTrusted: s.allTrusted.Load(), BadHops: s.badHops.Load(), Stale: s.stale.Load(), Future: s.future.Load()}
}
