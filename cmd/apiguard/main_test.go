package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/crowdsec"
)

// execute runs the CLI in-process, as main would, and returns what it printed.
func execute(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

const goodPolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: cli-test}
spec:
  denyFiles: [lists/deny.txt]
  services:
    - name: api
      protocol: tcp
      ports: [443]
`

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, goodPolicy)
	writeFile(t, filepath.Join(dir, "lists/deny.txt"), "192.0.2.0/24\n198.51.100.0/24\n")
	out, _, err := execute(t, "policy", "validate", good)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `policy "cli-test" is valid: 1 services, 0 allow and 2 deny entries`) {
		t.Errorf("output: %q", out)
	}

	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, strings.Replace(goodPolicy, "[443]", "[443, 0]", 1)+"  colour: blue\n")
	_, stderr, err := execute(t, "policy", "validate", bad)
	var ee *exitError
	if !errors.As(err, &ee) {
		t.Fatalf("err = %v, want an exitError (problems already printed)", err)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], bad+":") || !strings.HasPrefix(lines[1], bad+":") {
		t.Errorf("want two problems, one per line, each starting with the file:\n%s", stderr)
	}

	out, _, err = execute(t, "policy", "validate", bad, "-o", "json")
	if !errors.As(err, &ee) {
		t.Fatalf("json: err = %v", err)
	}
	var v validation
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("json output: %v\n%s", err, out)
	}
	if v.Valid || len(v.Problems) != 2 || v.Problems[0].Line == 0 || v.Problems[0].File != bad {
		t.Errorf("json validation: %+v", v)
	}

	if _, _, err := execute(t, "policy", "validate", filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestReadUploadSendsListFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	writeFile(t, path, goodPolicy)
	writeFile(t, filepath.Join(dir, "lists/deny.txt"), "192.0.2.0/24\n")
	up, err := readUpload(path)
	if err != nil {
		t.Fatal(err)
	}
	if up.Name != path || up.Source != goodPolicy {
		t.Errorf("upload header: %q, %d bytes", up.Name, len(up.Source))
	}
	// keyed as the policy names the file, which is how the daemon asks for it
	if up.Files["lists/deny.txt"] != "192.0.2.0/24\n" || len(up.Files) != 1 {
		t.Errorf("files: %v", up.Files)
	}
}

func TestArgumentErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ban", "add"}, "accepts 1 arg(s), received 0"},
		{[]string{"ban", "add", "192.0.2.300"}, `"192.0.2.300" is not an address or CIDR`},
		{[]string{"ban", "rm", "2001:db8::/129"}, `"2001:db8::/129" is not an address or CIDR`},
		{[]string{"status", "-o", "yaml"}, `-o "yaml": want text or json`},
		{[]string{"report", "192.0.2.1"}, "accepts 2 arg(s), received 1"},
		{[]string{"report", "nobody", "failed-login"}, `client "nobody" is not an IP address`},
		{[]string{"report", "192.0.2.1", "bored"}, `unknown report reason "bored"`},
		{[]string{"report", "192.0.2.1", "failed-login", "--weight", "5000"}, "weight 5000 is above 1000"},
		{[]string{"clients", "top", "-n", "0"}, "-n 0: want 1 to"},
		{[]string{"clients", "top", "--by", "age"}, `cannot sort clients by "age"`},
		{[]string{"daemon", "--policy", "p.yaml"}, `required flag(s) "iface" not set`},
		{[]string{"daemon", "--iface", "eth0", "--policy", "p.yaml", "--attach", "fast"}, `unknown attach mode "fast"`},
		{[]string{"daemon", "--iface", "eth0", "--policy", "p.yaml", "--log-format", "xml"}, `--log-format "xml"`},
	} {
		_, _, err := execute(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("apiguard %s: err = %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

func TestDaemonNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{{"status"}, {"ban", "ls"}, {"policy", "show"}, {"clients", "top"}} {
		_, _, err := execute(t, append(args, "--socket", sock)...)
		if !errors.Is(err, control.ErrNotRunning) || !strings.Contains(err.Error(), "apiguard daemon is not running (no socket at "+sock+")") {
			t.Errorf("%v: err = %v", args, err)
		}
	}
}

// fakeDaemon answers the control API with fixed data, so the CLI's tables can
// be checked without BPF.
type fakeDaemon struct{ now func() time.Time } // the time of each request, as a real daemon

func (f *fakeDaemon) Status(context.Context) (*control.Status, error) {
	return &control.Status{
		Version: "v9", PID: 4242, StartedAt: f.now().Add(-time.Hour), PinDir: "/sys/fs/bpf/apiguard", Adopted: true,
		Interfaces: []control.Interface{{Name: "eth0", Mode: "native", Adopted: true}},
		Policy:     control.PolicySummary{Name: "default", Generation: 3, AppliedAt: f.now().Add(-time.Minute)},
		Bans:       1,
		Counters:   []control.Counter{{Action: "pass", Reason: "ok", Packets: 1000, Bytes: 1 << 20}, {Action: "drop", Reason: "ban", Packets: 7, Bytes: 420}},
		Maps:       []control.MapUsage{{Name: "clients", Entries: 32768, Capacity: 131072}},
		CrowdSec: &control.CrowdSec{LAPI: "http://127.0.0.1:8080",
			Bouncer:  &crowdsec.BouncerStats{Pulls: 9, PullErrors: 3, Outages: 1, LastError: "pull decisions: connection refused", LastSuccess: f.now().Add(-time.Minute), Active: 4, Decisions: 5},
			Reporter: &crowdsec.ReporterStats{MachineID: "host-a", Sent: 6, Queued: 2}},
		AccessLogs: []control.AccessLogStatus{{Path: "/var/log/nginx/access.log", Format: "combined", Lines: 1200, ParseErrors: 2,
			Signals: 40, LagBytes: 2048, LastLine: f.now().Add(-3 * time.Second)}},
		// the kernel's counters and the tracked clients disagree, as they do
		// once the state map evicts: the table shows the counters
		Services: []control.ServiceStatus{
			{Name: "api", Protocol: "tcp", Ports: "443", Mode: "enforce", Passed: control.PacketCount{Packets: 90000, Bytes: 3 << 20},
				Dropped: control.PacketCount{Packets: 1200, Bytes: 72000}, Clients: 12, Packets: 800, Bytes: 1 << 10, Drops: 30, ClientsDropped: 2},
			{Name: "trial", Protocol: "udp", Ports: "9000-9009", Mode: "monitor", Passed: control.PacketCount{Packets: 2, Bytes: 120},
				WouldDrop: control.PacketCount{Packets: 18, Bytes: 1080}, Clients: 1, Packets: 20, Bytes: 1200, Drops: 18, ClientsDropped: 1},
		},
	}, nil
}

func (f *fakeDaemon) Policy(context.Context) (*control.PolicyInfo, error) {
	return &control.PolicyInfo{PolicySummary: control.PolicySummary{Name: "default", Generation: 3, AppliedAt: f.now()},
		Path: "/etc/apiguard/policy.yaml", Source: "kind: Policy\n"}, nil
}

func (f *fakeDaemon) ApplyPolicy(_ context.Context, up *control.PolicyUpload) (*control.ApplyResult, error) {
	return nil, &control.PolicyError{Problems: []control.Problem{{File: up.Name, Line: 3, Field: "spec.mode", Message: "want enforce or monitor"}}}
}

func (f *fakeDaemon) DiffPolicy(context.Context, *control.PolicyUpload) (*control.DiffResult, error) {
	return &control.DiffResult{Changes: []string{"+ deny 192.0.2.0/24"}}, nil
}

func (f *fakeDaemon) Bans(context.Context) ([]control.Ban, error) {
	created, expires := f.now().Add(-time.Minute), f.now().Add(9*time.Minute)
	return []control.Ban{
		{Prefix: "192.0.2.7/32", Reason: "port scan", Source: "detector", Created: &created, Expires: &expires},
		{Prefix: "198.51.100.0/24", Reason: "unknown", Source: "unknown"},
		{Prefix: "203.0.113.0/24", Reason: "CrowdSec decision", Source: "crowdsec:cscli", Expires: &expires},
	}, nil
}

func (f *fakeDaemon) AddBan(_ context.Context, b control.NewBan) (*control.Ban, error) {
	// 192.0.2.53 stands for a never-banned address (the host's resolver)
	if b.Prefix.Contains(netip.MustParseAddr("192.0.2.53")) && !b.Force {
		return nil, control.Invalidf("%v covers an address that is never banned: a resolver; --force bans it anyway", b.Prefix)
	}
	return &control.Ban{Prefix: b.Prefix.String(), Reason: b.Reason, Source: "manual"}, nil
}

func (f *fakeDaemon) RemoveBan(context.Context, netip.Prefix) error {
	return control.NotFoundf("no ban on 192.0.2.9/32")
}

func (f *fakeDaemon) TopClients(_ context.Context, n int, by control.SortKey, _ string) (*control.TopClients, error) {
	return &control.TopClients{By: by, Tracked: 12, Clients: []control.ClientSummary{
		{Addr: "192.0.2.1/32", Packets: 500, Bytes: 3 << 20, Drops: 2, Services: 2, LastSeen: f.now().Add(-2 * time.Second)},
	}}, nil
}

func TestOutputAgainstFakeDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.NewServer(&fakeDaemon{now: time.Now}, nil).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	cli := func(args ...string) (string, error) {
		out, _, err := execute(t, append(args, "--socket", sock)...)
		return out, err
	}

	out, err := cli("status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"apiguard v9, pid 4242", "(adopted from an earlier run)", `"default", generation 3`,
		"eth0       native  yes", "pass    ok      1000     1.0 MiB",
		"http://127.0.0.1:8080 UNREACHABLE (bans in the kernel stay until they expire): pull decisions: connection refused; last good pull 1m0s ago; 5 decisions on 4 prefixes; 3 pull errors, 1 outages",
		"6 sent, 2 queued, 0 dropped, 0 errors as machine host-a", "drop    ban     7        420 B", "clients  32768    131072    25.0%",
		"/var/log/nginx/access.log  combined  1200   2             40       2.0 KiB  3s ago",
		"SERVICE  PORTS          MODE     PASSED  PASSED BYTES  DROPPED   DROPPED BYTES  CLIENTS  CLIENTS DROPPED\n" +
			"api      tcp 443        enforce  90000   3.0 MiB       1200      70.3 KiB       12       2\n" +
			"trial    udp 9000-9009  monitor  2       120 B         18 would  1.1 KiB would  1        1\n",
		"monitor mode: trial count what enforcing would drop and pass it"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	out, err = cli("ban", "ls")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "PREFIX") || !strings.Contains(lines[3], "crowdsec:cscli") ||
		!strings.Contains(lines[1], "192.0.2.7/32") || !strings.Contains(lines[1], "detector") || !strings.Contains(lines[1], "port scan") ||
		!strings.Contains(lines[2], "never") || !strings.Contains(lines[2], "unknown") {
		t.Errorf("ban ls:\n%s", out)
	}

	out, err = cli("clients", "top", "--by", "drops")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "192.0.2.1/32") || !strings.Contains(out, "3.0 MiB") || !strings.Contains(out, "1 of 12 tracked clients, by drops") {
		t.Errorf("clients top:\n%s", out)
	}

	out, err = cli("policy", "show")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, `# policy "default" from /etc/apiguard/policy.yaml, generation 3`) || !strings.HasSuffix(out, "kind: Policy\n") {
		t.Errorf("policy show:\n%s", out)
	}

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.yaml"), goodPolicy)
	_, err = cli("policy", "apply", filepath.Join(dir, "p.yaml"))
	var pe *control.PolicyError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "p.yaml:3: spec.mode: want enforce or monitor") {
		t.Errorf("policy apply refused: %v", err)
	}

	if _, err := cli("ban", "rm", "192.0.2.9"); err == nil || err.Error() != "no ban on 192.0.2.9/32" {
		t.Errorf("ban rm of a missing ban: %v", err)
	}
	// a never-banned address: refused, unless forced
	if _, err := cli("ban", "add", "192.0.2.0/24"); err == nil || !strings.Contains(err.Error(), "never banned: a resolver; --force") {
		t.Errorf("ban add on a never-banned address: %v", err)
	}
	if out, err := cli("ban", "add", "192.0.2.0/24", "--force"); err != nil || !strings.Contains(out, "banned 192.0.2.0/24") {
		t.Errorf("ban add --force: %v %q", err, out)
	}

	out, err = cli("ban", "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var bans []control.Ban
	if err := json.Unmarshal([]byte(out), &bans); err != nil || len(bans) != 3 {
		t.Errorf("ban ls -o json: %v\n%s", err, out)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
