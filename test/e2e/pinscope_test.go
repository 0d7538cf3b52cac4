package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

// TestIPNetnsExecWarnsThatPinsDie: started under `ip netns exec` (the one
// place a test does so on purpose), the daemon runs in a mount namespace of
// its own where /sys/fs/bpf is a fresh sysfs directory; the bpffs it mounts
// there goes with it, and every pin with that. It must say so at start and
// in status, and the host must indeed see none of its pins.
func TestIPNetnsExecWarnsThatPinsDie(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildBinary(t)
	p := newPair(t)
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(policyPath, []byte(basePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	pinDir := fmt.Sprintf("/sys/fs/bpf/apiguard-e2e-%d-%s", os.Getpid(), randomSuffix(t))
	socket := filepath.Join(dir, "ctl.sock")
	logPath := filepath.Join(dir, "daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", p.guarded.Name, bin, "daemon", "--iface", p.guardEnd.Name,
		"--policy", policyPath, "--bpffs", pinDir, "--socket", socket, "--state-dir", filepath.Join(dir, "state"),
		"--log-format", "json")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	logText := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	c := control.NewClient(socket)
	var st *control.Status
	if !lab.WaitFor(60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err = c.Status(ctx)
		return err == nil
	}) {
		t.Fatalf("the daemon did not answer: %v\n%s", err, logText())
	}
	const want = "pins die with the daemon"
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], want) || !strings.Contains(st.Warnings[0], "nsenter --net=/run/netns/NAME") {
		t.Errorf("status warnings %q, want one saying %q and how to avoid it", st.Warnings, want)
	}
	var warned bool
	for _, line := range strings.Split(logText(), "\n") {
		var rec struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "WARN" && strings.Contains(rec.Msg, want) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning at start:\n%s", logText())
	}
	out, err := exec.Command(bin, "status", "--socket", socket).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "WARNING: "+want) {
		t.Errorf("apiguard status: %v\n%s", err, out)
	}
	// what the warning says: the host does not see the pins
	if _, err := os.Stat(pinDir); !os.IsNotExist(err) {
		t.Errorf("the host sees %s (%v): the daemon's bpffs was the host's after all", pinDir, err)
	}
}
