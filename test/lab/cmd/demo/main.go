// Command demo shows apiguard at work: in a network-namespace lab it plays one
// attack after another against a small HTTP JSON API, each twice — once with
// apiguard in monitor mode (it only counts what it would drop: the "without"
// column) and once enforcing — and prints what two legitimate clients saw,
// second by second, then a summary. `make demo` builds apiguard and runs it as
// root; it takes about a minute and leaves nothing behind.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/userspace/control"
)

func main() {
	lab.RunRoleIfAsked()
	err := run()
	switch {
	case errors.Is(err, errInterrupted):
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// errInterrupted ends a run that a signal cut short, after a full cleanup.
var errInterrupted = errors.New("interrupted")

type options struct {
	bin    string
	policy string
	phase  time.Duration
	only   string
}

func run() error {
	var o options
	flag.StringVar(&o.bin, "apiguard", "bin/apiguard", "the apiguard binary (make build)")
	flag.StringVar(&o.policy, "policy", "policies/default.yaml", "the policy apiguard enforces")
	flag.DurationVar(&o.phase, "phase", 4*time.Second, "how long each attack runs, in each mode")
	flag.StringVar(&o.only, "only", "", "run only the scenarios whose name contains this")
	flag.Parse()
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root (network namespaces, BPF): run it with sudo")
	}
	if o.phase < time.Second || o.phase > time.Minute {
		return fmt.Errorf("--phase %v: want 1s to 1m", o.phase)
	}
	var err error
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		return err
	}
	if _, err := os.Stat(o.bin); err != nil {
		return fmt.Errorf("no apiguard binary (run make build): %w", err)
	}
	if o.policy, err = filepath.Abs(o.policy); err != nil {
		return err
	}
	scenarios := selectScenarios(o.only)
	if len(scenarios) == 0 {
		return fmt.Errorf("--only %q matches no scenario", o.only)
	}

	// Ctrl-C and SIGTERM end the run early; cleanup still runs in full, and
	// further signals are ignored until it is done. A reader that goes away
	// (demo | head) must not kill the demo before it cleaned up either.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	signal.Ignore(syscall.SIGPIPE)

	stale, err := lab.CleanStale()
	if len(stale) > 0 {
		fmt.Printf("removed what a killed demo or test left behind: %s\n\n", strings.Join(stale, ", "))
	}
	if err != nil {
		return err
	}

	d := &demo{opts: o}
	runErr := d.play(ctx, scenarios)
	cleanErr := d.cleanup()
	if ctx.Err() != nil && runErr != nil {
		fmt.Println("\ninterrupted")
		return errors.Join(errInterrupted, cleanErr)
	}
	return errors.Join(runErr, cleanErr)
}

// scenario is one attack, played without and with apiguard.
type scenario struct {
	name   string // summary row
	title  string // what the attack does
	attack lab.Attack
	v6     bool
	unit   string // what the attack's count counts
	// calm says why the attack may not hurt without apiguard; printed only
	// when the run shows it did not.
	calm string
	// hurtWith says why apiguard may hurt a client here; printed only when
	// the run shows it did.
	hurtWith string
	// newcomers: during the attack, fresh clients (a source address each,
	// never seen before) make one request each; and the run "without"
	// enforces the policy as written, the run "with" adds synProxy: auto to
	// the attacked service (proxied).
	newcomers bool
}

// newcomersPerRun is how many fresh clients make their first request during
// each run of a newcomers scenario.
const newcomersPerRun = 100

func allScenarios() []scenario {
	return []scenario{
		{
			name: "UDP flood, one source", unit: "datagrams",
			title:  "one attacker sends 64-byte UDP datagrams to port 8080 as fast as 250k/s",
			attack: lab.Attack{Kind: lab.UDPFlood, Port: 8080, Rate: 250000},
			calm:   "UDP to a port nobody listens on costs the server's kernel little",
		},
		{
			name: "SYN flood, random sources, IPv4", unit: "SYNs",
			title:  "SYNs to port 80 from random spoofed IPv4 sources, 200k/s",
			attack: lab.Attack{Kind: lab.SYNFlood, Port: 80, Rate: 200000},
			calm:   "the kernel's SYN cookies absorb a spoofed SYN flood of this size",
			hurtWith: "the policy's total connection limit for port 80 (2000/s) is shared: a client the server " +
				"has not yet sent data to (connections.provenClientTTL) loses its SYNs as often as the flood does",
		},
		{
			name: "SYN flood, random sources, IPv6", unit: "SYNs", v6: true,
			title:  "SYNs to port 80 from random spoofed IPv6 sources, 200k/s",
			attack: lab.Attack{Kind: lab.SYNFlood, Port: 80, Rate: 200000},
			calm:   "the kernel's SYN cookies absorb a spoofed SYN flood of this size",
			hurtWith: "the policy's total connection limit for port 80 (2000/s) is shared: a client the server " +
				"has not yet sent data to (connections.provenClientTTL) loses its SYNs as often as the flood does",
		},
		{
			name: "SYN flood, new clients", unit: "SYNs", newcomers: true,
			title: fmt.Sprintf("SYNs to port 80 from random spoofed IPv4 sources, 200k/s, while %d clients new to the server "+
				"(a fresh source address each) make their first request; without and with the SYN proxy (synProxy: auto)", newcomersPerRun),
			attack: lab.Attack{Kind: lab.SYNFlood, Port: 80, Rate: 200000},
			hurtWith: "the flood spends the shared total connection limit, and a first connection has no earlier " +
				"handshake to vouch for it: see the newcomers' line",
		},
		{
			name: "HTTP request flood, one source", unit: "requests",
			title:  "one attacker sends POST /login (a password hash each) over 128 keep-alive connections, as fast as answered",
			attack: lab.Attack{Kind: lab.HTTPFlood, Port: 80, Path: "/login", Conns: 128},
		},
		{
			name: "connection flood, one source", unit: "connections",
			title:  "one attacker opens 500 TCP connections a second to port 80 and holds them",
			attack: lab.Attack{Kind: lab.ConnFlood, Port: 80, Rate: 500},
			calm:   "the server's connection limit was not reached",
		},
		{
			name: "SYN port scan, one source", unit: "SYNs",
			title:  "one attacker sends SYNs to ports 1-10000, 5000 a second",
			attack: lab.Attack{Kind: lab.PortScan, Port: 1, Ports: 10000, Rate: 5000},
			calm:   "a scan costs the server little; it is a prelude, not an attack",
		},
	}
}

func selectScenarios(only string) []scenario {
	var out []scenario
	for _, s := range allScenarios() {
		if only == "" || strings.Contains(strings.ToLower(s.name), strings.ToLower(only)) {
			out = append(out, s)
		}
	}
	return out
}

// The two legitimate clients.
var clientSetups = []struct {
	label string
	desc  string
	cfg   lab.ClientConfig
}{
	{"api", "an API client: 40 req/s over keep-alive connections", lab.ClientConfig{Rate: 40}},
	{"sessions", "short sessions: 20 req/s, a new connection every 5 requests", lab.ClientConfig{Rate: 20, NewConnEvery: 5}},
}

type demo struct {
	opts    options
	lab     *lab.Lab
	server  *lab.Server
	daemon  *lab.Daemon
	clients []*lab.Client
	// policies by mode (monitor, enforce, proxy: enforce with synProxy auto
	// on the newcomers' service), and the mode in force
	enforcePolicy, monitorPolicy, proxyPolicy string
	mode                                      string
	newcomerAddrs                             int // fresh addresses handed out so far
	baseline                                  []lab.ClientStats
	rows                                      []row
}

type row struct {
	sc                scenario
	without, with     phaseResult
	notHurt, hurtWith bool
}

type phaseResult struct {
	clients []lab.ClientStats
	sent    int64
	dropped uint64 // packets apiguard dropped (or, in monitor mode, would have)
	flags   []control.Flag
	// newcomers: what the fresh clients saw (newcomers scenarios)
	newcomers *lab.NewcomerStats
}

func (d *demo) play(ctx context.Context, scenarios []scenario) error {
	o := d.opts
	fmt.Println("apiguard demo: a guarded API server under attack, without and with apiguard")
	fmt.Println()
	// Two attackers per scenario, one per run: the run with apiguard starts
	// from a source apiguard has not seen yet, as the run without it did.
	l, err := lab.New(lab.Config{Clients: len(clientSetups), Attackers: 2 * len(scenarios)})
	if err != nil {
		return fmt.Errorf("build the lab: %w", err)
	}
	d.lab = l
	fmt.Printf("  lab       namespaces: router, API server, %d clients, %d attackers (removed at the end)\n", len(l.Clients), len(l.Attackers))
	fmt.Printf("            each attack comes from one attacker without apiguard and from a fresh one with it\n")
	if d.server, err = l.StartServer(lab.ServerConfig{MaxConns: 512}); err != nil {
		return err
	}
	fmt.Printf("  server    %s and %s, HTTP JSON API on ports 80 and 8080: GET /items/{id}, POST /login, GET /health;\n"+
		"            at most 512 connections at once, like a web server's worker limit\n", l.Server.Addr4, l.Server.Addr6)

	d.enforcePolicy = o.policy
	if d.monitorPolicy, err = monitorCopy(l, o.policy); err != nil {
		return err
	}
	if d.proxyPolicy, err = proxyCopy(l, o.policy); err != nil {
		return err
	}
	if d.daemon, err = l.StartDaemon(lab.DaemonConfig{Bin: o.bin, Policy: o.policy}); err != nil {
		return err
	}
	d.mode = "enforce"
	fmt.Printf("  apiguard  daemon on the server's interface %s (native XDP), policy %s;\n"+
		"            'without' runs apply the same policy in monitor mode: it counts what it would drop, drops nothing\n",
		l.GuardIf, relPath(o.policy))
	for i, cs := range clientSetups {
		cfg := cs.cfg
		cfg.From = i
		c, err := l.StartClient(cfg)
		if err != nil {
			return err
		}
		d.clients = append(d.clients, c)
		fmt.Printf("  client    %-9s %s (%s), 1s timeout, from %s\n", cs.label, cs.desc, "GET /items/{id}, every 10th a POST /login", l.Clients[i].Addr4)
	}
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	now := time.Now()
	for _, c := range d.clients {
		d.baseline = append(d.baseline, c.Stats(now.Add(-2*time.Second), now))
	}
	fmt.Printf("  baseline  %s\n", d.clientCells(d.baseline))

	for i, sc := range scenarios {
		if sc.v6 {
			sc.attack.Target = l.Server.Addr6
		} else {
			sc.attack.Target = l.Server.Addr4
		}
		sc.attack.Duration = o.phase
		fmt.Printf("\n▶ %d/%d %s: %s\n", i+1, len(scenarios), sc.name, sc.title)
		r := row{sc: sc}
		without, with := "monitor", "enforce"
		if sc.newcomers {
			without, with = "enforce", "proxy"
		}
		if r.without, err = d.phase(ctx, 2*i, sc, without); err != nil {
			return err
		}
		if r.with, err = d.phase(ctx, 2*i+1, sc, with); err != nil {
			return err
		}
		r.notHurt = !d.hurt(r.without.clients) && !newcomersHurt(r.without.newcomers)
		r.hurtWith = d.hurt(r.with.clients) || newcomersHurt(r.with.newcomers)
		d.rows = append(d.rows, r)
	}
	d.summary()
	return nil
}

// monitorCopy writes the policy with its global mode switched to monitor.
func monitorCopy(l *lab.Lab, path string) (string, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read policy: %w", err)
	}
	mon, err := lab.MonitorPolicy(string(src))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return l.WriteFile("monitor-"+filepath.Base(path), mon)
}

// proxyCopy writes the policy with synProxy: auto on the service the
// newcomers scenario attacks (port 80's, "http").
func proxyCopy(l *lab.Lab, path string) (string, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read policy: %w", err)
	}
	px, err := lab.SynProxyPolicy(string(src), "http", "auto")
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return l.WriteFile("synproxy-"+filepath.Base(path), px)
}

func relPath(p string) string {
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
	}
	return p
}

// setMode applies the policy of a mode through the CLI, as an operator would.
func (d *demo) setMode(mode string) error {
	if d.mode == mode {
		return nil
	}
	path := map[string]string{"enforce": d.enforcePolicy, "monitor": d.monitorPolicy, "proxy": d.proxyPolicy}[mode]
	if _, _, err := d.daemon.CLI("policy", "apply", path); err != nil {
		return fmt.Errorf("%w\ndaemon log:\n%s", err, tail(d.daemon.Log(), 20))
	}
	d.mode = mode
	return nil
}

func (d *demo) phase(ctx context.Context, attacker int, sc scenario, mode string) (phaseResult, error) {
	var res phaseResult
	if err := d.setMode(mode); err != nil {
		return res, err
	}
	label := "without"
	if mode == "enforce" && !sc.newcomers || mode == "proxy" {
		label = "with"
	}
	before, err := d.daemon.Status()
	if err != nil {
		return res, err
	}
	var fresh []netip.Addr
	if sc.newcomers {
		if fresh, err = d.lab.NewcomerAddrs(0, 10+d.newcomerAddrs, newcomersPerRun); err != nil {
			return res, err
		}
		d.newcomerAddrs += newcomersPerRun
	}
	a, err := d.lab.StartAttack(attacker, sc.attack)
	if err != nil {
		return res, err
	}
	start := time.Now()
	newcomersDone := make(chan lab.NewcomerStats, 1)
	if sc.newcomers {
		go func() {
			// once the flood is under way
			time.Sleep(500 * time.Millisecond)
			newcomersDone <- d.lab.RunNewcomers(ctx, 0, fresh, netip.AddrPortFrom(sc.attack.Target, 80), time.Second)
		}()
	}
	prevCounters := lab.Counters(before)
	var prevSent int64
	prevT := start
	for sec := 1; !a.Exited(); sec++ {
		select {
		case <-ctx.Done():
			_ = a.Stop(5 * time.Second)
			return res, ctx.Err()
		case <-a.Done():
		case <-time.After(time.Until(start.Add(time.Duration(sec) * time.Second))):
		}
		now := time.Now()
		if now.Sub(prevT) < 200*time.Millisecond {
			break // the attack ended just after the last line
		}
		st, err := d.daemon.Status()
		if err != nil {
			return res, err
		}
		cs := lab.Counters(st)
		var stats []lab.ClientStats
		for _, c := range d.clients {
			stats = append(stats, c.Stats(prevT, now))
		}
		sent := a.Last().Sent
		secs := now.Sub(prevT).Seconds()
		dropped := dropCount(cs, mode) - dropCount(prevCounters, mode)
		dropWord := "dropped"
		if mode == "monitor" {
			dropWord = "would drop"
		}
		flagged, err := d.daemon.Client.Flagged(ctx, true)
		if err != nil {
			return res, err
		}
		fmt.Printf("   %-7s %2ds  %s │ attack %6s %s/s │ apiguard %s %6s pkts/s │ server conns %3d │ flagged %d banned %d\n",
			label, sec, d.clientCells(stats), human(float64(sent-prevSent)/secs), sc.unit, dropWord,
			human(float64(dropped)/secs), d.server.Last().Conns, len(flagged), st.Bans)
		prevCounters, prevSent, prevT = cs, sent, now
	}
	rep, err := a.Wait(10 * time.Second)
	if err != nil {
		return res, err
	}
	if sc.newcomers {
		nc := <-newcomersDone
		res.newcomers = &nc
		what := "without the SYN proxy"
		if mode == "proxy" {
			what = "with the SYN proxy (synProxy: auto)"
		}
		fmt.Printf("   %-7s      newcomers: %d of %d first requests answered within 1s, connect p99 %s, %s\n",
			label, nc.OK, nc.Total, ms(nc.P99), what)
	}
	end := time.Now()
	after, err := d.daemon.Status()
	if err != nil {
		return res, err
	}
	res.sent = rep.Sent
	res.dropped = dropCount(lab.Counters(after), mode) - dropCount(lab.Counters(before), mode)
	// what the detector made of this run
	flags, err := d.daemon.Client.Flagged(ctx, false)
	if err != nil {
		return res, err
	}
	for _, f := range flags {
		if !f.LastSeen.Before(start) {
			res.flags = append(res.flags, f)
			fmt.Printf("   %-7s      flagged %s\n", label, describeFlag(f))
		}
	}
	// Let connections of the attack close and queues drain before the next
	// run; meanwhile the last requests sent during the attack end (the
	// client's timeout is 1s), and the summary counts every one of them.
	if err := sleep(ctx, 1100*time.Millisecond); err != nil {
		return res, err
	}
	for _, c := range d.clients {
		res.clients = append(res.clients, c.StatsStarted(start, end))
	}
	return res, nil
}

// describeFlag says who was flagged, why, and whether apiguard banned them.
func describeFlag(f control.Flag) string {
	out := fmt.Sprintf("%s for %s: %s", f.Subject(), f.Reason, f.Evidence.Summary)
	switch {
	case f.Ban.Banned:
		out += fmt.Sprintf(" → banned for %v", f.Ban.TTL.Round(time.Second))
	case f.Ban.Skipped != "":
		out += " → not banned: " + f.Ban.Skipped
	}
	return out
}

// dropCount sums the packets dropped (enforce) or that would have been
// dropped (monitor).
func dropCount(c map[string]uint64, mode string) uint64 {
	action := "drop/"
	if mode == "monitor" {
		action = "monitor/"
	}
	var n uint64
	for k, v := range c {
		if strings.HasPrefix(k, action) {
			n += v
		}
	}
	return n
}

// newcomersHurt says whether fewer than 99% of a run's newcomers were answered.
func newcomersHurt(nc *lab.NewcomerStats) bool {
	return nc != nil && nc.OK*100 < nc.Total*99
}

// hurt says whether a run was visibly worse for any client than its baseline.
func (d *demo) hurt(stats []lab.ClientStats) bool {
	for i, s := range stats {
		base := d.baseline[i].P99
		if s.SuccessRate() < 0.99 || (s.P99 > 100*time.Millisecond && s.P99 > 4*base) {
			return true
		}
	}
	return false
}

func (d *demo) clientCells(stats []lab.ClientStats) string {
	var cells []string
	for i, s := range stats {
		cells = append(cells, fmt.Sprintf("%s %s p99 %6s", clientSetups[i].label, pct(s.SuccessRate()), ms(s.P99)))
	}
	return strings.Join(cells, " │ ")
}

func (d *demo) summary() {
	fmt.Printf("\nsummary: each attack ran %v without apiguard (monitor mode) and %v with it; "+
		"client cells are requests answered and p99 latency (a failed request counts as the 1s timeout)\n\n", d.opts.phase, d.opts.phase)
	tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
	var hdr1, hdr2 strings.Builder
	hdr1.WriteString("\t")
	hdr2.WriteString("attack\t")
	for _, mode := range []string{"without apiguard", "with apiguard"} {
		for i, cs := range clientSetups {
			if i == 0 {
				hdr1.WriteString(mode)
			}
			hdr1.WriteString("\t")
			hdr2.WriteString(cs.label + "\t")
		}
	}
	hdr1.WriteString("\t")
	hdr2.WriteString("attack sent\tapiguard dropped\tdetector (with apiguard)")
	fmt.Fprintln(tw, hdr1.String())
	fmt.Fprintln(tw, hdr2.String())
	for _, r := range d.rows {
		var b strings.Builder
		b.WriteString(r.sc.name + "\t")
		for _, p := range []phaseResult{r.without, r.with} {
			for _, s := range p.clients {
				fmt.Fprintf(&b, "%s %s\t", pct(s.SuccessRate()), ms(s.P99))
			}
		}
		fmt.Fprintf(&b, "%s %s\t%s pkts\t%s", human(float64(r.with.sent)), r.sc.unit, human(float64(r.with.dropped)), flagCell(r.with.flags))
		fmt.Fprintln(tw, b.String())
	}
	tw.Flush()
	for _, r := range d.rows {
		if r.without.newcomers != nil && r.with.newcomers != nil {
			w, p := r.without.newcomers, r.with.newcomers
			fmt.Printf("\n%s: first requests of clients new to the server answered within 1s: %d of %d without the SYN proxy, "+
				"%d of %d with it (synProxy: auto; both runs enforce the policy)\n", r.sc.name, w.OK, w.Total, p.OK, p.Total)
		}
	}
	var notes []string
	for _, r := range d.rows {
		if r.notHurt && r.sc.calm != "" {
			notes = append(notes, fmt.Sprintf("%s: no client was hurt even without apiguard here: %s.", r.sc.name, r.sc.calm))
		} else if r.notHurt {
			notes = append(notes, fmt.Sprintf("%s: no client was hurt even without apiguard in this run.", r.sc.name))
		}
		if r.hurtWith {
			why := r.sc.hurtWith
			if why == "" {
				why = "see the per-second lines above"
			}
			notes = append(notes, fmt.Sprintf("%s: a client fared badly WITH apiguard: %s.", r.sc.name, why))
		}
	}
	if len(notes) > 0 {
		fmt.Println()
		for _, n := range notes {
			fmt.Println("  note:", n)
		}
	}
}

// flagCell sums up a run's flags: "syn-flood (banned)", "scan", "-".
func flagCell(flags []control.Flag) string {
	var parts []string
	seen := map[string]bool{}
	for _, f := range flags {
		p := string(f.Reason)
		if !f.Prefix.IsValid() {
			p += " on the service"
		}
		if f.Ban.Banned {
			p += ", banned"
		}
		if !seen[p] {
			seen[p] = true
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

// cleanup removes everything the demo created and checks that nothing is left.
func (d *demo) cleanup() error {
	if d.lab == nil {
		return nil
	}
	fmt.Println("\ncleaning up")
	var procs []*lab.Proc
	if d.server != nil {
		procs = append(procs, d.server.Proc)
	}
	var pinDir string
	if d.daemon != nil {
		pinDir = d.daemon.Config.PinDir
		if p := d.daemon.Proc(); p != nil {
			procs = append(procs, p)
		}
	}
	names := d.lab.Namespaces()
	err := d.lab.Close()
	var left []string
	out, lerr := exec.Command("ip", "netns", "list").CombinedOutput()
	if lerr != nil {
		err = errors.Join(err, fmt.Errorf("ip netns list: %w", lerr))
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			left = append(left, "namespace "+n)
		}
	}
	if pinDir != "" {
		if _, serr := os.Stat(pinDir); serr == nil {
			left = append(left, "pins "+pinDir)
		}
	}
	for _, p := range procs {
		if !p.Exited() {
			left = append(left, fmt.Sprintf("process %s (pid %d)", p.Name, p.Pid()))
		}
	}
	if len(left) > 0 {
		err = errors.Join(err, fmt.Errorf("left behind: %s", strings.Join(left, ", ")))
	} else {
		fmt.Printf("  removed %d namespaces, the pins at %s (programs detached), and every process the demo started\n", len(names), pinDir)
	}
	return err
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func pct(f float64) string { return fmt.Sprintf("%5.1f%%", 100*f) }

func ms(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%dms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	}
}

func human(f float64) string {
	switch {
	case f >= 1e6:
		return fmt.Sprintf("%.1fM", f/1e6)
	case f >= 1e4:
		return fmt.Sprintf("%.0fk", f/1e3)
	case f >= 1e3:
		return fmt.Sprintf("%.1fk", f/1e3)
	default:
		return fmt.Sprintf("%.0f", f)
	}
}
