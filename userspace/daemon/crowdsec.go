package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/crowdsec"
	"github.com/apiguard/apiguard/userspace/policy"
	"github.com/apiguard/apiguard/userspace/safefile"
	"go.yaml.in/yaml/v3"
)

// SourceCrowdSec marks bans that enforce a CrowdSec LAPI decision. They are
// not written to the ban book: the LAPI is their record, and a startup pull
// puts the book's job (reconciling after a restart) back in order.
const SourceCrowdSec = "crowdsec"

// The daemon is the bouncer's kernel and reports its CrowdSec state.
var _ crowdsec.Kernel = (*Daemon)(nil)

// csLink runs the bouncer and the reporter the policy in force asks for.
type csLink struct {
	changed chan struct{} // the policy changed: look at its crowdsec section again

	mu       sync.Mutex
	cfg      policy.CrowdSec // the configuration running
	bouncer  *crowdsec.Bouncer
	reporter *crowdsec.Reporter
	err      string // why the configuration could not start
	insecure bool   // plain HTTP to a LAPI that is not this host
	stop     context.CancelFunc
	done     chan struct{}

	// full counts decisions refused because the kernel's ban map is full;
	// fullWarned makes that a single log line.
	full       atomic.Uint64
	fullWarned atomic.Bool
}

// configureCrowdSec tells the crowdsec component to look at the policy in force.
func (d *Daemon) configureCrowdSec() {
	if d.cs.changed == nil {
		return
	}
	select {
	case d.cs.changed <- struct{}{}:
	default: // a look is already due
	}
}

// runCrowdSec follows the policy's crowdsec section until ctx ends. A LAPI
// that is down, or credentials that are wrong, never stop the daemon: the
// failure is logged and shown in `apiguard status`, and the local policy keeps
// enforcing. Credentials are read again on every policy change (SIGHUP), so a
// rotated key takes effect without a restart.
func (d *Daemon) runCrowdSec(ctx context.Context) error {
	defer d.stopCrowdSec()
	running := "" // what the link runs with: the section and the credentials read
	for {
		var want policy.CrowdSec
		if pol := d.CurrentPolicy(); pol != nil {
			want = pol.Spec.CrowdSec
		}
		creds, err := readCredentials(want)
		key := fmt.Sprintf("%#v|%#v|%v", want, creds, err)
		if key != running {
			d.stopCrowdSec()
			d.startCrowdSec(ctx, want, creds, err)
			running = key
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.cs.changed:
		}
	}
}

func (d *Daemon) stopCrowdSec() {
	d.cs.mu.Lock()
	stop, done := d.cs.stop, d.cs.done
	d.cs.stop, d.cs.done, d.cs.bouncer, d.cs.reporter, d.cs.err, d.cs.insecure = nil, nil, nil, nil, "", false
	d.cs.cfg = policy.CrowdSec{}
	d.cs.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// credentials are the secrets a crowdsec section names, once read, and its
// TLS files.
type credentials struct {
	key, machine, password string
	tls                    crowdsec.TLS
}

func readCredentials(c policy.CrowdSec) (credentials, error) {
	var cr credentials
	var err error
	if !c.Enabled {
		return cr, nil
	}
	for _, f := range []struct {
		path, what string
		to         *[]byte
	}{{c.TLS.CAFile, "LAPI CA file", &cr.tls.CA}, {c.TLS.CertFile, "LAPI client certificate", &cr.tls.Cert},
		{c.TLS.KeyFile, "LAPI client key", &cr.tls.Key}} {
		if f.path == "" {
			continue
		}
		if *f.to, err = os.ReadFile(f.path); err != nil {
			return cr, fmt.Errorf("read the %s: %w", f.what, err)
		}
	}
	if c.Report.Enabled {
		if cr.machine, cr.password, err = machineCredentials(c.Report); err != nil {
			return cr, err
		}
	}
	// a client certificate may stand for the key (policy: then no key is named)
	if c.Bouncer.Enabled && (c.Bouncer.APIKey != policy.Secret{} || c.TLS.CertFile == "") {
		if cr.key, err = readSecret(c.Bouncer.APIKey, "bouncer API key"); err != nil {
			return cr, err
		}
	}
	return cr, nil
}

func (d *Daemon) startCrowdSec(ctx context.Context, c policy.CrowdSec, cr credentials, credErr error) {
	d.cs.mu.Lock()
	defer d.cs.mu.Unlock()
	d.cs.cfg = c
	if !c.Enabled {
		return
	}
	log := d.log.With("component", "crowdsec")
	b, r, err := d.newCrowdSec(c, cr)
	if credErr != nil {
		err = credErr
	}
	if err != nil {
		d.cs.err = err.Error()
		log.Error("CrowdSec link not started; the local policy keeps enforcing", "err", err)
		return
	}
	if u, err := url.Parse(c.LAPI); err == nil && u.Scheme == "http" && !crowdsec.IsLoopback(u) {
		d.cs.insecure = true
		log.Warn("PLAIN HTTP TO A LAPI THAT IS NOT THIS HOST: anyone on the path can read the bouncer's API key and the machine's password, and inject decisions that ban any address; use https:// with crowdsec.tls.caFile",
			"lapi", c.LAPI)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var wg sync.WaitGroup
	if b != nil {
		wg.Go(func() { _ = b.Run(cctx) })
	}
	if r != nil {
		wg.Go(func() { _ = r.Run(cctx) })
	}
	go func() { wg.Wait(); close(done) }()
	d.cs.bouncer, d.cs.reporter, d.cs.stop, d.cs.done = b, r, cancel, done
	log.Info("CrowdSec link started", "lapi", c.LAPI, "bouncer", b != nil, "report", r != nil)
}

func (d *Daemon) newCrowdSec(c policy.CrowdSec, cr credentials) (*crowdsec.Bouncer, *crowdsec.Reporter, error) {
	log := d.log.With("component", "crowdsec")
	var tlsCfg *crowdsec.TLS
	if c.TLS != (policy.CrowdSecTLS{}) {
		tlsCfg = &cr.tls
	}
	hc, err := crowdsec.NewHTTPClient(tlsCfg)
	if err != nil {
		return nil, nil, err
	}
	var r *crowdsec.Reporter
	if c.Report.Enabled && cr.machine != "" {
		r, err = crowdsec.NewReporter(crowdsec.ReporterConfig{URL: c.LAPI, MachineID: cr.machine, Password: cr.password,
			BanDuration: c.Report.BanDuration, HTTPClient: hc, Version: d.cfg.Version, Logger: log})
		if err != nil {
			return nil, nil, err
		}
	}
	var b *crowdsec.Bouncer
	certAuth := len(cr.tls.Cert) > 0
	if c.Bouncer.Enabled && (cr.key != "" || certAuth) {
		cfg := crowdsec.BouncerConfig{URL: c.LAPI, APIKey: cr.key, CertAuth: certAuth, Interval: c.Bouncer.PollInterval,
			Scopes: c.Bouncer.Scopes, Origins: c.Bouncer.Origins, HTTPClient: hc, Version: d.cfg.Version, Logger: log,
			MinPrefix4: int(c.Bouncer.MinPrefix.IPv4), MinPrefix6: int(c.Bouncer.MinPrefix.IPv6)}
		if r != nil {
			cfg.Own = r.Own
		}
		if b, err = crowdsec.NewBouncer(cfg, d); err != nil {
			return nil, nil, err
		}
	}
	return b, r, nil
}

// readSecret reads a credential from its file (first line) or variable.
func readSecret(s policy.Secret, what string) (string, error) {
	var v string
	switch {
	case s.File != "":
		// one line and nothing else: a policy may name any file, and this
		// one is sent to the LAPI as a credential (safefile.ReadSecret)
		var err error
		if v, err = safefile.ReadSecret(s.File); err != nil {
			return "", fmt.Errorf("read the %s: %w", what, err)
		}
	case s.Env != "":
		v = strings.TrimSpace(os.Getenv(s.Env))
		if v == "" {
			return "", fmt.Errorf("the %s variable %s is not set or empty", what, s.Env)
		}
	default:
		return "", fmt.Errorf("no %s configured", what)
	}
	return v, nil
}

// machineCredentials reads the machine id and password, from a file as
// `cscli machines add -f` writes it or from their own sources.
func machineCredentials(r policy.CrowdSecReport) (id, pw string, err error) {
	if r.CredentialsFile != "" {
		data, err := safefile.Read(r.CredentialsFile, safefile.MaxSecret)
		if err != nil {
			return "", "", fmt.Errorf("read the CrowdSec machine credentials: %w", err)
		}
		var f struct {
			Login    string `yaml:"login"`
			Password string `yaml:"password"`
		}
		// yaml's own message quotes the value it could not decode: not passed on
		if err := yaml.Unmarshal(data, &f); err != nil {
			return "", "", fmt.Errorf("%s is not a credentials file as cscli writes it (url, login and password)", r.CredentialsFile)
		}
		if f.Login == "" || f.Password == "" {
			return "", "", fmt.Errorf("%s lacks login or password", r.CredentialsFile)
		}
		return f.Login, f.Password, nil
	}
	if id, err = readSecret(r.MachineID, "CrowdSec machine id"); err != nil {
		return "", "", err
	}
	if pw, err = readSecret(r.Password, "CrowdSec machine password"); err != nil {
		return "", "", err
	}
	return id, pw, nil
}

// reportBan passes a detector ban to the LAPI when the policy asks for it.
func (d *Daemon) reportBan(p netip.Prefix, ttl time.Duration, reason, evidence string) {
	d.cs.mu.Lock()
	r := d.cs.reporter
	d.cs.mu.Unlock()
	if r != nil {
		r.Report(p, ttl, reason, evidence)
	}
}

// ApplyCrowdSec writes the bouncer's bans. A manual or detector ban on the
// same prefix wins (it stays as it is, and a deletion does not lift it), a
// prefix the allow list covers is not banned (it would have no effect), and
// neither is one covering the never-ban set (neverban.go): it is counted.
func (d *Daemon) ApplyCrowdSec(add []crowdsec.Ban, remove []netip.Prefix) error {
	var allow []netip.Prefix
	d.polMu.Lock()
	if d.pol != nil {
		allow = d.pol.pol.Spec.Allow
	}
	d.polMu.Unlock()
	code := sourceCode(SourceCrowdSec)
	add = d.withoutNeverBan(add)
	d.bans.mu.Lock()
	defer d.bans.mu.Unlock()
	for _, p := range remove {
		if rec, ok := d.bans.recs[p]; ok && rec.Source != SourceCrowdSec {
			continue
		}
		if err := d.dp.Unban(p); err != nil && !errors.Is(err, loader.ErrNotBanned) {
			return err
		}
	}
next:
	for _, b := range add {
		if rec, ok := d.bans.recs[b.Prefix]; ok && rec.Source != SourceCrowdSec {
			continue
		}
		for _, a := range allow {
			if a.Addr().Is4() == b.Prefix.Addr().Is4() && a.Bits() <= b.Prefix.Bits() && a.Contains(b.Prefix.Addr()) {
				continue next
			}
		}
		if err := d.dp.Ban(loader.Ban{Prefix: b.Prefix, Expires: b.Expires, Reason: code}); err != nil {
			if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.E2BIG) {
				// a full map refuses this ban, not the rest: the others still apply
				d.cs.full.Add(1)
				if !d.cs.fullWarned.Swap(true) {
					d.log.Warn("the kernel's ban map is full; CrowdSec decisions beyond its capacity are not enforced",
						"family", map[bool]string{true: "IPv4", false: "IPv6"}[b.Prefix.Addr().Is4()], "err", err)
				}
				continue
			}
			return err
		}
	}
	return nil
}

// CrowdSecBans lists the kernel's bans of source crowdsec.
func (d *Daemon) CrowdSecBans() ([]netip.Prefix, error) {
	d.bans.mu.Lock()
	defer d.bans.mu.Unlock()
	bans, err := d.dp.Bans()
	if err != nil {
		return nil, err
	}
	code := sourceCode(SourceCrowdSec)
	var out []netip.Prefix
	for _, b := range bans {
		if b.Reason != code {
			continue
		}
		if rec, ok := d.bans.recs[b.Prefix]; ok && rec.Source != SourceCrowdSec {
			continue
		}
		out = append(out, b.Prefix)
	}
	return out, nil
}

// CrowdSecStats is the bouncer's and the reporter's state (nil: not running).
func (d *Daemon) CrowdSecStats() (*crowdsec.BouncerStats, *crowdsec.ReporterStats) {
	d.cs.mu.Lock()
	b, r := d.cs.bouncer, d.cs.reporter
	d.cs.mu.Unlock()
	var bs *crowdsec.BouncerStats
	var rs *crowdsec.ReporterStats
	if b != nil {
		s := b.Stats()
		bs = &s
	}
	if r != nil {
		s := r.Stats()
		rs = &s
	}
	return bs, rs
}

// crowdSecStatus is the status block; nil when the policy has no crowdsec section.
func (d *Daemon) crowdSecStatus() *control.CrowdSec {
	d.cs.mu.Lock()
	cfg, errText, insecure := d.cs.cfg, d.cs.err, d.cs.insecure
	d.cs.mu.Unlock()
	if !cfg.Enabled {
		return nil
	}
	b, r := d.CrowdSecStats()
	return &control.CrowdSec{LAPI: cfg.LAPI, Error: errText, Bouncer: b, Reporter: r, MapFull: d.cs.full.Load(), Insecure: insecure}
}

// crowdSecOrigin names the LAPI origin of a crowdsec ban, for `ban ls`.
func (d *Daemon) crowdSecOrigin(p netip.Prefix) string {
	d.cs.mu.Lock()
	b := d.cs.bouncer
	d.cs.mu.Unlock()
	if b == nil {
		return ""
	}
	return b.Origin(p)
}
