// Package e2e runs the built apiguard binary as a daemon on a veth pair in
// network namespaces the tests create, and drives it through its CLI the way
// an operator would. The tests need root (BPF, namespaces) and Linux 6.6+.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

const basePolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: e2e-base}
spec:
  services:
    - name: echo
      protocol: udp
      ports: [9000]
`

// denyPolicy denies the peer through a list file, so the CLI must send the
// list along with the policy.
const denyPolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: e2e-deny}
spec:
  denyFiles: [deny.txt]
  services:
    - name: echo
      protocol: udp
      ports: [9000]
`

const badPolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: e2e-bad}
spec:
  deny: [198.18.0.300/32]
  services:
    - name: echo
      protocol: udp
      ports: [70000]
`

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string // removed by TestMain
)

// buildBinary compiles cmd/apiguard, once per test binary run.
func buildBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "apiguard-e2e-bin-")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "apiguard")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		buildErr = lab.BuildApiguard(ctx, builtBin)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	lab.RunRoleIfAsked() // the lab's server and attackers run as this binary
	runSessionHolderIfAsked()
	if os.Geteuid() == 0 {
		// what an earlier run killed with SIGKILL could not remove itself
		if removed, err := lab.CleanStale(); err != nil || len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "leftovers of killed labs: removed %v; %v\n", removed, err)
		}
	}
	code := m.Run()
	if buildDir != "" {
		if err := os.RemoveAll(buildDir); err != nil {
			fmt.Fprintln(os.Stderr, "remove the built binary:", err)
		}
	}
	os.Exit(code)
}

// env is one daemon's world: its binary, files, pins and lab.
type env struct {
	t      testing.TB
	dir    string // policy files and daemon logs
	pinDir string
	pair   *pair
	d      *lab.Daemon
	recv   *receiver
	send   *sender
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), pair: newPair(t)}
	e.pinDir = fmt.Sprintf("/sys/fs/bpf/apiguard-e2e-%d-%s", os.Getpid(), randomSuffix(t))
	var err error
	e.d, err = lab.NewDaemon(lab.DaemonConfig{Bin: buildBinary(t), NS: e.pair.guarded, Iface: e.pair.guardEnd.Name,
		Policy: "(set by startDaemon)", PinDir: e.pinDir, Socket: filepath.Join(e.dir, "ctl.sock"),
		StateDir: filepath.Join(e.dir, "state"), Dir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	// registered after the pair: runs before the namespaces go
	t.Cleanup(func() {
		if err := e.d.Close(); err != nil {
			t.Errorf("stop the daemon and remove its pins: %v", err)
		}
	})
	e.recv = e.pair.listen(t)
	e.send = e.pair.sender(t)
	return e
}

func (e *env) write(name, content string) string {
	e.t.Helper()
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// daemonProc is one run of `apiguard daemon`.
type daemonProc struct {
	d *lab.Daemon
	p *lab.Proc
}

func (e *env) startDaemon(policyPath string) *daemonProc {
	e.t.Helper()
	e.d.Config.Policy = policyPath
	if err := e.d.Start(); err != nil {
		e.t.Fatal(err)
	}
	return &daemonProc{d: e.d, p: e.d.Proc()}
}

func (p *daemonProc) logText() string { return p.d.Log() }

func (p *daemonProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.p.Signal(sig); err != nil {
		t.Fatalf("send %v to the daemon: %v", sig, err)
	}
}

// wait waits for the daemon to exit and returns how it did.
func (p *daemonProc) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-p.p.Done():
		return p.p.Err()
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not exit within 30s\n%s", p.logText())
		return nil
	}
}

// waitLog waits until a log line contains every one of parts.
func (p *daemonProc) waitLog(t *testing.T, parts ...string) {
	t.Helper()
	if err := p.d.WaitLog(10*time.Second, parts...); err != nil {
		t.Fatal(err)
	}
}

// cli runs the apiguard binary against this env's socket.
func (e *env) cli(args ...string) (stdout, stderr string, err error) {
	return e.d.CLI(args...)
}

func (e *env) mustCLI(args ...string) string {
	e.t.Helper()
	out, stderr, err := e.cli(args...)
	if err != nil {
		e.t.Fatalf("apiguard %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

func (e *env) jsonCLI(v any, args ...string) {
	e.t.Helper()
	out := e.mustCLI(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		e.t.Fatalf("apiguard %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (e *env) status() control.Status {
	e.t.Helper()
	var st control.Status
	e.jsonCLI(&st, "status")
	return st
}

func (e *env) dropped(reason string) uint64 {
	e.t.Helper()
	for _, c := range e.status().Counters {
		if c.Action == "drop" && c.Reason == reason {
			return c.Packets
		}
	}
	return 0
}

// expectPass sends n datagrams and waits until all of them arrived.
func (e *env) expectPass(n int) {
	e.t.Helper()
	before := e.recv.n.Load()
	e.send.send(e.t, n)
	if !lab.WaitFor(5*time.Second, func() bool { return e.recv.n.Load() >= before+int64(n) }) {
		e.t.Fatalf("only %d of %d datagrams arrived within 5s", e.recv.n.Load()-before, n)
	}
}

// expectDropped sends n datagrams and waits until the datapath counted n more
// drops for reason; none of them may have arrived.
func (e *env) expectDropped(reason string, n int) {
	e.t.Helper()
	before, c0 := e.recv.n.Load(), e.dropped(reason)
	e.send.send(e.t, n)
	var c uint64
	if !lab.WaitFor(5*time.Second, func() bool { c = e.dropped(reason); return c >= c0+uint64(n) }) {
		e.t.Fatalf("the datapath counted %d drops (%s) of %d sent within 5s", c-c0, reason, n)
	}
	if got := e.recv.n.Load() - before; got != 0 {
		e.t.Fatalf("%d of %d datagrams arrived, want none (reason %s)", got, n, reason)
	}
}

func TestDaemonEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEnv(t)
	const n = 20
	peer := e.pair.peerEnd.Addr4.String()
	e.write("deny.txt", peer+"/32\n")
	daemonPolicy := e.write("daemon.yaml", basePolicy)
	denyPath := e.write("deny.yaml", denyPolicy)
	badPath := e.write("bad.yaml", badPolicy)

	e.mustCLI("policy", "validate", daemonPolicy)
	if _, stderr, err := e.cli("policy", "validate", badPath); err == nil || !strings.Contains(stderr, badPath+":5: spec.deny[0]") {
		t.Fatalf("validate of a bad policy: err=%v stderr=%s", err, stderr)
	}

	d := e.startDaemon(daemonPolicy)
	st := e.status()
	if st.Policy.Name != "e2e-base" || st.Policy.Generation != 1 || len(st.Interfaces) != 1 ||
		st.Interfaces[0].Name != e.pair.guardEnd.Name || st.Interfaces[0].Mode != "native" || st.Adopted {
		t.Fatalf("status after the first start: %+v", st)
	}
	e.expectPass(n)

	var top control.TopClients
	e.jsonCLI(&top, "clients", "top", "-n", "5", "--by", "packets")
	if len(top.Clients) != 1 || top.Clients[0].Addr != peer+"/32" || top.Clients[0].Packets < n {
		t.Errorf("clients top: %+v", top)
	}

	t.Log("ban and unban the peer")
	e.mustCLI("ban", "add", peer, "--ttl", "10m", "--reason", "e2e test")
	e.expectDropped("ban", n)
	var bans []control.Ban
	e.jsonCLI(&bans, "ban", "ls")
	if len(bans) != 1 || bans[0].Prefix != peer+"/32" || bans[0].Reason != "e2e test" || bans[0].Source != "manual" || bans[0].Expires == nil {
		t.Errorf("ban ls: %+v", bans)
	}
	e.mustCLI("ban", "rm", peer)
	e.expectPass(n)

	t.Log("apply a deny policy")
	out := e.mustCLI("policy", "apply", denyPath)
	if !strings.Contains(out, "generation 2") || !strings.Contains(out, "+ deny "+peer+"/32") {
		t.Errorf("policy apply output:\n%s", out)
	}
	e.expectDropped("deny", n)

	t.Log("a bad policy is refused and the deny policy stays")
	_, stderr, err := e.cli("policy", "apply", badPath)
	if err == nil || !strings.Contains(stderr, "the policy has 2 errors") || !strings.Contains(stderr, badPath+":5: spec.deny[0]") ||
		!strings.Contains(stderr, badPath+":9: spec.services[0].ports[0]") {
		t.Fatalf("applying a bad policy: err=%v stderr=%s", err, stderr)
	}
	var pol control.PolicyInfo
	e.jsonCLI(&pol, "policy", "show")
	if pol.Name != "e2e-deny" || pol.Generation != 2 || pol.Source != denyPolicy {
		t.Errorf("policy show after the refusal: %+v", pol)
	}
	e.expectDropped("deny", n)

	t.Log("SIGHUP: a bad --policy file is refused, a good one reloads")
	e.write("daemon.yaml", badPolicy)
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, "policy refused; the policy in force stays", "daemon.yaml")
	if st := e.status(); st.Policy.Name != "e2e-deny" || st.Policy.Generation != 2 {
		t.Errorf("policy after a bad SIGHUP: %+v", st.Policy)
	}
	e.expectDropped("deny", n)
	e.write("daemon.yaml", denyPolicy)
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, `"why":"sighup"`, "policy already in force")

	t.Log("kill -9: enforcement stays, a restart adopts it")
	e.mustCLI("ban", "add", "198.18.0.3", "--ttl", "0", "--reason", "survives restarts")
	denied := e.dropped("deny")
	before := e.recv.n.Load()
	d.signal(t, syscall.SIGKILL)
	if err := d.wait(t); err == nil {
		t.Fatal("a daemon killed with SIGKILL exited cleanly")
	}
	e.send.send(t, n) // the daemon is gone; the pinned datapath must still drop these
	d = e.startDaemon(daemonPolicy)
	d.waitLog(t, "adopted the pinned datapath")
	d.waitLog(t, "adopted the earlier attachment without a gap", e.pair.guardEnd.Name)
	st = e.status()
	if !st.Adopted || st.Policy.Name != "e2e-deny" || st.Policy.Generation != 2 || !st.Interfaces[0].Adopted {
		t.Errorf("status after the restart: %+v", st)
	}
	var c uint64
	if !lab.WaitFor(5*time.Second, func() bool { c = e.dropped("deny"); return c >= denied+n }) {
		t.Errorf("while the daemon was dead the datapath dropped %d of %d", c-denied, n)
	}
	if got := e.recv.n.Load() - before; got != 0 {
		t.Errorf("%d datagrams got through while the daemon was dead", got)
	}
	bans = nil // decoding into the old slice would keep fields the answer leaves out
	e.jsonCLI(&bans, "ban", "ls")
	if len(bans) != 1 || bans[0].Prefix != "198.18.0.3/32" || bans[0].Reason != "survives restarts" || bans[0].Expires != nil {
		t.Errorf("ban ls after the restart: %+v", bans)
	}
	e.expectDropped("deny", n)

	t.Log("detach is refused while the daemon runs; SIGTERM leaves the pins")
	if _, stderr, err := e.cli("detach", "--bpffs", e.pinDir); err == nil || !strings.Contains(stderr, "is running") {
		t.Errorf("detach under a running daemon: err=%v stderr=%s", err, stderr)
	}
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, d.logText())
	}
	if _, err := os.Stat(filepath.Join(e.pinDir, "links")); err != nil {
		t.Fatalf("pins after a clean stop: %v", err)
	}
	if _, stderr, err := e.cli("status"); err == nil || !strings.Contains(stderr, "apiguard daemon is not running (no socket at "+e.d.Config.Socket+")") {
		t.Errorf("status without a daemon: err=%v stderr=%s", err, stderr)
	}

	t.Log("detach removes the programs and pins: traffic flows again")
	out = e.mustCLI("detach", "--bpffs", e.pinDir)
	if !strings.Contains(out, "detached from "+e.pair.guardEnd.Name+" (native)") {
		t.Errorf("detach output: %s", out)
	}
	if _, err := os.Stat(e.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory after detach: %v", err)
	}
	e.expectPass(n)
}

// TestDaemonRefusesBadPolicyAtStart: a broken policy is reported with file and
// line, the exit status is 4 (invalid, as for the CLI), and nothing is loaded
// or pinned.
func TestDaemonRefusesBadPolicyAtStart(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildBinary(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(badPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	pinDir := fmt.Sprintf("/sys/fs/bpf/apiguard-e2e-%d-%s", os.Getpid(), randomSuffix(t))
	t.Cleanup(func() {
		if _, err := os.Stat(pinDir); err == nil {
			if err := loader.Detach(pinDir); err != nil {
				t.Errorf("remove pins: %v", err)
			}
		}
	})
	// in a namespace of the test's own: if the refusal ever regressed, the
	// daemon must not attach to anything of the host's
	p := newPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+p.guarded.Name, bin, "daemon",
		"--iface", p.guardEnd.Name, "--policy", bad, "--bpffs", pinDir,
		"--socket", filepath.Join(dir, "s.sock"), "--state-dir", filepath.Join(dir, "state"))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 4 {
		t.Fatalf("exit: %v, want status 4 (invalid)\n%s", err, out)
	}
	for _, want := range []string{"the policy has 2 errors", bad + ":5: spec.deny[0]", bad + ":9: spec.services[0].ports[0]"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused start left %s behind (%v)", pinDir, err)
	}
}
