package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/cilium/ebpf"
)

func scanPolicy(ports int) string {
	return fmt.Sprintf(`apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: scan-%d}
spec:
  services: [{name: web, protocol: tcp, ports: [80]}]
  detection:
    scan: {window: 1m, ports: %d, action: ban}
`, ports, ports)
}

// proveSource has the egress program see the web service send src data on a
// connection, which proves src (bpf/include/proof.h).
func proveSource(t *testing.T, d *Daemon, src string) {
	t.Helper()
	frame := packet.Build(packet.Spec{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr(src), Proto: packet.TCP,
		SrcPort: 80, DstPort: 40000, TCPFlags: packet.ACK | packet.PSH, Seq: 1, Ack: 1, Payload: 100})
	if _, err := d.dp.Egress().Run(&ebpf.RunOptions{Data: frame}); err != nil {
		t.Fatal(err)
	}
}

func (d *Daemon) mustApply(t *testing.T, src string) {
	t.Helper()
	p, err := parseUpload(&control.PolicyUpload{Name: "test.yaml", Source: src})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.apply(p, "test"); err != nil {
		t.Fatal(err)
	}
}

// synScan runs SYNs from src to n closed ports through the datapath.
func synScan(t *testing.T, d *Daemon, src string, first, n int) {
	t.Helper()
	for p := first; p < first+n; p++ {
		frame := packet.Build(packet.Spec{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("192.0.2.1"),
			Proto: packet.TCP, SrcPort: 40000, DstPort: uint16(p), TCPFlags: packet.SYN})
		if _, err := d.dp.XDP().Run(&ebpf.RunOptions{Data: frame}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.tel.reader.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (d *Daemon) waitFlag(t *testing.T, subject, reason string) *control.Flag {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		flags, err := d.Flagged(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flags {
			if f.Subject() == subject && string(f.Reason) == reason {
				return &f
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// The telemetry wiring against a real datapath, without attaching anywhere:
// events reach the detector, the history and followers; the detector's ban
// lands in the ban book with its evidence; a new policy reconfigures the
// detector; refusals and bans are counted; /metrics says so.
func TestTelemetryWiring(t *testing.T) {
	testenv.RequireRoot(t)
	d := startBans(t, testPinDir(t), t.TempDir())
	d.mustApply(t, scanPolicy(5))
	if err := d.startTelemetry(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	consumed := make(chan error, 1)
	go func() { consumed <- d.consumeEvents(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.serveMetrics(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-consumed; err != nil {
			t.Errorf("consumeEvents: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serveMetrics: %v", err)
		}
	})

	feed, err := d.FollowEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()

	proveSource(t, d, "198.51.100.20")
	synScan(t, d, "198.51.100.20", 1000, 8)
	f := d.waitFlag(t, "198.51.100.20", "scan")
	if f == nil || !f.Ban.Banned || f.Ban.TTL != 10*time.Minute || !f.Proven {
		t.Fatalf("scan flag %+v", f)
	}
	bans, err := d.listBans(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(bans) != 1 || bans[0].Prefix != "198.51.100.20/32" || bans[0].Source != SourceDetector ||
		!strings.HasPrefix(bans[0].Reason, "scan: SYNs to 6 ports without a service") || bans[0].Expires == nil {
		t.Fatalf("ban book %+v", bans)
	}
	// the follower saw the events live, the history keeps them
	for i := 0; i < 8; i++ {
		ev, ok := feed.Next(ctx)
		if !ok || ev.Type != "no_service" || ev.Client != "198.51.100.20" || ev.Port != uint16(1000+i) {
			t.Fatalf("followed event %d: %+v %v", i, ev, ok)
		}
	}
	recent, err := d.RecentEvents(ctx, 100)
	if err != nil || len(recent) != 8 {
		t.Fatalf("recent events: %d, %v", len(recent), err)
	}
	// the same from a source the service never spoke to: flagged, unproven
	synScan(t, d, "198.51.100.22", 1000, 8)
	f = d.waitFlag(t, "198.51.100.22", "scan")
	if f == nil || f.Ban.Banned || f.Proven || !strings.Contains(f.Ban.Skipped, "unproven") {
		t.Fatalf("unproven scan flag %+v", f)
	}

	// a stricter policy reaches the detector: 8 ports are no longer a scan
	d.mustApply(t, scanPolicy(50))
	synScan(t, d, "198.51.100.21", 2000, 8)
	// the detector sees an event before the history does
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if recent, _ := d.RecentEvents(ctx, 100); len(recent) == 24 {
			break
		}
	}
	flags, err := d.Flagged(ctx, false)
	if err != nil || len(flags) != 2 {
		t.Fatalf("flags under the new threshold: %+v, %v", flags, err)
	}
	// a refused policy is counted, and so is a ban by hand
	if _, err := d.ApplyPolicy(ctx, &control.PolicyUpload{Name: "bad.yaml", Source: "kind: Nope\n"}); err == nil {
		t.Fatal("a bad policy was applied")
	}
	if _, err := d.AddBan(ctx, control.NewBan{Prefix: netip.MustParsePrefix("203.0.113.0/24"), TTL: time.Minute, Reason: "by hand"}); err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`apiguard_clients_flagged_total{reason="scan"} 2`,
		`apiguard_bans_withheld_total{why="unproven"} 1`,
		`apiguard_bans_total{source="detector"} 1`,
		`apiguard_bans_total{source="manual"} 1`,
		`apiguard_bans_active 2`,
		`apiguard_policy_reload_errors_total 1`,
		`apiguard_events_total{type="no_service"} 24`,
		`apiguard_events_lost_total{stage="queue"} 0`,
		`apiguard_policy_generation 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
	// the reader keeps going: nothing was dropped between kernel and detector
	if s := d.tel.reader.Stats(); s.Dropped != 0 || s.Undecodable != 0 {
		t.Errorf("reader stats %+v", s)
	}
}
