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

func TestSynProxyStatusLines(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sp := &control.SynProxyStatus{CookieOK: 120, Proven: 100, KernelCookie: 2, Accepted: 118, AcceptFailed: 2, AutoOn: 3,
		Services: []control.SynProxyService{
			{Service: "api", Mode: "auto", On: true, Until: now.Add(8 * time.Second)},
			{Service: "web", Mode: "always", On: true},
			{Service: "admin", Mode: "auto"},
		}}
	var b strings.Builder
	synProxyText(&b, sp, now)
	want := "synproxy:\tapi auto: ON for 8s more (connection limit exhausted); web always: on; admin auto: off\n" +
		"synproxy:\t120 valid cookies (100 proved their source), 2 of the kernel's; 118 handed over, 2 refused by the kernel; auto turned on 3 times\n" +
		"synproxy:\tWARNING: the kernel refused handshakes (an MPTCP listener, or a TCP sysctl changed since the policy was applied: reload it)\n"
	if b.String() != want {
		t.Errorf("status:\n%s\nwant\n%s", b.String(), want)
	}
}
