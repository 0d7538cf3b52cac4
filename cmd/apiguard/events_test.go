package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/detect"
)

// telemetryDaemon is a fake daemon that also keeps events and flags.
type telemetryDaemon struct {
	*fakeDaemon
	live []control.Event
}

func (d *telemetryDaemon) RecentEvents(_ context.Context, n int) ([]control.Event, error) {
	evs := []control.Event{
		{Time: d.now().Add(-2 * time.Second), Type: "deny_hit", Reason: "deny", Action: "drop", Client: "198.51.100.4", Proto: "tcp", Port: 22, TCPFlags: "SYN", Count: 1},
		{Time: d.now().Add(-time.Second), Type: "limited", Reason: "client_pps", Action: "drop", Client: "192.0.2.10", Service: 2, Proto: "udp", Port: 53, Count: 1500},
	}
	return evs[len(evs)-min(n, len(evs)):], nil
}

type sliceFeed struct {
	evs    []control.Event
	missed uint64
}

func (f *sliceFeed) Next(ctx context.Context) (control.Event, bool) {
	if len(f.evs) == 0 {
		return control.Event{}, false // the daemon stopped
	}
	ev := f.evs[0]
	f.evs = f.evs[1:]
	if ev.Client == "203.0.113.9" {
		f.missed = 3
	}
	return ev, true
}
func (f *sliceFeed) Missed() uint64 { return f.missed }
func (f *sliceFeed) Close()         {}

func (d *telemetryDaemon) FollowEvents(context.Context) (control.EventFeed, error) {
	return &sliceFeed{evs: append([]control.Event(nil), d.live...)}, nil
}

func (d *telemetryDaemon) Flagged(_ context.Context, active bool) ([]control.Flag, error) {
	fs := []control.Flag{
		{Prefix: netip.MustParsePrefix("203.0.113.66/32"), Reason: detect.Scan, Action: detect.ActionBan, Active: true, Episodes: 1,
			FirstSeen: d.now().Add(-30 * time.Second), LastSeen: d.now().Add(-5 * time.Second), Proven: true,
			Evidence: detect.Evidence{Window: 10 * time.Second, Ports: 40, Summary: "SYNs to 40 ports without a service in 10s (1, 2, 3, ...)"},
			Ban:      detect.BanInfo{Banned: true, TTL: 10 * time.Minute, Expires: d.now().Add(9 * time.Minute)}},
		{Prefix: netip.MustParsePrefix("192.0.2.53/32"), Reason: detect.Scan, Action: detect.ActionBan, Episodes: 1,
			FirstSeen: d.now().Add(-40 * time.Second), LastSeen: d.now().Add(-20 * time.Second),
			Evidence: detect.Evidence{Window: 10 * time.Second, Ports: 40, Summary: "SYNs to 40 ports without a service in 10s (1, 2, 3, ...)"},
			Ban:      detect.BanInfo{Skipped: "unproven source: no TCP handshake completed within proofTTL"}},
		{Service: 3, Reason: detect.SYNFlood, Action: detect.ActionBan, Episodes: 2,
			FirstSeen: d.now().Add(-time.Hour), LastSeen: d.now().Add(-10 * time.Minute),
			Evidence: detect.Evidence{Window: 10 * time.Second, Summary: "the service's total connection limit refused SYNs"},
			Ban:      detect.BanInfo{Skipped: "many sources: nothing to ban"}},
	}
	if active {
		fs = fs[:1]
	}
	return fs, nil
}

func TestEventsAndFlaggedCommands(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	fake := &telemetryDaemon{fakeDaemon: &fakeDaemon{now: time.Now}, live: []control.Event{
		{Time: now, Type: "no_service", Reason: "no_service", Action: "pass", Client: "203.0.113.9", Proto: "tcp", Port: 8081, TCPFlags: "SYN", Count: 1},
		{Time: now, Type: "ban_hit", Reason: "ban", Action: "drop", Client: "203.0.113.9", Proto: "tcp", Port: 443, Count: 1},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.NewServer(fake, nil).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	cli := func(args ...string) (string, string, error) {
		return execute(t, append(args, "--socket", sock)...)
	}

	out, _, err := cli("events")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "deny_hit") || !strings.Contains(lines[0], "198.51.100.4") ||
		!strings.Contains(lines[1], "udp/53 service=2") || !strings.Contains(lines[1], "drops=1500") {
		t.Errorf("events:\n%s", out)
	}

	out, _, err = cli("events", "-n", "1", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ev control.Event
	if err := json.Unmarshal([]byte(out), &ev); err != nil || ev.Type != "limited" || ev.Count != 1500 {
		t.Errorf("events -o json: %v %+v\n%s", err, ev, out)
	}

	// follow: the backlog, live events, a miss on stderr; ends when the daemon ends the stream
	out, stderr, err := cli("events", "--follow", "-n", "1")
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "limited") || !strings.Contains(lines[1], "no_service") || !strings.Contains(lines[2], "ban_hit") {
		t.Errorf("events --follow:\n%s", out)
	}
	if !strings.Contains(stderr, "missed 3 events") {
		t.Errorf("events --follow stderr: %q", stderr)
	}
	// and as NDJSON, the miss is a line of its own
	out, _, err = cli("events", "--follow", "-n", "0", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e control.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		types = append(types, e.Type)
	}
	if strings.Join(types, ",") != "missed,no_service,ban_hit" { // the miss came before the event that revealed it
		t.Errorf("follow -o json types %v", types)
	}

	out, _, err = cli("clients", "flagged")
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "CLIENT") || !strings.Contains(lines[0], "PROVEN") ||
		!strings.Contains(lines[1], "203.0.113.66") || !strings.Contains(lines[1], "scan") || !strings.Contains(lines[1], "banned 10m0s") ||
		!strings.Contains(lines[1], "SYNs to 40 ports") || !strings.Contains(lines[1], " proven ") ||
		!strings.Contains(lines[2], "192.0.2.53") || !strings.Contains(lines[2], " unproven ") ||
		!strings.Contains(lines[2], "not banned: unproven source") ||
		!strings.Contains(lines[3], "service 3 (many sources)") || !strings.Contains(lines[3], "not banned: many sources") {
		t.Errorf("clients flagged:\n%s", out)
	}
	out, _, err = cli("clients", "flagged", "--active", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var fs []control.Flag
	if err := json.Unmarshal([]byte(out), &fs); err != nil || len(fs) != 1 || fs[0].Evidence.Ports != 40 || fs[0].Ban.TTL != 10*time.Minute ||
		!fs[0].Proven || !strings.Contains(out, `"proven": true`) {
		t.Errorf("clients flagged --active -o json: %v %+v", err, fs)
	}

	if _, _, err := cli("events", "-n", "-1"); err == nil || !strings.Contains(err.Error(), "-n -1: want 0 to") {
		t.Errorf("bad -n: %v", err)
	}
}
