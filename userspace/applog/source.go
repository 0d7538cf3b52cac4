package applog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/apiguard/apiguard/userspace/detect"
)

// SourceConfig is one access log to follow.
type SourceConfig struct {
	Follow FollowOptions
	// Format is "combined" or "json".
	Format string
	// Fields is the JSON mapping (json only).
	Fields Fields
	// Forwarded (combined only) says the line ends with a quoted
	// X-Forwarded-For field; it is believed only from Proxies.
	Forwarded bool
	Proxies   Proxies
}

// SourceStats are a Source's counters and its follower's.
type SourceStats struct {
	FollowStats
	Format string
	// ParseErrors counts lines skipped as malformed (too long ones included).
	ParseErrors uint64
	// Signals counts lines that counted for a detector rule.
	Signals uint64
	// Unattributed counts lines whose forwarded field from a trusted proxy
	// did not parse: no client to blame.
	Unattributed uint64
}

// Source follows an access log and turns its lines into the detector's
// signals.
type Source struct {
	cfg    SourceConfig
	follow *Follower
	parser Parser
	sink   func(detect.Signal) bool
	log    *slog.Logger

	parseErrors, signals, unattributed atomic.Uint64
	loggedErrors                       atomic.Uint64
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
	f, err := NewFollower(cfg.Follow)
	if err != nil {
		return nil, err
	}
	return &Source{cfg: cfg, follow: f, parser: p, sink: sink, log: log}, nil
}

// Path is the followed file.
func (s *Source) Path() string { return s.cfg.Follow.Path }

// Run follows the log until ctx ends.
func (s *Source) Run(ctx context.Context) error {
	var e Entry
	return s.follow.Run(ctx, func(line []byte) {
		if err := s.parser.Parse(line, &e); err != nil {
			// the first few are logged, to show a format mismatch; the
			// rest are counted
			if s.parseErrors.Add(1) <= 3 {
				s.log.Warn("access log line skipped", "path", s.cfg.Follow.Path, "err", err, "line", fmt.Sprintf("%.120q", line))
			}
			return
		}
		// successes and redirects count for no rule: skip the conversion
		if e.Status < 400 {
			return
		}
		client, ok := s.cfg.Proxies.Client(&e)
		if !ok {
			s.unattributed.Add(1)
			return
		}
		if s.sink(detect.Signal{Client: client, Method: string(e.Method), Path: string(e.Path), Status: e.Status}) {
			s.signals.Add(1)
		}
	})
}

// Stats reads the counters.
func (s *Source) Stats() SourceStats {
	fs := s.follow.Stats()
	return SourceStats{FollowStats: fs, Format: s.cfg.Format,
		ParseErrors: s.parseErrors.Load() + fs.TooLong, Signals: s.signals.Load(), Unattributed: s.unattributed.Load()}
}
