package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/detect"
)

func logsPolicy(paths ...string) string {
	var b strings.Builder
	b.WriteString(`apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: logs}
spec:
  detection:
    auth-failures: {failures: 20}
  accessLogs:
`)
	for _, p := range paths {
		fmt.Fprintf(&b, "    - {path: %s, fromStart: true}\n", p)
	}
	return b.String()
}

func (d *Daemon) waitLogs(t *testing.T, what string, cond func([]control.AccessLogStatus) bool) []control.AccessLogStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := accessLogStatus(d.accessLogStats())
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s; access logs %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nginxTime is $time_local.
func nginxTime(t time.Time) string { return t.Format("02/Jan/2006:15:04:05 -0700") }

// xdpVerdict runs a TCP SYN from src through the loaded datapath.
const xdpDrop = 1

// The daemon follows the policy's access logs: lines become signals, a brute
// force becomes a ban the datapath enforces, a new policy stops and starts
// sources (each keeping its position), and reports count like lines.
func TestAccessLogSourcesFollowThePolicy(t *testing.T) {
	testenv.RequireRoot(t)
	state := t.TempDir()
	d := startBans(t, testPinDir(t), state)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	d.mustApply(t, logsPolicy(a))
	if err := d.startTelemetry(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	followed := make(chan error, 1)
	go func() { followed <- d.followAccessLogs(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-followed; err != nil {
			t.Errorf("followAccessLogs: %v", err)
		}
	})

	if v := xdpVerdict(t, d, "203.0.113.9"); v == xdpDrop {
		t.Fatal("dropped before any signal")
	}
	var lines strings.Builder
	// an hour of ordinary failed logins from yesterday's log (fromStart): each
	// is older than the rule's window and counts for nothing
	old := time.Now().Add(-2 * time.Hour)
	for i := range 60 {
		fmt.Fprintf(&lines, `203.0.113.10 - - [%s] "POST /login HTTP/1.1" 401 20 "-" "app"`+"\n", nginxTime(old.Add(time.Duration(i)*time.Minute)))
	}
	for range 21 {
		fmt.Fprintf(&lines, `203.0.113.9 - - [%s] "POST /login HTTP/1.1" 401 20 "-" "hydra"`+"\n", nginxTime(time.Now()))
	}
	lines.WriteString("garbage\n")
	if err := os.WriteFile(a, []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	d.waitLogs(t, "82 lines of a.log read", func(st []control.AccessLogStatus) bool {
		return len(st) == 1 && st[0].Path == a && st[0].Lines == 82
	})
	f := d.waitFlag(t, "203.0.113.9", "auth-failures")
	if f == nil || !f.Ban.Banned {
		t.Fatalf("flag %+v", f)
	}
	if v := xdpVerdict(t, d, "203.0.113.9"); v != xdpDrop {
		t.Fatalf("verdict %d after the ban, want XDP_DROP", v)
	}
	st := accessLogStatus(d.accessLogStats())[0]
	if st.ParseErrors != 1 || st.Signals != 21 || st.LagBytes != 0 || st.Ignored.Stale != 60 {
		t.Fatalf("status %+v", st)
	}
	flags, err := d.Flagged(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flags {
		if f.Subject() == "203.0.113.10" {
			t.Fatalf("old lines of the log flagged their client: %+v", f)
		}
	}
	if v := xdpVerdict(t, d, "203.0.113.10"); v == xdpDrop {
		t.Fatal("old lines of the log banned their client")
	}

	// a new policy: a.log stops (its position saved), b.log starts
	d.mustApply(t, logsPolicy(b))
	d.waitLogs(t, "b.log followed alone", func(st []control.AccessLogStatus) bool {
		return len(st) == 1 && st[0].Path == b
	})
	saved, err := os.ReadDir(filepath.Join(state, "accesslogs"))
	if err != nil || len(saved) != 1 {
		t.Fatalf("saved positions: %v %v", saved, err)
	}
	// back to a.log: it resumes after the 22 lines it read
	if err := os.WriteFile(a, []byte(lines.String()+`192.0.2.5 - - [`+nginxTime(time.Now())+`] "GET /items/7 HTTP/1.1" 404 0 "-" "-"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.mustApply(t, logsPolicy(a))
	d.waitLogs(t, "a.log resumed", func(st []control.AccessLogStatus) bool {
		return len(st) == 1 && st[0].Path == a && st[0].Lines == 1 && st[0].Signals == 1
	})

	// reports
	counted, err := d.Report(ctx, detect.Signal{Client: netip.MustParseAddr("198.51.100.3"), Report: detect.AuthFailures, Weight: 21})
	if err != nil || !counted {
		t.Fatalf("report: %v %v", counted, err)
	}
	if f := d.waitFlag(t, "198.51.100.3", "auth-failures"); f == nil || !f.Ban.Banned {
		t.Fatalf("reported client: %+v", f)
	}
	if d.Reports() != 1 {
		t.Fatalf("reports %d", d.Reports())
	}
}
