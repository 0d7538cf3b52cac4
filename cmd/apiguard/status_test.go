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

// A service's drops: plain when enforcing, "would" in monitor mode, and both
// when there are both (a service back in enforce mode after its trial, or a
// drop monitor mode does not cover).
func TestServiceDropsText(t *testing.T) {
	for _, tc := range []struct {
		s           control.ServiceStatus
		pkts, bytes string
	}{
		{control.ServiceStatus{Mode: "enforce"}, "0", "0 B"},
		{control.ServiceStatus{Mode: "monitor"}, "0 would", "0 B would"},
		{control.ServiceStatus{Mode: "enforce", Dropped: control.PacketCount{Packets: 4, Bytes: 240}, WouldDrop: control.PacketCount{Packets: 18, Bytes: 1080}},
			"4 + 18 would", "240 B + 1.1 KiB would"},
		{control.ServiceStatus{Mode: "monitor", Dropped: control.PacketCount{Packets: 1, Bytes: 60}, WouldDrop: control.PacketCount{Packets: 3, Bytes: 180}},
			"1 + 3 would", "60 B + 180 B would"},
	} {
		p, b := dropsText(tc.s)
		if p != tc.pkts || b != tc.bytes {
			t.Errorf("%+v: %q %q, want %q %q", tc.s, p, b, tc.pkts, tc.bytes)
		}
	}
}
