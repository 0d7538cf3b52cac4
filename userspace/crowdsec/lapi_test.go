package crowdsec

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// realLAPI is a CrowdSec LAPI process of the test's own, on loopback, with
// its configuration and database under a temporary directory.
type realLAPI struct {
	dir, cfg, url string
	machine, pw   string
	key           string
	cmd           *exec.Cmd
	out           *bytes.Buffer
}

// needCrowdSec finds the crowdsec binaries: skipped without them, a failure
// under CI=true (.ci/run installs them).
func needCrowdSec(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"crowdsec", "cscli"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true and %s is missing: .ci/run installs the crowdsec package", bin)
			}
			t.Skipf("%s is not installed (apt-get install crowdsec; see .ci/run)", bin)
		}
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startLAPI(t testing.TB) *realLAPI {
	t.Helper()
	needCrowdSec(t)
	dir := t.TempDir()
	for _, d := range []string{"data", "hub", "notifications"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// a profile that turns an alert's decisions into bans, as the package's default does
	profiles := "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n"
	port := freePort(t)
	l := &realLAPI{dir: dir, cfg: filepath.Join(dir, "config.yaml"), url: fmt.Sprintf("http://127.0.0.1:%d", port),
		machine: fmt.Sprintf("apiguard-test-%d", os.Getpid()), pw: "test-password-123", key: fmt.Sprintf("test-key-%d", os.Getpid())}
	config := fmt.Sprintf(`common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: .
config_paths:
  config_dir: %[1]s/
  data_dir: %[1]s/data/
  simulation_path: %[1]s/simulation.yaml
  hub_dir: %[1]s/hub/
  index_path: %[1]s/hub/.index.json
  notification_dir: %[1]s/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
crowdsec_service:
  acquisition_path: %[1]s/acquis.yaml
db_config:
  type: sqlite
  db_path: %[1]s/data/crowdsec.db
  log_level: info
api:
  client:
    credentials_path: %[1]s/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: 127.0.0.1:%[2]d
    profiles_path: %[1]s/profiles.yaml
    trusted_ips: [127.0.0.1, "::1"]
prometheus:
  enabled: false
`, dir, port)
	for name, body := range map[string]string{"config.yaml": config, "simulation.yaml": "simulation: off\n",
		"profiles.yaml": profiles, "acquis.yaml": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l.cscli(t, "machines", "add", l.machine, "--password", l.pw, "-f", filepath.Join(dir, "local_api_credentials.yaml"), "--url", l.url)
	l.cscli(t, "bouncers", "add", "apiguard-test", "-k", l.key)

	l.out = &bytes.Buffer{}
	l.cmd = exec.Command("crowdsec", "-c", l.cfg, "-no-cs")
	l.cmd.Dir = dir
	l.cmd.Stdout, l.cmd.Stderr = l.out, l.out
	if err := l.cmd.Start(); err != nil {
		t.Fatalf("start crowdsec: %v", err)
	}
	exited := make(chan struct{})
	go func() { l.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		l.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			l.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("crowdsec output:\n%s", l.out.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(l.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("crowdsec exited at start:\n%s", l.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("LAPI not healthy within 15s: %v\n%s", err, l.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return l
}

func (l *realLAPI) cscli(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "cscli", append([]string{"-c", l.cfg}, args...)...)
	cmd.Dir = l.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cscli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitVerdict pulls until src gets want, within n pulls a poll interval apart.
func waitVerdict(t *testing.T, b *Bouncer, d interface{ verdictOf(string) uint32 }, src string, want uint32, n int, every time.Duration) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := b.Pull(context.Background()); err != nil {
			t.Fatalf("pull: %v", err)
		}
		if d.verdictOf(src) == want {
			return
		}
		time.Sleep(every)
	}
	t.Fatalf("%s: verdict not %d after %d pulls", src, want, n)
}

type verdicts struct {
	t *testing.T
	k dpKernel
}

func (v verdicts) verdictOf(src string) uint32 { return verdict(v.t, v.k.d, src) }

func TestRealLAPI(t *testing.T) {
	d := loadDatapath(t)
	l := startLAPI(t)
	k := dpKernel{d}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	const every = 200 * time.Millisecond

	// a wrong key: a clear error, nothing in the kernel changes
	bad, err := NewBouncer(BouncerConfig{URL: l.url, APIKey: "wrong", Logger: quiet}, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Pull(context.Background()); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("wrong key: %v", err)
	}

	b, err := NewBouncer(BouncerConfig{URL: l.url, APIKey: l.key, Interval: every, Logger: quiet}, k)
	if err != nil {
		t.Fatal(err)
	}
	v := verdicts{t, k}
	for _, src := range []string{"192.0.2.7", "198.51.100.77", "2001:db8::7", "2001:db8:1:2::9"} {
		if got := verdict(t, d, src); got != xdpPass {
			t.Fatalf("%s before any decision: verdict %d, want pass", src, got)
		}
	}
	if err := b.Pull(context.Background()); err != nil {
		t.Fatalf("first pull (startup, no decisions: null lists): %v", err)
	}

	l.cscli(t, "decisions", "add", "--ip", "192.0.2.7", "--duration", "5m", "--reason", "test")
	l.cscli(t, "decisions", "add", "--range", "198.51.100.0/24", "--duration", "5m", "--reason", "test")
	l.cscli(t, "decisions", "add", "--ip", "2001:db8::7", "--duration", "5m", "--reason", "test")
	l.cscli(t, "decisions", "add", "--range", "2001:db8:1::/48", "--duration", "5m", "--reason", "test")
	for _, src := range []string{"192.0.2.7", "198.51.100.77", "2001:db8::7", "2001:db8:1:2::9"} {
		waitVerdict(t, b, v, src, xdpDrop, 2, every)
	}
	bans, _ := d.Bans()
	for _, kb := range bans {
		if left := time.Until(kb.Expires); left < 4*time.Minute || left > 5*time.Minute {
			t.Fatalf("ban %v expires in %v, want the decision's ~5m", kb.Prefix, left)
		}
	}
	if got := verdict(t, d, "192.0.2.8"); got != xdpPass {
		t.Fatalf("a neighbour of a banned address: verdict %d, want pass", got)
	}

	l.cscli(t, "decisions", "delete", "--ip", "192.0.2.7")
	l.cscli(t, "decisions", "delete", "--range", "2001:db8:1::/48")
	waitVerdict(t, b, v, "192.0.2.7", xdpPass, 2, every)
	waitVerdict(t, b, v, "2001:db8:1:2::9", xdpPass, 2, every)
	if got := verdict(t, d, "198.51.100.77"); got != xdpDrop {
		t.Fatal("deleting one decision lifted another")
	}

	// apiguard's own report: an alert with a decision, seen in the stream
	r, err := NewReporter(ReporterConfig{URL: l.url, MachineID: l.machine, Password: l.pw, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	flagged := netip.MustParsePrefix("203.0.113.50/32")
	r.Report(flagged, 10*time.Minute, "flood", "limited for 12s of 1m")
	if err := r.Flush(context.Background()); err != nil {
		t.Fatalf("report: %v", err)
	}
	stream, err := b.c.stream(context.Background(), l.key, true, nil, []string{OriginApiguard})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, dec := range stream.New {
		if dec.Value == "203.0.113.50" && dec.Origin == OriginApiguard && dec.Scenario == "apiguard/flood" && dec.Type == "ban" {
			found = true
		}
	}
	if !found {
		t.Fatalf("the reported client is not in the LAPI's decisions: %+v", stream.New)
	}
	// this host does not apply its own report a second time; another host does
	own, _ := NewBouncer(BouncerConfig{URL: l.url, APIKey: l.key, Own: r.Own, Logger: quiet}, newMemKernel())
	other := newMemKernel()
	peer, _ := NewBouncer(BouncerConfig{URL: l.url, APIKey: l.key, Logger: quiet}, other)
	for _, bb := range []*Bouncer{own, peer} {
		if err := bb.Pull(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if own.Origin(flagged) != "" {
		t.Fatal("the reporting host applied its own report")
	}
	if _, ok := other.get("203.0.113.50/32"); !ok || peer.Origin(flagged) != OriginApiguard {
		t.Fatal("another host did not get the reported ban")
	}

	// wrong password: a clear error
	rb, _ := NewReporter(ReporterConfig{URL: l.url, MachineID: l.machine, Password: "nope", Logger: quiet})
	rb.Report(flagged, time.Minute, "flood", "")
	if err := rb.Flush(context.Background()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestRealLAPIOutage(t *testing.T) {
	d := loadDatapath(t)
	l := startLAPI(t)
	k := dpKernel{d}
	b, err := NewBouncer(BouncerConfig{URL: l.url, APIKey: l.key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, k)
	if err != nil {
		t.Fatal(err)
	}
	l.cscli(t, "decisions", "add", "--ip", "192.0.2.7", "--duration", "5m")
	l.cscli(t, "decisions", "add", "--ip", "192.0.2.8", "--duration", "5m")
	if err := b.Pull(context.Background()); err != nil {
		t.Fatal(err)
	}
	// stop the LAPI: bans stay
	l.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for b.Pull(context.Background()) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the LAPI did not stop")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := b.Stats(); st.Reachable || st.Outages != 1 {
		t.Fatalf("stats %+v", st)
	}
	for _, src := range []string{"192.0.2.7", "192.0.2.8"} {
		if verdict(t, d, src) != xdpDrop {
			t.Fatalf("%s: the ban went with the LAPI", src)
		}
	}
	// it comes back with its state rebuilt (a new database): 192.0.2.7's
	// decision is gone, which no incremental change will ever say
	cfg2 := filepath.Join(l.dir, "config2.yaml")
	data, err := os.ReadFile(l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(l.dir, "data2"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg2, bytes.Replace(data, []byte("/data/crowdsec.db"), []byte("/data2/crowdsec.db"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	l.cfg = cfg2
	l.cscli(t, "machines", "add", l.machine, "--password", l.pw, "-f", filepath.Join(l.dir, "local_api_credentials.yaml"), "--url", l.url)
	l.cscli(t, "bouncers", "add", "apiguard-test", "-k", l.key)
	l2 := exec.Command("crowdsec", "-c", l.cfg, "-no-cs")
	l2.Dir = l.dir
	var out bytes.Buffer
	l2.Stdout, l2.Stderr = &out, &out
	if err := l2.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { l2.Wait(); close(exited) }()
	t.Cleanup(func() {
		l2.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			l2.Process.Kill()
			<-exited
		}
	})
	deadline = time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(l.url + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the LAPI did not come back:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.cscli(t, "decisions", "add", "--ip", "192.0.2.8", "--duration", "5m")
	if err := b.Pull(context.Background()); err != nil {
		t.Fatalf("pull after the outage: %v", err)
	}
	if verdict(t, d, "192.0.2.7") != xdpPass || verdict(t, d, "192.0.2.8") != xdpDrop {
		t.Fatal("not reconciled after the outage")
	}
	if st := b.Stats(); !st.Reachable || st.Active != 1 {
		t.Fatalf("stats %+v", st)
	}
}
