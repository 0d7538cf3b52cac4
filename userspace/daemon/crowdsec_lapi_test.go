package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lapi"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/detect"
)

// runLink runs d's crowdsec component until the test ends.
func runLink(t *testing.T, d *Daemon) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.runCrowdSec(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// Two daemons (two datapaths, two ban books) share one real LAPI: an attacker
// host A bans is reported and refused by host B, which never saw it; A does
// not apply its own report again. The LAPI down: B keeps enforcing and says
// so; the LAPI back with a rebuilt database: B reconciles and lifts the ban.
func TestTwoDaemonsShareOneLAPI(t *testing.T) {
	testenv.RequireRoot(t)
	l := lapi.Start(t)
	keyA, keyB := l.AddBouncer(t, "host-a"), l.AddBouncer(t, "host-b")
	t.Setenv("APIGUARD_TEST_KEY_A", keyA)
	t.Setenv("APIGUARD_TEST_KEY_B", keyB)
	hostPolicy := func(env string) string {
		return fmt.Sprintf(`apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: %s}
spec:
  crowdsec:
    lapi: %s
    bouncer: {apiKeyEnv: %s, pollInterval: 1s}
    report: {credentialsFile: %s}
`, strings.ToLower(env[len(env)-1:]), l.URL, env, l.Credentials())
	}
	a := startBans(t, testPinDir(t), t.TempDir())
	b := startBans(t, testPinDir(t), t.TempDir())
	a.mustApply(t, hostPolicy("APIGUARD_TEST_KEY_A"))
	b.mustApply(t, hostPolicy("APIGUARD_TEST_KEY_B"))
	runLink(t, a)
	runLink(t, b)

	// the link starts in the background: a detector ban made before host A's
	// reporter runs is not reported (the ban is local only)
	waitFor(t, "both links to run", func() bool {
		_, ra := a.CrowdSecStats()
		bb, _ := b.CrowdSecStats()
		return ra != nil && bb != nil
	})
	const attacker = "198.51.100.60"
	if xdpVerdict(t, b, attacker) != 2 {
		t.Fatal("host B drops the attacker before anything happened")
	}
	// host A's detector bans it
	if err := a.detectorBan(netip.MustParsePrefix(attacker+"/32"), 10*time.Minute, detect.Scan, "SYNs to 30 ports"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "host B to refuse the attacker", func() bool { return xdpVerdict(t, b, attacker) == 1 })
	t.Logf("host A's ban enforced by host B after %v (report within 1s, pull every 1s)", time.Since(start).Round(time.Millisecond))
	if ban, ok := banByPrefix(t, b, attacker+"/32"); !ok || ban.Source != "crowdsec:apiguard" {
		t.Fatalf("host B's ban %+v", ban)
	}
	// host A pulls the same decision and leaves its own ban as it is
	waitFor(t, "host A's next pull", func() bool {
		bs, _ := a.CrowdSecStats()
		return bs != nil && bs.Pulls >= 3
	})
	if ban, _ := banByPrefix(t, a, attacker+"/32"); ban.Source != SourceDetector {
		t.Fatalf("host A's own ban became %+v", ban)
	}
	if bs, rs := a.CrowdSecStats(); bs.Active != 0 || rs.Sent != 1 {
		t.Fatalf("host A: bouncer %+v reporter %+v", bs, rs)
	}

	// the LAPI stops: B keeps the ban and says the LAPI is down
	l.Stop(t)
	waitFor(t, "host B to see the outage", func() bool {
		st, err := b.Status(context.Background())
		return err == nil && st.CrowdSec != nil && st.CrowdSec.Bouncer != nil && !st.CrowdSec.Bouncer.Reachable && st.CrowdSec.Bouncer.Outages == 1
	})
	if xdpVerdict(t, b, attacker) != 1 {
		t.Fatal("host B flushed the ban when the LAPI went down")
	}
	// back, with its decisions gone: B reconciles
	l.Rebuild(t)
	waitFor(t, "host B to reconcile", func() bool { return xdpVerdict(t, b, attacker) == 2 })
	st, err := b.Status(context.Background())
	if err != nil || !st.CrowdSec.Bouncer.Reachable || st.CrowdSec.Bouncer.Active != 0 {
		t.Fatalf("host B after the outage: %+v %v", st.CrowdSec.Bouncer, err)
	}
	// the local ban on A is A's and stays
	if ban, ok := banByPrefix(t, a, attacker+"/32"); !ok || ban.Source != SourceDetector {
		t.Fatalf("host A's own ban after the outage: %+v %v", ban, ok)
	}
}
