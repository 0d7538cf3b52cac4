package detect

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/attack"
)

// probe is a request with a query and a user agent at time at (relative to t0).
func probe(h *harness, src string, at time.Duration, path, query, ua string, status int) bool {
	h.clock = max(h.clock, t0+at)
	return h.d.ObserveSignal(Signal{Client: netip.MustParseAddr(src), At: int64(t0 + at), Method: "GET", Path: path,
		Query: query, UserAgent: ua, Status: status})
}

func TestInjectionProbe(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	payloads := []string{"id=1%27%20or%20%271%27%3D%271", "q=%3Cscript%3Ealert(1)%3C/script%3E", "host=x%3Bcat%20/etc/passwd",
		"f=..%2f..%2f..%2fetc%2fpasswd", "t=%7B%7B7*7%7D%7D"}
	// ten probes are the threshold: not yet; answered 200 or 404 alike
	for i := range 10 {
		status := 200
		if i%2 == 1 {
			status = 404
		}
		if !probe(h, "203.0.113.20", time.Duration(i)*100*time.Millisecond, "/api/items", payloads[i%len(payloads)], "curl/8", status) {
			t.Fatalf("probe %d did not count", i)
		}
	}
	h.noFlags()
	probe(h, "203.0.113.20", 1100*time.Millisecond, "/api/items", "id=1%20union%20select%20password%20from%20users", "curl/8", 200)
	f := h.mustFlag("203.0.113.20", InjectionProbe)
	if !f.Ban.Banned || !f.Proven {
		t.Fatalf("not banned (API evidence needs no packet proof): %+v", f)
	}
	if f.Evidence.Class != "sql" || !strings.Contains(f.Evidence.Match, "union select password") ||
		!strings.Contains(f.Evidence.Summary, "11 injection probes in 1m0s") || !strings.Contains(f.Evidence.Summary, ": sql ") {
		t.Fatalf("evidence %+v", f.Evidence)
	}
	if len(h.bans.bans) != 1 || h.bans.bans[0].reason != InjectionProbe {
		t.Fatalf("bans %v", h.bans.bans)
	}
}

// A client whose searches contain quotes, "select" and "script", non-ASCII
// text and long tokens, for half an hour, is never flagged.
func TestInjectionProbeLegitimateSearches(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	queries := []string{"q=O%27Reilly+books", "q=select+a+script+for+the+play", "q=caf%C3%A9+cr%C3%A8me",
		"q=%22exact+phrase%22", "q=rock+%27n%27+roll", "token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
		"jql=status+%3D+%22Open%22+AND+assignee+%3D+me", "q=how+to+use+alert()+in+javascript", "fields=name%7Cid"}
	for i := range 30 * 60 {
		probe(h, "192.0.2.60", time.Duration(i)*time.Second, "/api/search", queries[i%len(queries)], "Mozilla/5.0 Firefox/128.0", 200)
	}
	h.noFlags()
}

func TestSensitiveFilesOnlyRefused(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	paths := []string{"/.env", "/.git/config", "/wp-login.php", "/backup.sql", "/phpmyadmin/", "/server-status"}
	// served (200) or throttled (429): not a probe of a file the host lacks
	for i, p := range paths {
		probe(h, "203.0.113.21", time.Duration(i)*time.Second, p, "", "curl/8", 200)
		probe(h, "203.0.113.21", time.Duration(i)*time.Second, p, "", "curl/8", 429)
	}
	if f := h.flag("203.0.113.21", SensitiveFiles); f != nil {
		t.Fatalf("flagged on 200/429: %+v", f)
	}
	h2 := newHarness(t, DefaultConfig())
	for i, p := range paths {
		status := []int{404, 403, 401}[i%3]
		probe(h2, "203.0.113.22", time.Duration(i)*time.Second, p, "", "curl/8", status)
	}
	f := h2.mustFlag("203.0.113.22", SensitiveFiles)
	if !f.Ban.Banned || f.Evidence.Match != "/server-status" || !strings.Contains(f.Evidence.Summary, `matches "/server-status"`) {
		t.Fatalf("flag %+v", f)
	}
}

// A scanner's user agent flags at the first request, and bans once the
// threshold is passed, in the same episode.
func TestScannerAgentFlagsThenBans(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	ua := "sqlmap/1.7.2#stable (https://sqlmap.org)"
	probe(h, "203.0.113.23", 0, "/", "", ua, 200)
	f := h.mustFlag("203.0.113.23", ScannerAgent)
	if f.Ban.Banned || f.Action != ActionFlag || len(h.bans.bans) != 0 || f.Evidence.Events != 1 {
		t.Fatalf("one request: %+v", f)
	}
	if !strings.Contains(f.Evidence.Summary, `user agent "sqlmap/1.7.2#stable (https://sqlmap.org)" matches "sqlmap"`) {
		t.Fatalf("evidence %q", f.Evidence.Summary)
	}
	for i := 1; i <= 5; i++ {
		probe(h, "203.0.113.23", time.Duration(i)*time.Second, "/", "", ua, 200)
	}
	f = h.mustFlag("203.0.113.23", ScannerAgent)
	if !f.Ban.Banned || f.Action != ActionBan || f.Episodes != 1 || len(h.bans.bans) != 1 || f.Evidence.Events != 6 {
		t.Fatalf("six requests: %+v, bans %v", f, h.bans.bans)
	}
	if got := h.d.Totals().Flagged[ScannerAgent]; got != 1 {
		t.Fatalf("flagged %d times, want once (one episode)", got)
	}
}

// One request may count for several rules: a scanner's 404 for /.env.
func TestOneRequestSeveralRules(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	if !probe(h, "203.0.113.24", 0, "/.env", "x=%27%20or%201%3D1--", "Nikto/2.1.6", 404) {
		t.Fatal("did not count")
	}
	h.mustFlag("203.0.113.24", ScannerAgent)
	for i := 1; i <= 10; i++ {
		probe(h, "203.0.113.24", time.Duration(i)*time.Second, "/.env", "x=%27%20or%201%3D1--", "Nikto/2.1.6", 404)
	}
	for _, r := range []Reason{ScannerAgent, SensitiveFiles, InjectionProbe} {
		if f := h.mustFlag("203.0.113.24", r); !f.Ban.Banned && f.Ban.Skipped == "" {
			t.Errorf("%s: %+v", r, f.Ban)
		}
	}
}

// The never-ban set, the allow list and monitor mode hold for these rules
// as for the others; a report bans without an access log.
func TestProbeRulesNeverBanAndReports(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.d.opts.NeverBan = func(p netip.Prefix) (string, bool) {
		if p.Contains(netip.MustParseAddr("192.0.2.1")) {
			return "the default gateway", true
		}
		return "", false
	}
	for i := range 12 {
		probe(h, "192.0.2.1", time.Duration(i)*time.Second, "/x", "id=%27%20or%20%271%27%3D%271", "", 200)
	}
	if f := h.mustFlag("192.0.2.1", InjectionProbe); f.Ban.Banned || f.Ban.Skipped != "never banned: the default gateway" {
		t.Fatalf("never-ban: %+v", f.Ban)
	}
	if h.d.Totals().NeverBan != 1 {
		t.Fatalf("totals %+v", h.d.Totals())
	}
	// an injection report names its class, or lets the matcher find it
	c := netip.MustParseAddr("198.51.100.30")
	if !h.d.ObserveSignal(Signal{Client: c, Report: InjectionProbe, Weight: 10, Class: attack.XSS}) {
		t.Fatal("report did not count")
	}
	h.d.ObserveSignal(Signal{Client: c, Report: InjectionProbe, Path: "/api/items?id=1%27%20or%20sleep(5)--"})
	f := h.mustFlag("198.51.100.30", InjectionProbe)
	if !f.Ban.Banned || f.Evidence.Class != "sql" || !strings.Contains(f.Evidence.Summary, "a report from the application: sql") {
		t.Fatalf("report: %+v", f)
	}
}

// Evidence quotes what a log line carried, but never a control character
// and never more than a bound.
func TestProbeEvidenceSanitised(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	ua := "sqlmap\x1b[2J\x1b[31m\u202e" + strings.Repeat("A", 5000)
	path := "/.git/\x00\x07config" + strings.Repeat("/x", 3000)
	// weighty enough to cross every threshold at once
	h.d.ObserveSignal(Signal{Client: netip.MustParseAddr("203.0.113.25"), At: int64(t0), Method: "GET\x1b", Path: path,
		Query: "q=%3Cscript%3E%0A%1b[31malert(1)" + strings.Repeat("B", 4000), UserAgent: ua, Status: 404, Weight: 20})
	for _, f := range h.d.Flags() {
		e := f.Evidence
		for _, s := range []string{e.Summary, e.Match} {
			if len(s) > 700 {
				t.Errorf("%s: evidence of %d bytes", f.Reason, len(s))
			}
			for _, r := range s {
				if r < 0x20 || r == 0x7f || r == '\u202e' {
					t.Errorf("%s: %U in %q", f.Reason, r, s)
				}
			}
		}
	}
	if len(h.d.Flags()) != 3 {
		t.Fatalf("flags: %s", h.describe())
	}
}

// A line read late counts only for the rules whose windows it is still in.
func TestProbeAgePerRule(t *testing.T) {
	cfg := DefaultConfig()
	cfg.API.ScannerAgent.Window = 10 * time.Minute
	h := newHarness(t, cfg)
	s := Signal{Client: netip.MustParseAddr("203.0.113.26"), At: int64(t0), Age: 5 * time.Minute, Method: "GET",
		Path: "/.env", UserAgent: "Nikto", Status: 404}
	if !h.d.ObserveSignal(s) {
		t.Fatal("did not count for scanner-agent (within its 10m window)")
	}
	if h.flag("203.0.113.26", SensitiveFiles) != nil || h.flag("203.0.113.26", ScannerAgent) == nil {
		t.Fatalf("flags: %s", h.describe())
	}
	s.Age = 11 * time.Minute
	s.Client = netip.MustParseAddr("203.0.113.27")
	if h.d.ObserveSignal(s) {
		t.Fatal("an 11-minute-old line counted")
	}
}

func TestProbeRulesConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.API.SensitiveFiles.Defaults = false
	cfg.API.ScannerAgent.Defaults = false
	cfg.API.ScannerAgent.Agents = []string{"ab"}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"sensitive-files: no defaults and no paths", "shorter than 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// own lists, no defaults; disabled rules look for nothing
	cfg = DefaultConfig()
	cfg.API.SensitiveFiles = SensitiveFilesRule{Rule: Rule{Enabled: true, Action: ActionFlag}, Paths: []string{"/internal"}}
	cfg.API.ScannerAgent = ScannerAgentRule{Rule: Rule{Enabled: true}, Agents: []string{"acme-scanner"}}
	cfg.API.InjectionProbe.Enabled = false
	h := newHarness(t, cfg)
	for i := range 7 {
		probe(h, "203.0.113.28", time.Duration(i)*time.Second, "/.env", "id=%27%20or%201%3D1--", "sqlmap/1.7", 404)
		probe(h, "203.0.113.29", time.Duration(i)*time.Second, "/internal/x", "", "acme-scanner/2", 404)
	}
	if h.flag("203.0.113.28", SensitiveFiles) != nil || h.flag("203.0.113.28", ScannerAgent) != nil || h.flag("203.0.113.28", InjectionProbe) != nil {
		t.Fatalf("defaults left in: %s", h.describe())
	}
	if f := h.mustFlag("203.0.113.29", SensitiveFiles); f.Ban.Banned {
		t.Fatalf("flag action banned: %+v", f)
	}
	h.mustFlag("203.0.113.29", ScannerAgent)
	if m := h.d.Matcher(); m.InjectionOn() {
		t.Fatal("injection-probe is off, yet its matcher looks for payloads")
	}
	// a reload replaces the matcher the sources read
	cfg.API.InjectionProbe.Enabled = true
	if err := h.d.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if !h.d.Matcher().InjectionOn() {
		t.Fatal("the reload did not publish the new matcher")
	}
}

func TestReportReasonsForProbes(t *testing.T) {
	for in, want := range map[string]Reason{"injection": InjectionProbe, "injection-probe": InjectionProbe,
		"sensitive-file": SensitiveFiles, "scanner": ScannerAgent, "scanner-agent": ScannerAgent} {
		if got, err := ReportReason(in); err != nil || got != want {
			t.Errorf("ReportReason(%q) = %v, %v", in, got, err)
		}
	}
	// ban codes are the table's order: the new reasons come after the old
	for i, r := range []Reason{InjectionProbe, SensitiveFiles, ScannerAgent} {
		if r.Code() != banCodeBase+10+uint32(i) {
			t.Errorf("%s: code %#x", r, r.Code())
		}
		if back, ok := ReasonFromCode(r.Code()); !ok || back != r {
			t.Errorf("%s: back %v %v", r, back, ok)
		}
	}
}
