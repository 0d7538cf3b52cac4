// Package daemon is apiguard's long-running process: it loads the datapath (or
// adopts the one an earlier run pinned), applies the policy, attaches to the
// interfaces, and runs its components — the control server, the ban sweeper, the
// SIGHUP reloader — until its context ends. It then releases its handles and
// leaves the pinned programs and maps enforcing.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/privs"
)

// Defaults for the daemon's flags.
const (
	DefaultStateDir    = "/var/lib/apiguard"
	DefaultMetricsAddr = "127.0.0.1:9470"
	DefaultSweepEvery  = 10 * time.Second
)

// Config is what `apiguard daemon` is told on its command line.
type Config struct {
	Ifaces     []string
	PolicyPath string
	Attach     loader.AttachMode
	PinDir     string // bpffs directory for maps and links
	Socket     string // control socket
	StateDir   string // ban reasons and the last applied policy
	// MetricsAddr is where the metrics server listens (host:port).
	MetricsAddr string
	// SweepEvery is how often expired bans are removed from the kernel's map.
	SweepEvery time.Duration
	// FlowSweepEvery is how often idle and closed connections are swept from
	// the flow table (flows.go).
	FlowSweepEvery time.Duration
	// FlowCapacity sizes the flow table (loader.Options.FlowCapacity). It is
	// fixed while the maps stay pinned.
	FlowCapacity uint32
	// ResolvConf is where the host's resolvers are read from: they are
	// never banned (neverban.go).
	ResolvConf string
	Version    string
	Log        *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Attach == "" {
		c.Attach = loader.AttachNative
	}
	if c.PinDir == "" {
		c.PinDir = loader.DefaultPinDir
	}
	if c.Socket == "" {
		c.Socket = control.DefaultSocket
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.MetricsAddr == "" {
		c.MetricsAddr = DefaultMetricsAddr
	}
	if c.SweepEvery == 0 {
		c.SweepEvery = DefaultSweepEvery
	}
	if c.FlowSweepEvery == 0 {
		c.FlowSweepEvery = DefaultFlowSweepEvery
	}
	if c.FlowCapacity == 0 {
		c.FlowCapacity = DefaultFlowCapacity
	}
	if c.ResolvConf == "" {
		c.ResolvConf = DefaultResolvConf
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Ifaces) == 0 {
		errs = append(errs, errors.New("no interface to guard: give at least one --iface"))
	}
	if len(c.Ifaces) > 1 && slices.Contains(c.Ifaces, AutoIface) {
		errs = append(errs, fmt.Errorf("--iface %s stands alone: it takes the interfaces of the default routes", AutoIface))
	}
	seen := map[string]bool{}
	for _, ifc := range c.Ifaces {
		if err := checkIfaceName(ifc); err != nil {
			errs = append(errs, err)
		}
		if seen[ifc] {
			errs = append(errs, fmt.Errorf("interface %s is given twice", ifc))
		}
		seen[ifc] = true
	}
	if c.PolicyPath == "" {
		errs = append(errs, errors.New("no policy file: give --policy FILE"))
	}
	if _, err := loader.ParseAttachMode(string(c.Attach)); err != nil {
		errs = append(errs, err)
	}
	for _, p := range []struct{ flag, path string }{{"--bpffs", c.PinDir}, {"--socket", c.Socket}, {"--state-dir", c.StateDir}} {
		if !filepath.IsAbs(p.path) {
			errs = append(errs, fmt.Errorf("%s %q: want an absolute path", p.flag, p.path))
		}
	}
	if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
		errs = append(errs, fmt.Errorf("--metrics-addr %q: %w", c.MetricsAddr, err))
	}
	if c.SweepEvery < 0 {
		errs = append(errs, fmt.Errorf("ban sweep interval %v is negative", c.SweepEvery))
	}
	if c.FlowSweepEvery < 0 {
		errs = append(errs, fmt.Errorf("flow sweep interval %v is negative", c.FlowSweepEvery))
	}
	if c.FlowCapacity < MinFlowCapacity || c.FlowCapacity > MaxFlowCapacity {
		errs = append(errs, fmt.Errorf("--flow-capacity %d: want %d to %d connections", c.FlowCapacity, MinFlowCapacity, MaxFlowCapacity))
	}
	return errors.Join(errs...)
}

// checkIfaceName catches names the kernel would refuse before we get there, and
// those that would not survive being part of a pin's file name.
func checkIfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("interface name %q is longer than 15 bytes", name)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("%q is not a valid interface name", name)
	}
	return nil
}

// Daemon runs apiguard on one host.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	started time.Time

	dp *loader.Datapath
	// ifaces are what --iface auto resolved to (guarded says which are guarded).
	ifaces      []string
	attachments []loader.Attachment
	// attachWarnings say which interfaces got a weaker hook than asked for
	// (--iface auto's generic fallback).
	attachWarnings []string
	// pinWarning says why the pins cannot outlive this process ("": they can).
	pinWarning string

	bans *banBook

	// polMu serialises policy changes; pol is the policy in force.
	polMu sync.Mutex
	pol   *policyState
	// applyErr is why the kernel refused the latest policy write (nil after
	// a success): a datapath that cannot take a policy is unhealthy.
	applyErr error
	// saved is the last applied policy as an earlier run recorded it: until
	// this run applies its own, it keeps service ids stable and says when the
	// policy still in force was applied.
	saved *savedPolicy

	// tel is the event reader, the detector and the counters the metrics
	// report (telemetry.go).
	tel telemetry

	// cs is the link to a CrowdSec LAPI (crowdsec.go).
	cs csLink
	// sig follows the access logs the policy names (apilogs.go).
	sig apiSignals
	// never is the set of addresses no ban may cover (neverban.go).
	never neverBanLink

	// trialMu guards the policy on trial (trial.go); it is taken before polMu.
	trialMu   sync.Mutex
	trial     *trial
	trialSeq  uint64
	trialNote string
}

// New checks cfg. Nothing touches the system until Run.
func New(cfg Config) (*Daemon, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Daemon{cfg: cfg, log: cfg.Log, cs: csLink{changed: make(chan struct{}, 1)},
		never: neverBanLink{changed: make(chan struct{}, 1)}}, nil
}

// Config returns the daemon's configuration with defaults filled in.
func (d *Daemon) Config() Config { return d.cfg }

// Datapath is the loaded datapath, for components that read its maps. It is
// nil before Run has loaded it.
func (d *Daemon) Datapath() *loader.Datapath { return d.dp }

// Run starts the daemon and blocks until ctx ends or a component fails. A bad
// policy file at start is an error before anything in the kernel changes. On
// return the pinned programs and maps stay in place and keep enforcing.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = time.Now()
	// Subscribe to SIGHUP first: from here on it means reload, never exit.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// A log reader that goes away (a pipe to tee, a restarted journal) must not
	// kill the daemon: Go exits on SIGPIPE from stdout/stderr unless it is
	// ignored, and then the write just fails.
	signal.Ignore(syscall.SIGPIPE)

	// The policy is read before anything else, so a broken file changes nothing.
	initial, err := d.readPolicyFile()
	if err != nil {
		return err
	}
	if err := d.resolveIfaces(); err != nil {
		return err
	}

	unlock, err := d.prepareDirs()
	if err != nil {
		return err
	}
	defer unlock()

	ln, err := control.Listen(d.cfg.Socket)
	if err != nil {
		return err
	}
	defer ln.Close() // Serve closes it too; this covers the early returns
	mln, err := d.listenMetrics()
	if err != nil {
		return err
	}
	defer mln.Close() // the metrics server closes it too

	if err := privs.RaiseMemlock(); err != nil {
		// kernels from 5.11 charge BPF memory to the cgroup, not this limit
		d.log.Info("RLIMIT_MEMLOCK not raised; kernels before 5.11 may refuse to load", "err", err)
	}
	if err := d.load(); err != nil {
		return err
	}
	defer func() {
		if err := d.dp.Close(); err != nil {
			d.log.Error("release datapath handles", "err", err)
		}
	}()
	if err := d.openBans(); err != nil {
		return err
	}
	defer func() {
		if err := d.bans.close(); err != nil {
			d.log.Error("close the ban book", "err", err)
		}
	}()
	d.loadSavedPolicy()
	if _, err := d.apply(initial, "start"); err != nil {
		return err
	}
	d.forgetOldTrial()
	if err := d.attach(); err != nil {
		return err
	}
	// before the detector starts: it must know whom never to ban
	d.buildNeverBan(ctx)
	if err := d.startTelemetry(); err != nil {
		return err
	}
	d.dropPrivileges()

	d.log.Info("apiguard daemon running", "version", d.cfg.Version, "socket", d.cfg.Socket,
		"ifaces", strings.Join(d.guarded(), ","), "mode", d.cfg.Attach)
	err = runAll(ctx, d.log, d.components(ln, mln, hup))
	d.revertTrialOnStop()
	d.log.Info("apiguard daemon stopped; the pinned datapath keeps enforcing", "pins", d.cfg.PinDir)
	return err
}

// component is one long-running part of the daemon. run blocks until ctx ends
// (returning nil) or the component fails (the daemon then stops).
type component struct {
	name string
	run  func(ctx context.Context) error
}

// components lists what runs while the daemon is up.
func (d *Daemon) components(ln, metricsLn net.Listener, hup <-chan os.Signal) []component {
	return []component{
		{"control", func(ctx context.Context) error { return control.NewServer(d, d.log).Serve(ctx, ln) }},
		{"ban-sweeper", d.sweepBans},
		{"ban-book", d.maintainBans},
		{"flow-sweeper", d.sweepFlows},
		{"reloader", func(ctx context.Context) error { return d.reloadOnHangup(ctx, hup) }},
		{"events", d.consumeEvents},
		{"detector-pruner", d.pruneDetector},
		{"access-logs", d.followAccessLogs},
		{"metrics", func(ctx context.Context) error { return d.serveMetrics(ctx, metricsLn) }},
		{"crowdsec", d.runCrowdSec},
		{"never-ban", d.refreshNeverBan},
	}
}

// runAll runs every component in its own goroutine. The first failure cancels
// the others; runAll returns once all have returned, with that first failure.
func runAll(ctx context.Context, log *slog.Logger, comps []component) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, c := range comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.run(ctx)
			if err == nil || ctx.Err() != nil && errors.Is(err, context.Canceled) {
				log.Debug("component stopped", "component", c.name)
				return
			}
			log.Error("component failed; stopping the daemon", "component", c.name, "err", err)
			once.Do(func() {
				first = fmt.Errorf("%s: %w", c.name, err)
				cancel()
			})
		}()
	}
	wg.Wait()
	return first
}

// prepareDirs checks the pin directory is on bpffs (mounting /sys/fs/bpf when
// it is missing), creates it and the state
// directory, and locks the pin directory so that two daemons never share it.
func (d *Daemon) prepareDirs() (unlock func(), err error) {
	// before MkdirAll, which would otherwise create the directory on the wrong
	// file system and leave the error to a puzzling pin failure
	scope, err := loader.EnsureBPFFS(d.cfg.PinDir)
	if err != nil {
		return nil, fmt.Errorf("--bpffs: %w", err)
	}
	if scope.Mounted {
		d.log.Info("mounted bpffs", "at", "/sys/fs/bpf")
	}
	if scope.Ephemeral != "" {
		// the whole point of pinning is lost: say so at start and in status
		d.pinWarning = "pins die with the daemon: " + scope.Ephemeral
		d.log.Warn(d.pinWarning, "pins", d.cfg.PinDir)
	}
	for _, dir := range []string{d.cfg.PinDir, d.cfg.StateDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	return LockPinDir(d.cfg.PinDir)
}

// dropPrivileges gives up the capabilities used only to load and attach
// (package privs): from here on the daemon reads and writes maps, which
// CAP_BPF covers. A daemon that cannot drop them says so and runs on.
func (d *Daemon) dropPrivileges() {
	dropped, err := privs.Drop(privs.AfterStart...)
	if err != nil {
		d.log.Warn("capabilities needed only to start are kept", "err", err)
		return
	}
	kept, err := privs.Held()
	if err != nil {
		d.log.Warn("read the capabilities kept", "err", err)
	}
	d.log.Info("dropped the capabilities needed only to start", "dropped", strings.Join(dropped, ","), "kept", strings.Join(kept, ","))
}

func (d *Daemon) load() error {
	dp, err := loader.Load(loader.Options{PinDir: d.cfg.PinDir, FlowCapacity: d.cfg.FlowCapacity})
	if err != nil {
		return err
	}
	d.dp = dp
	if dp.Adopted() {
		d.log.Info("adopted the pinned datapath: bans, client state and the policy in force carry over",
			"pins", d.cfg.PinDir, "generation", dp.Generation())
	} else {
		d.log.Info("loaded a fresh datapath", "pins", d.cfg.PinDir)
	}
	return nil
}

func (d *Daemon) attach() error {
	want := map[string]bool{}
	for _, ifc := range d.guarded() {
		att, err := d.attachOne(ifc)
		if err != nil {
			if len(d.attachments) > 0 {
				d.log.Warn("interfaces attached before the failure stay guarded; 'apiguard detach' removes them", "attached", len(d.attachments))
			}
			return err
		}
		d.attachments = append(d.attachments, att)
		want[string(att.Mode)+"/"+att.Iface] = true
		if att.Adopted {
			d.log.Info("adopted the earlier attachment without a gap", "iface", ifc, "mode", att.Mode)
		} else {
			d.log.Info("attached", "iface", ifc, "mode", att.Mode)
		}
	}
	pinned, err := loader.Attachments(d.cfg.PinDir)
	if err != nil {
		return err
	}
	for _, a := range pinned {
		if !want[string(a.Mode)+"/"+a.Iface] {
			d.log.Warn("an earlier run's attachment is still in place and not managed by this run; 'apiguard detach' removes all",
				"iface", a.Iface, "mode", a.Mode)
		}
	}
	return nil
}
