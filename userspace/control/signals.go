package control

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/apiguard/apiguard/userspace/attack"
	"github.com/apiguard/apiguard/userspace/detect"
)

// PathReport takes the application's reports: POST a Report.
const PathReport = "/v1/report"

// Bounds of a report.
const (
	MaxReportWeight = 1000
	MaxReportPath   = 2048
)

// Report is what an application tells the daemon about a client: a failed
// login, an authorization failure, an injection attempt its validator
// caught... Reason is a rule name (auth-failures, enumeration,
// app-throttled, error-burst, injection-probe, sensitive-files,
// scanner-agent) or one of the words detect.ReportReason accepts
// (failed-login, authz-failure, throttled, server-error, injection,
// sensitive-file, scanner). Weight (default 1) counts several at once; Path,
// for enumeration, names the object denied so that repeats count once, and
// for an injection the request's target (shown, sanitised, in the evidence;
// its class is found in it unless Class names it: sql, xss, command,
// traversal, template).
type Report struct {
	Client string `json:"client"`
	Reason string `json:"reason"`
	Weight uint32 `json:"weight,omitempty"`
	Path   string `json:"path,omitempty"`
	Class  string `json:"class,omitempty"`
}

// ReportResult says what the report did.
type ReportResult struct {
	Client string        `json:"client"`
	Reason detect.Reason `json:"reason"`
	// Counted is false when the rule is disabled.
	Counted bool `json:"counted"`
}

// SignalSink is a Backend that takes reports (the daemon with a detector).
type SignalSink interface {
	Report(ctx context.Context, s detect.Signal) (bool, error)
}

// AccessLogStatus is one followed access log, for `apiguard status`.
type AccessLogStatus struct {
	Path        string `json:"path"`
	Format      string `json:"format"`
	Lines       uint64 `json:"lines"`
	ParseErrors uint64 `json:"parse_errors"`
	Signals     uint64 `json:"signals"`
	Rotations   uint64 `json:"rotations"`
	Truncations uint64 `json:"truncations"`
	// LagBytes is what the file holds beyond what was read.
	LagBytes int64     `json:"lag_bytes"`
	LastLine time.Time `json:"last_line,omitzero"`
	Error    string    `json:"error,omitempty"`
	// Ignored counts the 4xx/5xx lines held against nobody.
	Ignored IgnoredLines `json:"ignored"`
}

// IgnoredLines are 4xx/5xx lines that counted against nobody: Stale ones
// were older than their rule's window, Future ones dated too far ahead;
// AllTrusted ones had only trusted proxies in their chain, BadHop ones a
// chain hop that did not parse.
type IgnoredLines struct {
	Stale      uint64 `json:"stale"`
	Future     uint64 `json:"future"`
	AllTrusted uint64 `json:"all_trusted"`
	BadHop     uint64 `json:"bad_hop"`
}

// Signal checks a report and makes it the detector's signal.
func (r Report) Signal() (detect.Signal, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(r.Client))
	if err != nil {
		return detect.Signal{}, Invalidf("client %q is not an IP address", r.Client)
	}
	if a.Zone() != "" {
		return detect.Signal{}, Invalidf("client %q has a zone; give the address alone", r.Client)
	}
	reason, err := detect.ReportReason(r.Reason)
	if err != nil {
		return detect.Signal{}, Invalidf("%v", err)
	}
	if r.Weight > MaxReportWeight {
		return detect.Signal{}, Invalidf("weight %d is above %d", r.Weight, MaxReportWeight)
	}
	if len(r.Path) > MaxReportPath {
		return detect.Signal{}, Invalidf("path is longer than %d bytes", MaxReportPath)
	}
	if r.Path != "" && !strings.HasPrefix(r.Path, "/") {
		return detect.Signal{}, Invalidf("path %q does not start with /", attack.SanitizeString(r.Path, 64))
	}
	class, err := attack.ParseClass(r.Class)
	if err != nil {
		return detect.Signal{}, Invalidf("%v", err)
	}
	if class != attack.NoClass && reason != detect.InjectionProbe {
		return detect.Signal{}, Invalidf("class %q is for injection reports, not %s", r.Class, reason)
	}
	return detect.Signal{Client: a.Unmap(), Report: reason, Weight: r.Weight, Path: r.Path, Class: class}, nil
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	sink, ok := s.backend.(SignalSink)
	if !ok {
		s.fail(w, NotFoundf("this daemon runs no detector"))
		return
	}
	var rep Report
	if err := decode(w, r, MaxSmallBody, &rep); err != nil {
		s.fail(w, err)
		return
	}
	sig, err := rep.Signal()
	if err != nil {
		s.fail(w, err)
		return
	}
	counted, err := sink.Report(r.Context(), sig)
	s.reply(w, ReportResult{Client: sig.Client.String(), Reason: sig.Report, Counted: counted}, err)
}

// Report sends a report about a client.
func (c *Client) Report(ctx context.Context, r Report) (*ReportResult, error) {
	var res ReportResult
	return &res, c.do(ctx, http.MethodPost, PathReport, nil, r, &res)
}
