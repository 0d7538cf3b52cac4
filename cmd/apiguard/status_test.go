package main

import (
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/crowdsec"
)

func TestCrowdSecStatusLines(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cs := &control.CrowdSec{LAPI: "http://10.0.0.5:8080", Insecure: true, MapFull: 2,
		Bouncer: &crowdsec.BouncerStats{Pulls: 3, Reachable: true, LastSuccess: now.Add(-3 * time.Second), Decisions: 10, Active: 9,
			Refused: map[string]uint64{crowdsec.RefusedTooBroad: 2, crowdsec.RefusedType: 5}}}
	var b strings.Builder
	crowdSecText(&b, cs, now)
	for _, want := range []string{
		"crowdsec:\thttp://10.0.0.5:8080 reachable; last good pull 3s ago; 10 decisions on 9 prefixes",
		"crowdsec:\tWARNING: plain HTTP to a LAPI that is not this host",
		"crowdsec:\tdecisions refused: 2 too broad, 5 type\n",
		"crowdsec:\t2 decisions NOT ENFORCED",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	// a LAPI on this host refusing nothing: neither line
	cs = &control.CrowdSec{LAPI: "http://127.0.0.1:8080", Bouncer: &crowdsec.BouncerStats{Pulls: 1, Reachable: true}}
	b.Reset()
	crowdSecText(&b, cs, now)
	if strings.Contains(b.String(), "WARNING") || strings.Contains(b.String(), "refused") {
		t.Fatalf("status:\n%s", b.String())
	}
}
