// Package lapi runs a real CrowdSec Local API (crowdsec -no-cs) for tests: on
// loopback, on a free port, with its configuration, database and credentials
// under the test's temporary directory, stopped when the test ends.
//
// The binaries come from Debian's crowdsec package (.ci/run installs it).
// Without them a test skips; under CI=true it fails.
package lapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/testenv"
)

// LAPI is one LAPI process of a test's own.
type LAPI struct {
	Dir      string // everything lives here
	Config   string // the config.yaml in use
	URL      string
	Machine  string // a registered machine (cscli machines add) ...
	Password string // ... and its password
	Key      string // a registered bouncer's API key

	extra map[string]string // more bouncers: name → key
	// tls is the LAPI's certificate and the CA that signs client ones, when
	// it listens with TLS (StartTLS)
	tls *TLSFiles

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan struct{}
	dbs    int
}

// Need skips (or, under CI=true, fails) the test without the crowdsec binaries.
func Need(tb testing.TB) {
	tb.Helper()
	for _, bin := range []string{"crowdsec", "cscli"} {
		if _, err := exec.LookPath(bin); err != nil {
			testenv.Missing(tb, bin+" is not installed (apt-get install crowdsec; see .ci/run)")
			return
		}
	}
}

func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TLSFiles are the PEM contents of an HTTPS LAPI's certificate and key and of
// the CA its clients' certificates must chain to.
type TLSFiles struct {
	Cert, Key, ClientCA []byte
}

// Start writes a configuration, registers a machine and a bouncer, and starts
// the LAPI; it is stopped in tb.Cleanup.
func Start(tb testing.TB) *LAPI { return start(tb, nil) }

// StartTLS starts a LAPI that listens with TLS and knows a bouncer by its
// client certificate (OU "bouncer-ou", CrowdSec's default) as well as by key.
func StartTLS(tb testing.TB, files TLSFiles) *LAPI { return start(tb, &files) }

func start(tb testing.TB, tlsFiles *TLSFiles) *LAPI {
	tb.Helper()
	Need(tb)
	dir := tb.TempDir()
	port := freePort(tb)
	scheme := "http"
	if tlsFiles != nil {
		scheme = "https"
	}
	l := &LAPI{Dir: dir, URL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), tls: tlsFiles,
		Machine: fmt.Sprintf("apiguard-test-%d", os.Getpid()), Password: "test-password-123",
		Key: fmt.Sprintf("test-key-%d", os.Getpid())}
	for _, d := range []string{"hub", "notifications"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			tb.Fatal(err)
		}
	}
	if tlsFiles != nil {
		for name, body := range map[string][]byte{"server.pem": tlsFiles.Cert, "server.key": tlsFiles.Key, "client-ca.pem": tlsFiles.ClientCA} {
			if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
				tb.Fatal(err)
			}
		}
	}
	for name, body := range map[string]string{"simulation.yaml": "simulation: off\n", "acquis.yaml": "",
		// a profile that turns an alert's decisions into bans, as the package's default does
		"profiles.yaml": "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	l.newDatabase(tb, port)
	tb.Cleanup(func() {
		l.Stop(tb)
		if tb.Failed() {
			tb.Logf("crowdsec output:\n%s", l.output())
		}
	})
	l.Run(tb)
	return l
}

// newDatabase writes a config with a fresh sqlite database and registers the
// machine and the bouncer in it (cscli writes the database directly).
func (l *LAPI) newDatabase(tb testing.TB, port int) {
	tb.Helper()
	l.dbs++
	data := filepath.Join(l.Dir, fmt.Sprintf("data%d", l.dbs))
	if err := os.MkdirAll(data, 0o700); err != nil {
		tb.Fatal(err)
	}
	config := fmt.Sprintf(`common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: .
config_paths:
  config_dir: %[1]s/
  data_dir: %[3]s/
  simulation_path: %[1]s/simulation.yaml
  hub_dir: %[1]s/hub/
  index_path: %[1]s/hub/.index.json
  notification_dir: %[1]s/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
crowdsec_service:
  acquisition_path: %[1]s/acquis.yaml
db_config:
  type: sqlite
  db_path: %[3]s/crowdsec.db
  log_level: info
api:
  client:
    credentials_path: %[1]s/local_api_credentials.yaml
    insecure_skip_verify: true
  server:
    log_level: info
    listen_uri: 127.0.0.1:%[2]d
    profiles_path: %[1]s/profiles.yaml
    trusted_ips: [127.0.0.1, "::1"]
%[4]sprometheus:
  enabled: false
`, l.Dir, port, data, l.tlsConfig())
	l.Config = filepath.Join(l.Dir, fmt.Sprintf("config%d.yaml", l.dbs))
	if err := os.WriteFile(l.Config, []byte(config), 0o600); err != nil {
		tb.Fatal(err)
	}
	l.CSCLI(tb, "machines", "add", l.Machine, "--password", l.Password, "-f", filepath.Join(l.Dir, "local_api_credentials.yaml"), "--url", l.URL)
	l.CSCLI(tb, "bouncers", "add", "apiguard-test", "-k", l.Key)
	for name, key := range l.extra {
		l.CSCLI(tb, "bouncers", "add", name, "-k", key)
	}
}

// tlsConfig is the api.server.tls block (cscli, a test tool here, skips the
// certificate check: api.client.insecure_skip_verify).
func (l *LAPI) tlsConfig() string {
	if l.tls == nil {
		return ""
	}
	return fmt.Sprintf(`    tls:
      cert_file: %[1]s/server.pem
      key_file: %[1]s/server.key
      client_verification: VerifyClientCertIfGiven
      ca_cert_path: %[1]s/client-ca.pem
      bouncers_allowed_ou: [bouncer-ou]
      agents_allowed_ou: [agent-ou]
`, l.Dir)
}

// AddBouncer registers another bouncer and returns its key. Each bouncer has
// its own place in the decision stream: two hosts need two.
func (l *LAPI) AddBouncer(tb testing.TB, name string) string {
	tb.Helper()
	key := fmt.Sprintf("test-key-%s-%d", name, os.Getpid())
	l.CSCLI(tb, "bouncers", "add", name, "-k", key)
	if l.extra == nil {
		l.extra = map[string]string{}
	}
	l.extra[name] = key
	return key
}

// Credentials is the machine's credentials file, as cscli machines add -f wrote it.
func (l *LAPI) Credentials() string { return filepath.Join(l.Dir, "local_api_credentials.yaml") }

// Run starts the LAPI process and waits until /health answers.
func (l *LAPI) Run(tb testing.TB) {
	tb.Helper()
	l.mu.Lock()
	l.out = &bytes.Buffer{}
	l.cmd = exec.Command("crowdsec", "-c", l.Config, "-no-cs")
	l.cmd.Dir = l.Dir
	l.cmd.Stdout, l.cmd.Stderr = lockedWriter{l}, lockedWriter{l}
	if err := l.cmd.Start(); err != nil {
		l.mu.Unlock()
		tb.Fatalf("start crowdsec: %v", err)
	}
	exited := make(chan struct{})
	l.exited = exited
	cmd := l.cmd
	l.mu.Unlock()
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	// each probe is bounded too: a LAPI that accepts and never answers must not
	// hold the test past its deadline
	// (the probe checks health, not the certificate)
	probe := &http.Client{Timeout: 2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for {
		resp, err := probe.Get(l.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			tb.Fatalf("crowdsec exited at start:\n%s", l.output())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("LAPI not healthy within 15s: %v\n%s", err, l.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the LAPI process (SIGTERM, then SIGKILL after 10 s).
func (l *LAPI) Stop(tb testing.TB) {
	tb.Helper()
	l.mu.Lock()
	cmd, exited := l.cmd, l.exited
	l.cmd = nil
	l.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// Rebuild stops the LAPI and starts it on a new, empty database, as after a
// reinstall: every decision is gone without any deletion being recorded.
func (l *LAPI) Rebuild(tb testing.TB) {
	tb.Helper()
	l.Stop(tb)
	port := 0
	fmt.Sscanf(l.URL[strings.LastIndexByte(l.URL, ':')+1:], "%d", &port)
	l.newDatabase(tb, port)
	l.Run(tb)
}

// CSCLI runs cscli against this LAPI's configuration.
func (l *LAPI) CSCLI(tb testing.TB, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "cscli", append([]string{"-c", l.Config}, args...)...)
	cmd.Dir = l.Dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("cscli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (l *LAPI) output() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.out == nil {
		return ""
	}
	return l.out.String()
}

type lockedWriter struct{ l *LAPI }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	return w.l.out.Write(p)
}
