package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apiguard/apiguard/userspace/applog"
	"github.com/apiguard/apiguard/userspace/attack"
	"github.com/apiguard/apiguard/userspace/clientip"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/apiguard/apiguard/userspace/metrics"
	"github.com/apiguard/apiguard/userspace/policy"
)

// The daemon takes the application's reports and reports its access logs.
var (
	_ control.SignalSink = (*Daemon)(nil)
	_ metrics.Signals    = (*Daemon)(nil)
)

// logsCheckEvery is how often the policy's access logs are compared with the
// sources running: a reload starts and stops sources within this.
const logsCheckEvery = time.Second

// apiSignals are the access-log sources the policy asks for and the count of
// reports received.
type apiSignals struct {
	mu      sync.Mutex
	running map[string]*runningSource
	reports atomic.Uint64
	// windows are the API rules' windows of the policy in force: the
	// sources read them for every line that may count (setAPIWindows).
	windows atomic.Pointer[applog.Windows]
}

// setAPIWindows publishes the API rules' windows of the policy in force.
func (d *Daemon) setAPIWindows(det *policy.Detection) {
	w := windowsOf(det)
	d.sig.windows.Store(&w)
}

func windowsOf(det *policy.Detection) applog.Windows {
	return applog.Windows{AuthFailures: det.AuthFailures.Window, Enumeration: det.Enumeration.Window,
		AppThrottled: det.AppThrottled.Window, ErrorBurst: det.ErrorBurst.Window,
		InjectionProbe: det.InjectionProbe.Window, SensitiveFiles: det.SensitiveFiles.Window, ScannerAgent: det.ScannerAgent.Window}
}

// apiWindows are the windows in force (the defaults' before any policy).
func (d *Daemon) apiWindows() applog.Windows {
	if w := d.sig.windows.Load(); w != nil {
		return *w
	}
	def := policy.Defaults().Detection
	return windowsOf(&def)
}

// apiMatcher is the detector's matcher (nil before the detector starts):
// the sources screen lines with it.
func (d *Daemon) apiMatcher() *attack.Matcher {
	if det := d.tel.det; det != nil {
		return det.Matcher()
	}
	return nil
}

type runningSource struct {
	cfg    policy.AccessLog
	src    *applog.Source
	cancel context.CancelFunc
	done   chan struct{}
}

// Report counts an application's report (control.SignalSink).
func (d *Daemon) Report(_ context.Context, s detect.Signal) (bool, error) {
	if d.tel.det == nil {
		return false, control.NotFoundf("the detector is not running")
	}
	d.sig.reports.Add(1)
	return d.tel.det.ObserveSignal(s), nil
}

// followAccessLogs runs a source per access log of the policy in force,
// starting and stopping them as the policy changes, until ctx ends.
func (d *Daemon) followAccessLogs(ctx context.Context) error {
	defer d.stopSources(nil)
	tick := time.NewTicker(logsCheckEvery)
	defer tick.Stop()
	for {
		if pol := d.CurrentPolicy(); pol != nil {
			d.reconcileSources(ctx, pol.Spec.AccessLogs)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (d *Daemon) reconcileSources(ctx context.Context, want []policy.AccessLog) {
	keep := map[string]policy.AccessLog{}
	for _, l := range want {
		keep[l.Path] = l
	}
	d.stopSources(func(path string, cfg policy.AccessLog) bool {
		w, ok := keep[path]
		return !ok || !reflect.DeepEqual(w, cfg)
	})
	for _, l := range want {
		d.sig.mu.Lock()
		_, on := d.sig.running[l.Path]
		d.sig.mu.Unlock()
		if on {
			continue
		}
		if err := d.startSource(ctx, l); err != nil {
			d.log.Error("cannot follow access log", "path", l.Path, "err", err)
		}
	}
}

// sourceConfig is the applog form of a policy's access log; its position is
// kept in the state directory under a name derived from the path.
func (d *Daemon) sourceConfig(l policy.AccessLog) applog.SourceConfig {
	sum := sha256.Sum256([]byte(l.Path))
	fields := applog.DefaultFields()
	for _, f := range []struct{ from, to *string }{
		{&l.Fields.Client, &fields.Client}, {&l.Fields.Time, &fields.Time}, {&l.Fields.Method, &fields.Method}, {&l.Fields.Path, &fields.Path},
		{&l.Fields.Request, &fields.Request}, {&l.Fields.Status, &fields.Status}, {&l.Fields.Latency, &fields.Latency},
		{&l.Fields.Forwarded, &fields.Forwarded}, {&l.Fields.LatencyUnit, &fields.LatencyUnit},
		{&l.Fields.UserAgent, &fields.UserAgent}, {&l.Fields.Query, &fields.Query},
	} {
		if *f.from != "" {
			*f.to = *f.from
		}
	}
	return applog.SourceConfig{
		Follow: applog.FollowOptions{
			Path:      l.Path,
			StateFile: filepath.Join(d.cfg.StateDir, "accesslogs", hex.EncodeToString(sum[:8])+".json"),
			FromStart: l.FromStart,
			MaxLine:   int(l.MaxLineLength),
		},
		Format: l.Format, Fields: fields, Forwarded: l.Forwarded, Proxies: clientip.Trusted(l.TrustedProxies),
		Windows: d.apiWindows, Matcher: d.apiMatcher,
	}
}

func (d *Daemon) startSource(ctx context.Context, l policy.AccessLog) error {
	cfg := d.sourceConfig(l)
	if err := os.MkdirAll(filepath.Dir(cfg.Follow.StateFile), 0o700); err != nil {
		return fmt.Errorf("access log state directory: %w", err)
	}
	src, err := applog.NewSource(cfg, func(s detect.Signal) bool { return d.tel.det.ObserveSignal(s) },
		d.log.With("component", "access-log"))
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	rs := &runningSource{cfg: l, src: src, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rs.done)
		if err := src.Run(sctx); err != nil {
			d.log.Error("access log source stopped", "path", l.Path, "err", err)
		}
	}()
	d.sig.mu.Lock()
	if d.sig.running == nil {
		d.sig.running = map[string]*runningSource{}
	}
	d.sig.running[l.Path] = rs
	d.sig.mu.Unlock()
	// the source logs "following access log" once it has the file open, and
	// an error for as long as it cannot
	return nil
}

// stopSources stops the sources for which stop says so (all when nil) and
// waits for them: each saves its position on the way out.
func (d *Daemon) stopSources(stop func(string, policy.AccessLog) bool) {
	d.sig.mu.Lock()
	var stopping []*runningSource
	for path, rs := range d.sig.running {
		if stop == nil || stop(path, rs.cfg) {
			rs.cancel()
			stopping = append(stopping, rs)
			delete(d.sig.running, path)
		}
	}
	d.sig.mu.Unlock()
	for _, rs := range stopping {
		<-rs.done
	}
}

// accessLogStats reads the running sources' counters, by path.
func (d *Daemon) accessLogStats() []applog.SourceStats {
	d.sig.mu.Lock()
	defer d.sig.mu.Unlock()
	out := make([]applog.SourceStats, 0, len(d.sig.running))
	for _, rs := range d.sig.running {
		out = append(out, rs.src.Stats())
	}
	sortByPath(out)
	return out
}

func sortByPath(s []applog.SourceStats) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].Path < s[j-1].Path; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func accessLogStatus(ss []applog.SourceStats) []control.AccessLogStatus {
	out := make([]control.AccessLogStatus, len(ss))
	for i, s := range ss {
		out[i] = control.AccessLogStatus{
			Path: s.Path, Format: s.Format, Lines: s.Lines, ParseErrors: s.ParseErrors, Signals: s.Signals,
			Rotations: s.Rotations, Truncations: s.Truncations, LagBytes: max(0, s.Size-s.Offset),
			LastLine: s.LastLine, Error: s.Err,
			Ignored: control.IgnoredLines{Stale: s.Stale, Future: s.Future, AllTrusted: s.AllTrusted, BadHop: s.BadHops},
		}
	}
	return out
}

// AccessLogs reports the access logs for the metrics (metrics.Signals).
func (d *Daemon) AccessLogs() []metrics.AccessLog {
	ss := d.accessLogStats()
	out := make([]metrics.AccessLog, len(ss))
	for i, s := range ss {
		out[i] = metrics.AccessLog{Path: s.Path, Lines: s.Lines, ParseErrors: s.ParseErrors, Signals: s.Signals,
			LagBytes: max(0, s.Size-s.Offset), Stale: s.Stale, Future: s.Future, AllTrusted: s.AllTrusted, BadHops: s.BadHops,
			Problems: s.Problems, Readable: s.Err == ""}
	}
	return out
}

// Reports counts the application's reports received (metrics.Signals).
func (d *Daemon) Reports() uint64 { return d.sig.reports.Load() }
