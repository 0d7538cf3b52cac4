package detect

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// req is an answered request at time at (relative to t0).
func req(h *harness, src string, at time.Duration, method, path string, status int) bool {
	h.clock = max(h.clock, t0+at)
	return h.d.ObserveSignal(Signal{Client: netip.MustParseAddr(src), At: int64(t0 + at), Method: method, Path: path, Status: status})
}

func TestAuthFailuresBrute(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	// 20 failures in the window is the threshold: not yet
	for i := range 20 {
		req(h, "198.51.100.7", time.Duration(i)*100*time.Millisecond, "POST", "/login", 401)
	}
	h.noFlags()
	req(h, "198.51.100.7", 2100*time.Millisecond, "POST", "/login", 401)
	f := h.mustFlag("198.51.100.7", AuthFailures)
	if !f.Ban.Banned || f.Ban.TTL != 10*time.Minute {
		t.Fatalf("ban %+v, want banned for 10m", f.Ban)
	}
	if len(h.bans.bans) != 1 || h.bans.bans[0].reason != AuthFailures || h.bans.bans[0].prefix != netip.MustParsePrefix("198.51.100.7/32") {
		t.Fatalf("bans %v", h.bans.bans)
	}
}

func TestAuthFailuresSpreadOverTimeNotFlagged(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	// a user mistyping every 10 s for 10 minutes: 6 per minute
	for i := range 60 {
		req(h, "198.51.100.8", time.Duration(i)*10*time.Second, "POST", "/login", 401)
	}
	h.noFlags()
}

func TestAuthFailuresLoginPaths(t *testing.T) {
	cfg := DefaultConfig()
	cfg.API.AuthFailures.LoginPaths = []string{"/login", "/oauth/"}
	h := newHarness(t, cfg)
	for i := range 50 {
		req(h, "198.51.100.9", time.Duration(i)*time.Second/10, "GET", "/api/private", 401)
	}
	h.noFlags()
	for i := range 21 {
		req(h, "198.51.100.9", 6*time.Second+time.Duration(i)*time.Second/10, "POST", "/oauth/token", 401)
	}
	h.mustFlag("198.51.100.9", AuthFailures)
}

func TestReportedFailedLoginsWithWeight(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	a := netip.MustParseAddr("2001:db8::1")
	h.d.ObserveSignal(Signal{Client: a, At: int64(t0), Report: AuthFailures, Weight: 20})
	h.noFlags()
	h.d.ObserveSignal(Signal{Client: netip.MustParseAddr("2001:db8::2"), At: int64(t0 + time.Second), Report: AuthFailures})
	// the same /64 is the same client
	f := h.mustFlag("2001:db8::/64", AuthFailures)
	if !f.Ban.Banned {
		t.Fatalf("not banned: %+v", f.Ban)
	}
}

func TestEnumerationWalk(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	for i := 1; i <= 500; i++ {
		req(h, "203.0.113.5", time.Duration(i)*20*time.Millisecond, "GET", fmt.Sprintf("/items/%d", i), 404)
	}
	f := h.mustFlag("203.0.113.5", Enumeration)
	if !f.Ban.Banned {
		t.Fatalf("not banned: %+v", f.Ban)
	}
	if f.Episodes != 1 || len(h.bans.bans) != 1 {
		t.Fatalf("one walk is one episode and one ban: %d episodes, bans %v", f.Episodes, h.bans.bans)
	}
	if !strings.Contains(f.Evidence.Summary, "at least 100 distinct object paths answered 403/404 in 1m0s") || !strings.Contains(f.Evidence.Summary, "template /items/{id}") {
		t.Fatalf("evidence %q", f.Evidence.Summary)
	}
}

func TestEnumerationSamePathRepeatedNotFlagged(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	// polling one missing object is not enumeration
	for i := range 300 {
		req(h, "203.0.113.6", time.Duration(i)*100*time.Millisecond, "GET", "/items/7", 404)
	}
	h.noFlags()
}

// A legitimate client: steady traffic with an occasional 404 (a stale link, a
// deleted object) and 403s, over half an hour, is never flagged.
func TestLegitimateClientWithOccasional404s(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	for i := range 30 * 60 * 5 { // 5 requests a second for 30 minutes
		at := time.Duration(i) * 200 * time.Millisecond
		status := 200
		switch {
		case i%97 == 0:
			status = 404
		case i%331 == 0:
			status = 403
		case i%1000 == 0:
			status = 401
		case i%1500 == 0:
			status = 503
		}
		req(h, "192.0.2.44", at, "GET", fmt.Sprintf("/items/%d", i), status)
	}
	h.noFlags()
}

func TestEnumerationTemplatesOnly(t *testing.T) {
	cfg := DefaultConfig()
	cfg.API.Enumeration.Learn = false
	cfg.API.Enumeration.Templates = []string{"/orders/{id}"}
	h := newHarness(t, cfg)
	for i := range 100 {
		// not a configured template
		req(h, "203.0.113.7", time.Duration(i)*10*time.Millisecond, "GET", fmt.Sprintf("/items/%d", i), 404)
	}
	h.noFlags()
	for i := range 51 {
		req(h, "203.0.113.7", 2*time.Second+time.Duration(i)*10*time.Millisecond, "GET", fmt.Sprintf("/orders/ord-%c%d", 'a'+i%26, i), 403)
	}
	h.mustFlag("203.0.113.7", Enumeration)
}

func TestAppThrottledAndErrorBurst(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	for i := range 101 {
		req(h, "203.0.113.8", time.Duration(i)*10*time.Millisecond, "GET", "/search", 429)
		req(h, "203.0.113.9", time.Duration(i)*10*time.Millisecond, "POST", "/upload", 500)
	}
	if f := h.mustFlag("203.0.113.8", AppThrottled); !f.Ban.Banned {
		t.Fatalf("app-throttled not banned: %+v", f.Ban)
	}
	// error-burst flags by default: the server may be at fault
	if f := h.mustFlag("203.0.113.9", ErrorBurst); f.Ban.Banned || f.Action != ActionFlag {
		t.Fatalf("error-burst: %+v", f)
	}
	if len(h.bans.bans) != 1 {
		t.Fatalf("bans %v", h.bans.bans)
	}
}

func TestAPIRulesRespectAllowListAndMonitor(t *testing.T) {
	h := newHarness(t, DefaultConfig(), "198.51.100.50")
	for i := range 30 {
		req(h, "198.51.100.50", time.Duration(i)*10*time.Millisecond, "POST", "/login", 401)
	}
	if f := h.mustFlag("198.51.100.50", AuthFailures); f.Ban.Banned || f.Ban.Skipped != "allow-listed" {
		t.Fatalf("allow-listed client: %+v", f.Ban)
	}
	cfg := DefaultConfig()
	cfg.Monitor = true
	m := newHarness(t, cfg)
	for i := range 30 {
		req(m, "198.51.100.51", time.Duration(i)*10*time.Millisecond, "POST", "/login", 401)
	}
	if f := m.mustFlag("198.51.100.51", AuthFailures); f.Ban.Banned || f.Ban.Skipped != "monitor mode" {
		t.Fatalf("monitor mode: %+v", f.Ban)
	}
}

func TestAPIRepeatOffenderBanGrows(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	brute := func(from time.Duration) {
		for i := range 25 {
			req(h, "198.51.100.60", from+time.Duration(i)*10*time.Millisecond, "POST", "/login", 401)
		}
	}
	brute(0)
	brute(11 * time.Minute) // after the first ban ended
	if len(h.bans.bans) != 2 || h.bans.bans[0].ttl != 10*time.Minute || h.bans.bans[1].ttl != 20*time.Minute {
		t.Fatalf("bans %v, want 10m then 20m", h.bans.bans)
	}
}

func TestSuccessIsNoSignal(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	if req(h, "192.0.2.1", 0, "GET", "/items/1", 200) {
		t.Fatal("a 200 counted")
	}
	if !req(h, "192.0.2.1", 0, "GET", "/items/1", 404) {
		t.Fatal("a 404 on an object path did not count")
	}
	if req(h, "192.0.2.1", 0, "GET", "/favicon.ico", 404) {
		t.Fatal("a 404 on a path that names no object counted")
	}
}

func TestTemplateAndIDSegments(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/items/42", "/items/{id}"},
		{"/items/42/tags/7?x=1", "/items/{id}/tags/{id}"},
		{"/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/users/{id}"},
		{"/blobs/0123456789abcdef0123", "/blobs/{id}"},
		{"/blobs/cafe", "/blobs/cafe"},
		{"/v2/items", "/v2/items"},
		{"/", "/"},
	} {
		if got := Template(c.in); got != c.want {
			t.Errorf("Template(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	for _, c := range []struct {
		tmpl, path string
		want       bool
	}{
		{"/items/{id}", "/items/9", true},
		{"/items/{id}", "/items/abc", true},
		{"/items/{id}", "/items/", false},
		{"/items/{id}", "/items/9/x", false},
		{"/items/{id}/tags", "/items/9/tags", true},
		{"/items/{id}", "/things/9", false},
	} {
		if got := matchTemplate(c.tmpl, c.path); got != c.want {
			t.Errorf("matchTemplate(%q, %q) = %v", c.tmpl, c.path, got)
		}
	}
}

func TestAPIConfigValidation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.API.Enumeration.Templates = []string{"items/{id}", "/items/{id", "/items/list"}
	cfg.API.AuthFailures.LoginPaths = []string{"login"}
	cfg.API.ErrorBurst.Action = "kill"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`template "items/{id}"`, `template "/items/{id"`, `template "/items/list"`, `login path "login"`, `error-burst: action "kill"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestReportReason(t *testing.T) {
	for in, want := range map[string]Reason{"failed-login": AuthFailures, "authz-failure": Enumeration, "throttled": AppThrottled, "error-burst": ErrorBurst} {
		if got, err := ReportReason(in); err != nil || got != want {
			t.Errorf("ReportReason(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ReportReason("bored"); err == nil {
		t.Error("unknown reason accepted")
	}
}
