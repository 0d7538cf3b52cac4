package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/userspace/control"
)

// BuildApiguard compiles cmd/apiguard to out. Tests call it; the demo uses the
// binary `make build` made.
func BuildApiguard(ctx context.Context, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version=lab", "-o", out,
		"github.com/apiguard/apiguard/cmd/apiguard")
	// as `make build` does: without cgo the daemon can drop capabilities
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build apiguard: %w\n%s", err, b)
	}
	return nil
}

// DaemonConfig says how to run `apiguard daemon`.
type DaemonConfig struct {
	Bin    string           // the apiguard binary
	NS     *netns.Namespace // where the daemon runs
	Iface  string           // the interface it guards
	Policy string           // the --policy file
	Attach string           // attach mode (default native)
	// PinDir, Socket and StateDir default to a unique bpffs directory and
	// files under Dir.
	PinDir   string
	Socket   string
	StateDir string
	// Dir holds the daemon's logs (one per start) and default files.
	Dir string
	// Wrap is a command line the daemon runs under, inside the namespace
	// (setpriv with the systemd unit's capabilities, say): Wrap[0] is run
	// with Wrap[1:], then the apiguard binary and its arguments.
	Wrap []string
}

// Daemon is an apiguard daemon process that can be stopped, killed and
// started again on the same pins.
type Daemon struct {
	Config DaemonConfig
	Client *control.Client

	mu     sync.Mutex
	proc   *Proc
	log    string
	starts int
}

// NewDaemon checks cfg; Start runs the process. Close stops it and removes
// the pins.
func NewDaemon(cfg DaemonConfig) (*Daemon, error) {
	if cfg.Bin == "" || cfg.NS == nil || cfg.Iface == "" || cfg.Policy == "" || cfg.Dir == "" {
		return nil, errors.New("daemon configuration lacks the binary, namespace, interface, policy or directory")
	}
	if cfg.Attach == "" {
		cfg.Attach = string(loader.AttachNative)
	}
	if cfg.PinDir == "" {
		b := make([]byte, 4)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		// never the default /sys/fs/bpf/apiguard: a lab must not touch a real install
		cfg.PinDir = fmt.Sprintf("/sys/fs/bpf/%s%d-%s", pinPrefix, os.Getpid(), hex.EncodeToString(b))
	}
	if cfg.Socket == "" {
		cfg.Socket = filepath.Join(cfg.Dir, "apiguard.sock")
	}
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(cfg.Dir, "state")
	}
	return &Daemon{Config: cfg, Client: control.NewClient(cfg.Socket)}, nil
}

// StartDaemon starts apiguard on the lab's guarded interface with a policy
// file. Empty fields of cfg are filled in for this lab.
func (l *Lab) StartDaemon(cfg DaemonConfig) (*Daemon, error) {
	if cfg.NS == nil {
		cfg.NS = l.Server.NS
	}
	if cfg.Iface == "" {
		cfg.Iface = l.GuardIf
	}
	if cfg.Dir == "" {
		cfg.Dir = l.Dir
	}
	d, err := NewDaemon(cfg)
	if err != nil {
		return nil, err
	}
	l.onClose(d.Close)
	if err := d.Start(); err != nil {
		return nil, err
	}
	return d, nil
}

// Start runs the daemon and waits until it answers on its socket.
func (d *Daemon) Start() error {
	d.mu.Lock()
	if d.proc != nil && !d.proc.Exited() {
		d.mu.Unlock()
		return errors.New("the daemon is already running")
	}
	d.starts++
	c := d.Config
	logPath := filepath.Join(c.Dir, fmt.Sprintf("daemon-%d.log", d.starts))
	logf, err := os.Create(logPath)
	if err != nil {
		d.mu.Unlock()
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close()
	path, args := c.Bin, []string{"daemon", "--iface", c.Iface, "--policy", c.Policy, "--attach", c.Attach,
		"--bpffs", c.PinDir, "--socket", c.Socket, "--state-dir", c.StateDir, "--log-format", "json"}
	if len(c.Wrap) > 0 {
		path, args = c.Wrap[0], append(append(append([]string(nil), c.Wrap[1:]...), c.Bin), args...)
	}
	p, err := startProc(procSpec{name: "apiguard daemon", ns: c.NS, path: path, logFile: logf, args: args})
	if err != nil {
		d.mu.Unlock()
		return err
	}
	d.proc, d.log = p, logPath
	d.mu.Unlock()

	// generous: a loaded machine (the whole test suite at once) is slow to verify BPF
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := d.Client.Status(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("the daemon exited at start: %v\n%s", p.exitErr(), d.Log())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the daemon did not answer on %s within 60s: %v\n%s", c.Socket, err, d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Proc is the current (or last) daemon process.
func (d *Daemon) Proc() *Proc {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.proc
}

// Log is the current (or last) process's log.
func (d *Daemon) Log() string {
	d.mu.Lock()
	path := d.log
	d.mu.Unlock()
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(data)
}

// WaitLog waits at most limit for a log line that contains every one of parts.
func (d *Daemon) WaitLog(limit time.Duration, parts ...string) error {
	ok := WaitFor(limit, func() bool {
		for _, line := range strings.Split(d.Log(), "\n") {
			all := true
			for _, part := range parts {
				all = all && strings.Contains(line, part)
			}
			if all {
				return true
			}
		}
		return false
	})
	if !ok {
		return fmt.Errorf("no daemon log line with %q within %v\n%s", parts, limit, d.Log())
	}
	return nil
}

// CLI runs the apiguard binary against this daemon's socket.
func (d *Daemon) CLI(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Config.Bin, append(args, "--socket", d.Config.Socket)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("apiguard %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), errb.String(), err
}

// Status asks the daemon for its status.
func (d *Daemon) Status() (*control.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.Client.Status(ctx)
}

// Counters sums the datapath's counters by action and reason: "drop/ban".
func Counters(st *control.Status) map[string]uint64 {
	m := map[string]uint64{}
	for _, c := range st.Counters {
		m[c.Action+"/"+c.Reason] += c.Packets
	}
	return m
}

// Stop ends the daemon with SIGTERM; the pins stay and keep enforcing.
func (d *Daemon) Stop() error {
	p := d.Proc()
	if p == nil {
		return nil
	}
	return p.Stop(15 * time.Second)
}

// Close stops the daemon and removes its programs and pins.
func (d *Daemon) Close() error {
	err := d.Stop()
	d.Client.Close()
	if _, serr := os.Stat(d.Config.PinDir); serr == nil {
		if derr := loader.Detach(d.Config.PinDir); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove pins %s: %w", d.Config.PinDir, derr))
		}
	}
	return err
}

// modeLine is a policy's global "mode: enforce" line (spec.mode, two spaces
// in); services' own mode lines are indented deeper and left alone.
var modeLine = regexp.MustCompile(`(?m)^  mode:[ \t]*enforce[ \t]*(#.*)?$`)

// MonitorPolicy returns a policy's YAML text with its global mode switched
// from enforce to monitor, everything else as written. It wants exactly one
// "  mode: enforce" line under spec.
func MonitorPolicy(src string) (string, error) {
	if n := len(modeLine.FindAllStringIndex(src, -1)); n != 1 {
		return "", fmt.Errorf("want one 'mode: enforce' line under spec to switch to monitor, found %d", n)
	}
	return modeLine.ReplaceAllString(src, "  mode: monitor"), nil
}

// SynProxyPolicy returns a policy's YAML text with synProxy: mode set on the
// service named service, everything else as written. It wants the service
// written as a "    - name: <service>" list item with no synProxy of its own.
func SynProxyPolicy(src, service, mode string) (string, error) {
	item := regexp.MustCompile(`(?m)^(    )- name:[ \t]*` + regexp.QuoteMeta(service) + `[ \t]*(#.*)?$`)
	locs := item.FindAllStringIndex(src, -1)
	if len(locs) != 1 {
		return "", fmt.Errorf("want one '    - name: %s' line, found %d", service, len(locs))
	}
	if strings.Contains(src, "synProxy:") {
		return "", errors.New("the policy sets synProxy already")
	}
	end := locs[0][1]
	return src[:end] + "\n      synProxy: " + mode + src[end:], nil
}

// WaitFor polls cond every 20ms for at most limit and reports whether it held.
func WaitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
