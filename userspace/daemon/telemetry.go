package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/apiguard/apiguard/userspace/events"
	"github.com/apiguard/apiguard/userspace/metrics"
)

// The daemon streams events and lists flags through the control API.
var (
	_ control.EventSource = (*Daemon)(nil)
	_ control.FlagSource  = (*Daemon)(nil)
	_ metrics.Daemon      = (*Daemon)(nil)
)

const (
	// eventHistory is how many events `apiguard events` can show without --follow.
	eventHistory = 1000
	// pruneEvery drops the detector's idle state while no events come.
	pruneEvery = 10 * time.Second
)

// telemetry is the event pipeline (ring buffer → detector → bans, followers)
// and what the metrics report about the daemon itself.
type telemetry struct {
	reader  *events.Reader
	hub     *events.Hub
	history *events.History
	det     *detect.Detector

	// detMu makes "read the policy in force, configure the detector" one step,
	// outside polMu: the detector calls back into the daemon (IsAllowed, Ban),
	// which takes polMu, while holding its own lock.
	detMu sync.Mutex

	reloadErrors atomic.Uint64
	manualBans   atomic.Uint64
}

// startTelemetry opens the ring buffer and builds the detector from the
// policy in force. Run calls it once the datapath is loaded and the policy
// applied.
func (d *Daemon) startTelemetry() error {
	history, err := events.NewHistory(eventHistory)
	if err != nil {
		return err
	}
	pol := d.CurrentPolicy()
	if pol == nil {
		return errors.New("start the detector: no policy in force")
	}
	det, err := detect.New(detect.FromPolicy(&pol.Spec, 0), detect.Options{
		Banner:    detect.BanFunc(d.detectorBan),
		IsAllowed: d.IsAllowed,
		ClientsIn: d.clientsIn,
		ProofOf:   d.proofOf,
		NeverBan:  d.neverBan,
		Logger:    d.log.With("component", "detector"),
	})
	if err != nil {
		return fmt.Errorf("start the detector: %w", err)
	}
	reader, err := events.Open(d.dp.EventsMap(), events.Options{})
	if err != nil {
		return err
	}
	d.tel.reader, d.tel.hub, d.tel.history, d.tel.det = reader, events.NewHub(), history, det
	return nil
}

// configureDetector gives the detector the settings of the policy in force.
func (d *Daemon) configureDetector() {
	d.tel.detMu.Lock()
	defer d.tel.detMu.Unlock()
	if d.tel.det == nil {
		return // not started yet: startTelemetry reads the policy itself
	}
	pol := d.CurrentPolicy()
	if pol == nil {
		return
	}
	if err := d.tel.det.SetConfig(detect.FromPolicy(&pol.Spec, 0)); err != nil {
		// the policy validated, so this is a bug between the two packages
		d.log.Error("the detector refused the policy's settings; it keeps the previous ones", "err", err)
	}
}

// detectorBan applies a ban the detector decided, with the reason and evidence
// `apiguard ban ls` shows.
func (d *Daemon) detectorBan(p netip.Prefix, ttl time.Duration, reason detect.Reason, evidence string) error {
	// the detector asked before deciding; the set may have grown since
	if why, ok := d.neverBan(p); ok {
		return fmt.Errorf("never banned: %s", why)
	}
	if _, err := d.Ban(p, ttl, string(reason)+": "+evidence, SourceDetector); err != nil {
		return err
	}
	d.reportBan(p, ttl, string(reason), evidence)
	return nil
}

// clientsIn counts the client keys inside p that the kernel saw since then.
func (d *Daemon) clientsIn(p netip.Prefix, since time.Time) (int, error) {
	seen := map[netip.Prefix]struct{}{}
	err := d.dp.Clients(func(c loader.Client) error {
		if !c.LastSeen.Before(since) && p.Contains(c.Addr.Addr()) {
			seen[c.Addr] = struct{}{}
		}
		return nil
	})
	return len(seen), err
}

// consumeEvents feeds every event to the detector, the history and the
// followers until ctx ends or the ring buffer fails.
func (d *Daemon) consumeEvents(ctx context.Context) error {
	t := &d.tel
	defer t.hub.Close()
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		// Close ends the reader's loop, which closes its queue and ends the
		// range below; a read error is returned by Err below, so only a
		// failure to close the ring buffer itself is logged here
		if err := t.reader.Close(); err != nil && !errors.Is(err, t.reader.Err()) {
			d.log.Warn("closing the event reader", "err", err)
		}
	}()
	for ev := range t.reader.Events() {
		t.det.Observe(&ev)
		t.history.Add(ev)
		t.hub.Publish(ev)
	}
	if err := t.reader.Err(); err != nil {
		return err
	}
	return nil
}

// pruneDetector drops idle detector state while no events come.
func (d *Daemon) pruneDetector(ctx context.Context) error {
	tick := time.NewTicker(pruneEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			d.tel.det.Prune()
		}
	}
}

// listenMetrics opens the metrics address early, so a busy port stops the
// daemon before it touches the kernel.
func (d *Daemon) listenMetrics() (net.Listener, error) {
	ln, err := net.Listen("tcp", d.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	return ln, nil
}

// serveMetrics serves /metrics on ln until ctx ends.
func (d *Daemon) serveMetrics(ctx context.Context, ln net.Listener) error {
	col, err := metrics.NewCollector(metrics.Sources{
		Datapath: d.dp, Events: d.tel.reader, Fanout: d.tel.hub, Detector: d.tel.det, Daemon: d, CrowdSec: d, Signals: d, Services: d, SynProxy: d,
	})
	if err != nil {
		return err
	}
	reg, err := metrics.NewRegistry(col)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           metrics.Handler(reg, d.Health),
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	d.log.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics", "health", "/healthz")
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shut)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("metrics server shutdown: %w", err)
	}
	return nil
}

// RecentEvents returns up to n of the latest events.
func (d *Daemon) RecentEvents(_ context.Context, n int) ([]control.Event, error) {
	if d.tel.history == nil {
		return nil, control.NotFoundf("the event reader is not running")
	}
	evs := d.tel.history.Last(n)
	out := make([]control.Event, len(evs))
	for i := range evs {
		out[i] = events.Describe(&evs[i], loader.MonoToWall)
	}
	return out, nil
}

// FollowEvents subscribes a follower to new events.
func (d *Daemon) FollowEvents(context.Context) (control.EventFeed, error) {
	if d.tel.hub == nil {
		return nil, control.NotFoundf("the event reader is not running")
	}
	sub, err := d.tel.hub.Subscribe(0)
	if err != nil {
		return nil, err
	}
	return feed{sub}, nil
}

type feed struct{ sub *events.Subscription }

func (f feed) Next(ctx context.Context) (control.Event, bool) {
	select {
	case ev, ok := <-f.sub.Events():
		if !ok {
			return control.Event{}, false
		}
		return events.Describe(&ev, loader.MonoToWall), true
	case <-ctx.Done():
		return control.Event{}, false
	}
}

func (f feed) Missed() uint64 { return f.sub.Dropped() }
func (f feed) Close()         { f.sub.Close() }

// Flagged lists the detector's flags.
func (d *Daemon) Flagged(_ context.Context, activeOnly bool) ([]control.Flag, error) {
	if d.tel.det == nil {
		return nil, control.NotFoundf("the detector is not running")
	}
	flags := d.tel.det.Flags()
	if !activeOnly {
		return flags, nil
	}
	out := flags[:0]
	for _, f := range flags {
		if f.Active {
			out = append(out, f)
		}
	}
	return out, nil
}

// ReloadErrors counts refused policies (SIGHUP or the control API).
func (d *Daemon) ReloadErrors() uint64 { return d.tel.reloadErrors.Load() }

// ManualBans counts bans made through the control API.
func (d *Daemon) ManualBans() uint64 { return d.tel.manualBans.Load() }

// Attachments lists the interfaces this run attached to.
func (d *Daemon) Attachments() []loader.Attachment { return d.attachments }
