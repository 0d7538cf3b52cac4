package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
)

// provenPolicy's total admits one new connection a second: a spoofed SYN
// flood spends it within microseconds of every refill, however bursty the
// generator, so without the proof a real client's new connections fail.
const provenPolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: proven-e2e}
spec:
  connections: {provenClientTTL: %s}
  services:
    - name: http
      protocol: tcp
      ports: [80]
      limits:
        client:
          connections: {rate: 50/s, burst: 50}
        total:
          connections: {rate: 1/s, burst: 1}
`

// TestProvenClientsThroughSpoofedSYNFlood: a service's total connection
// limit is shared by every client, and a SYN flood from random spoofed sources
// spends it. A real client that opens a new connection every few requests has
// talked to the server before, so its SYNs skip the shared limit: it keeps at
// least 99% of its requests answered. The same run with provenClientTTL: 0s
// must hurt it, or the test shows nothing.
func TestProvenClientsThroughSpoofedSYNFlood(t *testing.T) {
	testenv.RequireRoot(t)
	for _, v6 := range []bool{false, true} {
		t.Run(family(v6), func(t *testing.T) {
			on := fmt.Sprintf(provenPolicy, "10m")
			g := newGuarded(t, lab.Config{Attackers: 1}, on, true)
			on, off := g.write("on.yaml", on), g.write("off.yaml", fmt.Sprintf(provenPolicy, "0s"))
			target := g.lab.ServerAddr(4)
			if v6 {
				target = g.lab.ServerAddr(6)
			}
			c, err := g.lab.StartClient(lab.ClientConfig{Target: target, Rate: 20, NewConnEvery: 4})
			if err != nil {
				t.Fatal(err)
			}
			for _, run := range []struct{ name, path string }{{"proof on", on}, {"proof off", off}} {
				g.cli("policy", "apply", run.path)
				// With the proof on, the client's connections in these seconds
				// prove it. (One second was too short in a lab built while the
				// previous one was still being torn down: IPv6 runs then failed.)
				time.Sleep(3 * time.Second)
				proven0, before := g.provenSYNs(), g.counters()
				start := time.Now()
				rep := wait(t, g.attack(0, lab.Attack{Kind: lab.SYNFlood, Target: target, Port: 80, Rate: 150000, Duration: 3 * time.Second}))
				end := time.Now()
				// every request sent during the flood has ended a timeout later
				time.Sleep(1100 * time.Millisecond)
				st := c.StatsStarted(start, end)
				proven, after := g.provenSYNs()-proven0, g.counters()
				t.Logf("%s: client %s; the flood sent %d SYNs, apiguard passed %d and dropped %d at the service total; %d of the client's SYNs skipped the shared limit",
					run.name, st, rep.Sent, after["pass/ok"]-before["pass/ok"], after["drop/service_cps"]-before["drop/service_cps"], proven)
				if want := 20 * end.Sub(start).Seconds(); float64(st.Requests) < 0.9*want {
					t.Fatalf("the client sent only %d requests during the flood, want about %.0f", st.Requests, want)
				}
				switch run.path {
				case off:
					if st.SuccessRate() > 0.9 || proven != 0 {
						t.Errorf("with the proof off the flood should cost the client many requests: %.1f%% answered, %d proven SYNs", 100*st.SuccessRate(), proven)
					}
				case on:
					if st.SuccessRate() < 0.99 {
						t.Errorf("with the proof on the client got %.1f%% of its requests answered, want at least 99%%", 100*st.SuccessRate())
					}
					if proven == 0 {
						t.Error("no SYN skipped the shared limit")
					}
				}
			}
		})
	}
}

func (g *guarded) provenSYNs() uint64 {
	g.t.Helper()
	st, err := g.d.Status()
	if err != nil {
		g.t.Fatal(err)
	}
	return st.Datapath.ProvenSYNs
}
