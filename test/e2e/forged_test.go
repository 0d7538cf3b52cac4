package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

// forgedPolicy bans for scans, SYN floods and floods, with windows short
// enough for a test; no rule opts into banning unproven sources.
const forgedPolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: forged-e2e}
spec:
  services:
    - name: http
      protocol: tcp
      ports: [80]
      limits:
        client:
          connections: {rate: 10/s, burst: 20}
    - name: udp
      protocol: udp
      ports: ["1-65535"]
      limits:
        client:
          packets: {rate: 1000/s, burst: 2000}
  detection:
    flood: {window: 10s, limitedFor: 2s, action: ban}
    syn-flood: {window: 10s, syns: 100, action: ban}
    scan: {window: 10s, ports: 20, action: ban}
  bans: {ttl: 10m}
`

// TestForgedPacketsBanNoInnocent is issue 13's lab case. An attacker forges,
// from a client's address that never spoke to the server, SYNs to 40 closed
// ports, a SYN flood and a UDP flood over its limits: the victim is flagged
// for all three, each flag saying it is unproven, and banned for none; it is
// served (HTTP 200) afterwards. A real connection flood from another attacker
// (completed handshakes, the connections held open and silent) is flagged
// proven and banned.
func TestForgedPacketsBanNoInnocent(t *testing.T) {
	testenv.RequireRoot(t)
	g := newGuarded(t, lab.Config{Clients: 1, Attackers: 2}, forgedPolicy, true)
	server := g.lab.ServerAddr(4)
	victim := g.lab.Clients[0].Addr4
	only := netip.PrefixFrom(victim, 32)

	// forged from attacker 0's namespace, through the router (no source check)
	for _, a := range []lab.Attack{
		{Kind: lab.PortScan, Source: victim, Target: server, Port: 2000, Ports: 40, Count: 40, Rate: 400},
		{Kind: lab.SYNFlood, Spoof: only, Target: server, Port: 80, Rate: 2000, Duration: 3 * time.Second},
		{Kind: lab.SpoofedUDPFlood, Spoof: only, Target: server, Port: 9999, Rate: 5000, Duration: 4 * time.Second},
	} {
		rep := wait(t, g.attack(0, a))
		if rep.Sent == 0 {
			t.Fatalf("%s sent nothing: %+v", a.Kind, rep)
		}
	}
	for _, reason := range []string{"scan", "syn-flood", "flood"} {
		f := g.waitFlag(victim.String(), reason, func(f control.Flag) bool { return true })
		if f == nil {
			t.Fatalf("the forged %s was not flagged:\n%s", reason, g.cli("clients", "flagged"))
		}
		if f.Proven || f.Ban.Banned || !strings.HasPrefix(f.Ban.Skipped, "unproven source") {
			t.Errorf("forged %s: proven %v, ban %+v", reason, f.Proven, f.Ban)
		}
	}

	// a real connection flood: its handshakes complete, which proves its source
	attacker := g.lab.Attackers[1].Addr4
	flood := g.attack(1, lab.Attack{Kind: lab.ConnFlood, Target: server, Port: 80, Rate: 300, Duration: 5 * time.Second})
	f := g.waitFlag(attacker.String(), "syn-flood", func(f control.Flag) bool { return f.Ban.Banned })
	wait(t, flood)
	if f == nil {
		t.Fatalf("the real connection flood was not banned:\n%s", g.cli("clients", "flagged"))
	}
	if !f.Proven {
		t.Errorf("the connection flood's flag %+v", f)
	}

	// the victim: served, and in no ban
	served := g.httpFrom(0, fmt.Sprintf("http://%s/health", server))
	if served != http.StatusOK {
		t.Errorf("the victim got HTTP %d", served)
	}
	var bans []control.Ban
	if err := json.Unmarshal([]byte(g.cli("ban", "ls", "-o", "json")), &bans); err != nil {
		t.Fatal(err)
	}
	bannedAttacker := false
	for _, b := range bans {
		p := netip.MustParsePrefix(b.Prefix)
		if p.Contains(victim) {
			t.Errorf("the victim is banned: %+v", b)
		}
		bannedAttacker = bannedAttacker || (p.Contains(attacker) && b.Source == "detector" && strings.HasPrefix(b.Reason, "syn-flood: "))
	}
	if !bannedAttacker {
		t.Errorf("ban ls lacks the connection flooder: %+v", bans)
	}
	table := g.cli("clients", "flagged")
	for _, line := range strings.Split(table, "\n") {
		if strings.HasPrefix(line, victim.String()+" ") && !strings.Contains(line, " unproven ") {
			t.Errorf("a victim's flag does not say unproven: %q", line)
		}
	}
	t.Logf("flags:\n%s", table)
}

// waitFlag polls the daemon's flags (10 s at most) for subject and reason
// until ok accepts one.
func (g *guarded) waitFlag(subject, reason string, ok func(control.Flag) bool) *control.Flag {
	g.t.Helper()
	var last *control.Flag
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var flags []control.Flag
		if err := json.Unmarshal([]byte(g.cli("clients", "flagged", "-o", "json")), &flags); err != nil {
			g.t.Fatal(err)
		}
		for _, f := range flags {
			if f.Subject() == subject && string(f.Reason) == reason {
				last = &f
				if ok(f) {
					return &f
				}
			}
		}
	}
	return last
}

// httpFrom GETs url from client namespace i and returns the status (0 when
// the request failed).
func (g *guarded) httpFrom(i int, url string) int {
	g.t.Helper()
	d, err := g.lab.Clients[i].Dialer(1)
	if err != nil {
		g.t.Fatal(err)
	}
	defer d.Close()
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		g.t.Logf("GET %s: %v", url, err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
