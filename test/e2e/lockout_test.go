package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
)

// The session holder: this test binary, re-run in the guarded namespace,
// stands in for sshd. It accepts one TCP connection on its address, then
// runs the apiguard CLI as its child (as a login shell would) and exits
// with the CLI's code. The CLI must find the connection by walking up to it.
const (
	envHolderAddr = "APIGUARD_E2E_SESSION_ADDR"
	envHolderCLI  = "APIGUARD_E2E_SESSION_CLI" // the CLI's argv, joined by US (0x1f)
)

func runSessionHolderIfAsked() {
	addr := os.Getenv(envHolderAddr)
	if addr == "" {
		return
	}
	os.Exit(sessionHolder(addr, strings.Split(os.Getenv(envHolderCLI), "\x1f")))
}

func sessionHolder(addr string, argv []string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		return 100
	}
	defer ln.Close()
	fmt.Println("ready")
	if tl, ok := ln.(*net.TCPListener); ok {
		_ = tl.SetDeadline(time.Now().Add(30 * time.Second))
	}
	c, err := ln.Accept()
	if err != nil {
		fmt.Println("accept:", err)
		return 101
	}
	defer c.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	cmd.Env = withoutSSH(os.Environ())
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Println("run:", err)
		return 102
	}
	return 0
}

func withoutSSH(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "SSH_") && !strings.HasPrefix(kv, envHolderAddr) && !strings.HasPrefix(kv, envHolderCLI) {
			out = append(out, kv)
		}
	}
	return out
}

// cliExit runs the CLI with env and returns its output and exit code.
func cliExit(t *testing.T, d *lab.Daemon, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Config.Bin, append(args, "--socket", d.Config.Socket)...)
	cmd.Env = append(withoutSSH(os.Environ()), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("apiguard %v: %v", args, err)
	}
	return string(out), 0
}

// lockoutLab is a pair whose guarded side routes by default through the
// peer (the gateway), with a daemon on basePolicy.
func lockoutLab(t *testing.T) (*pair, *lab.Daemon, string) {
	t.Helper()
	testenv.RequireRoot(t)
	bin := buildBinary(t)
	p := newPair(t)
	if err := p.guarded.IP("route", "add", "default", "via", p.peerEnd.Addr4.String()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(policyPath, []byte(basePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := lab.NewDaemon(lab.DaemonConfig{Bin: bin, NS: p.guarded, Iface: p.guardEnd.Name, Policy: policyPath, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return p, d, dir
}

func policyName(t *testing.T, d *lab.Daemon) string {
	t.Helper()
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st.Policy.Name
}

// TestLockoutGuard: policy apply refuses what would cut the caller's SSH
// session (from SSH_CONNECTION, or found in the kernel's sockets when
// nothing says so) or the default gateway, names each, and changes nothing;
// --force applies it and says what it cuts.
func TestLockoutGuard(t *testing.T) {
	p, d, dir := lockoutLab(t)
	peer, guard := p.peerEnd.Addr4.String(), p.guardEnd.Addr4.String()
	write := func(name, src string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	denyPeer := write("deny.yaml", fmt.Sprintf(`apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: deny-peer}
spec:
  deny: [%s]
  services:
    - {name: echo, protocol: udp, ports: [9000]}
`, p.peerEnd.Prefix4()))
	closed := write("closed.yaml", `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: closed}
spec:
  defaultAction: drop
  services:
    - {name: https, protocol: tcp, ports: [443]}
`)
	ssh := "SSH_CONNECTION=" + peer + " 50022 " + guard + " 22"

	out, code := cliExit(t, d, []string{ssh}, "policy", "apply", denyPeer)
	if code != 5 || !strings.Contains(out, "your SSH session (SSH_CONNECTION) ("+peer+" to tcp port 22): spec.deny holds "+p.peerEnd.Prefix4().String()) ||
		!strings.Contains(out, "the default gateway "+peer+": spec.deny holds") || !strings.Contains(out, "--force") {
		t.Fatalf("deny of the caller and the gateway: exit %d\n%s", code, out)
	}
	if n := policyName(t, d); n != "e2e-base" {
		t.Fatalf("a refused policy is in force: %s", n)
	}
	// defaultAction drop cuts the session (port 22 has no service) but not the gateway
	out, code = cliExit(t, d, []string{ssh}, "policy", "apply", closed)
	if code != 5 || !strings.Contains(out, "defaultAction is drop and no service claims tcp port 22") || strings.Contains(out, "gateway "+peer+":") {
		t.Fatalf("defaultAction drop: exit %d\n%s", code, out)
	}
	// a policy that keeps both names them as kept
	out, code = cliExit(t, d, []string{ssh}, "policy", "apply", write("ok.yaml", basePolicy+"    - {name: ssh, protocol: tcp, ports: [22]}\n"))
	if code != 0 || !strings.Contains(out, "still reachable: your SSH session (SSH_CONNECTION) ("+peer+" to tcp port 22); the default gateway "+peer) {
		t.Fatalf("a safe policy: exit %d\n%s", code, out)
	}

	// no SSH_CONNECTION (sudo dropped it): the session is found in the
	// kernel's sockets of the process the CLI runs under
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	holderAddr := net.JoinHostPort(guard, "2222")
	runHolder := func(args ...string) (string, int) {
		t.Helper()
		argv := append([]string{d.Config.Bin}, append(args, "--socket", d.Config.Socket)...)
		cmd := exec.Command("nsenter", "--net=/run/netns/"+p.guarded.Name, exe)
		cmd.Env = append(withoutSSH(os.Environ()), envHolderAddr+"="+holderAddr, envHolderCLI+"="+strings.Join(argv, "\x1f"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		sc := bufio.NewScanner(stdout)
		if !sc.Scan() || sc.Text() != "ready" {
			t.Fatalf("the session holder did not start: %q", sc.Text())
		}
		var conn net.Conn
		if err := p.peer.Do(func() error {
			var err error
			conn, err = net.DialTimeout("tcp", holderAddr, 10*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var b strings.Builder
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return b.String(), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return b.String(), 0
	}
	out, code = runHolder("policy", "apply", closed)
	if code != 5 || !strings.Contains(out, "your session (process ") || !strings.Contains(out, "("+peer+" to tcp port 2222): defaultAction is drop") {
		t.Fatalf("a session found in the kernel's sockets: exit %d\n%s", code, out)
	}
	if n := policyName(t, d); n != "basic-ssh" && n != "e2e-base" {
		t.Fatalf("policy in force %s", n)
	}
	out, code = runHolder("policy", "apply", closed, "--force")
	if code != 0 || !strings.Contains(out, "warning: --force: the policy drops your session (process") {
		t.Fatalf("--force: exit %d\n%s", code, out)
	}
	if n := policyName(t, d); n != "closed" {
		t.Fatalf("--force: policy in force %s", n)
	}
}

// TestPolicyTrial: a policy applied with --confirm reverts by itself unless
// confirmed; a confirmed one stays; a restart applies the --policy file and
// says what became of the trial.
func TestPolicyTrial(t *testing.T) {
	p, d, dir := lockoutLab(t)
	if err := p.guarded.IP("route", "del", "default"); err != nil { // no gateway to protect here
		t.Fatal(err)
	}
	recv := p.listen(t)
	snd := p.sender(t)
	deny := filepath.Join(dir, "deny.yaml")
	if err := os.WriteFile(deny, []byte(fmt.Sprintf(`apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: deny-peer}
spec:
  deny: [%s]
  services:
    - {name: echo, protocol: udp, ports: [9000]}
`, p.peerEnd.Prefix4())), 0o600); err != nil {
		t.Fatal(err)
	}
	passes := func() bool {
		before := recv.n.Load()
		snd.send(t, 5)
		return lab.WaitFor(2*time.Second, func() bool { return recv.n.Load() >= before+5 })
	}
	if !passes() {
		t.Fatal("traffic does not pass under the base policy")
	}

	out, code := cliExit(t, d, nil, "policy", "apply", deny, "--confirm", "3s")
	if code != 0 || !strings.Contains(out, "ON TRIAL: it reverts at") {
		t.Fatalf("apply --confirm: exit %d\n%s", code, out)
	}
	st, err := d.Status()
	if err != nil || st.Confirm == nil || st.Confirm.Policy != "deny-peer" || st.Confirm.RevertTo != "e2e-base" {
		t.Fatalf("status of a trial: %+v %v", st.Confirm, err)
	}
	if passes() {
		t.Fatal("the policy on trial does not deny the peer")
	}
	// not confirmed: back by itself (the timer is 3 s; bounded wait)
	if !lab.WaitFor(30*time.Second, func() bool { return policyName(t, d) == "e2e-base" }) {
		t.Fatalf("the trial did not revert: %s", policyName(t, d))
	}
	if !passes() {
		t.Fatal("traffic does not pass after the revert")
	}
	st, err = d.Status()
	if err != nil || st.Confirm != nil || !strings.Contains(strings.Join(st.Warnings, "\n"), `policy "deny-peer" was not confirmed by`) {
		t.Fatalf("status after the revert: %+v %v", st, err)
	}
	if err := d.WaitLog(5*time.Second, "policy on trial not confirmed in time: reverted"); err != nil {
		t.Error(err)
	}

	// confirmed: it stays past its deadline
	if _, code := cliExit(t, d, nil, "policy", "apply", deny, "--confirm", "2s"); code != 0 {
		t.Fatalf("apply --confirm: exit %d", code)
	}
	out, code = cliExit(t, d, nil, "policy", "confirm")
	if code != 0 || !strings.Contains(out, `confirmed policy "deny-peer"`) {
		t.Fatalf("confirm: exit %d\n%s", code, out)
	}
	time.Sleep(3 * time.Second) // past the deadline: a stopped timer must not revert
	if n := policyName(t, d); n != "deny-peer" {
		t.Fatalf("a confirmed policy reverted: %s", n)
	}
	if out, code := cliExit(t, d, nil, "policy", "confirm"); code != 1 || !strings.Contains(out, "no policy is on trial") {
		t.Errorf("a second confirm: exit %d\n%s", code, out)
	}

	// a stop during a trial brings back the policy before it (the base
	// again), and a restart applies the --policy file and says so
	if _, code := cliExit(t, d, nil, "policy", "apply", filepath.Join(dir, "p.yaml")); code != 0 {
		t.Fatalf("apply the base policy: exit %d", code)
	}
	if _, code := cliExit(t, d, nil, "policy", "apply", deny, "--confirm", "10m"); code != 0 {
		t.Fatalf("apply --confirm: exit %d", code)
	}
	if passes() {
		t.Fatal("the second trial does not deny the peer")
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	// the pinned datapath enforces while no daemon runs (a stop, a start that
	// fails on a broken --policy file): never the policy nobody confirmed
	if !passes() {
		t.Fatalf("the policy on trial outlived the daemon in the kernel: the peer is still denied\n%s", d.Log())
	}
	if err := d.WaitLog(5*time.Second, "the daemon stops with a policy on trial", `"revert_to":"e2e-base"`); err != nil {
		t.Error(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	st, err = d.Status()
	if err != nil || st.Policy.Name != "e2e-base" || st.Confirm != nil ||
		!strings.Contains(strings.Join(st.Warnings, "\n"), `policy "deny-peer" was on trial`) {
		t.Fatalf("after a restart: %+v %v", st, err)
	}
	if out, code := cliExit(t, d, nil, "policy", "confirm"); code != 1 || !strings.Contains(out, "when the daemon stopped; the --policy file is in force") {
		t.Errorf("confirm after a restart: exit %d\n%s", code, out)
	}
}
