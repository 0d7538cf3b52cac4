package applog

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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
	for src.Stats().Lines < lines {
		if time.Now().After(deadline) {
			t.Fatalf("read %d lines of %d in 10s", src.Stats().Lines, lines)
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

func TestSourceCombinedBehindProxies(t *testing.T) {
	content := `10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/1.1" 401 5 "-" "ua" "1.2.3.4, 198.51.100.7"
10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /items/5 HTTP/1.1" 200 5 "-" "ua" "198.51.100.7"
203.0.113.9 - - [27/Nov/2026:10:22:02 +0000] "GET /items/6?x=1 HTTP/1.1" 404 5 "-" "ua" "198.51.100.7"
10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /boom HTTP/1.1" 500 5 "-" "ua" "-"
10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 403 5 "-" "ua" "not-an-ip"
this line is not nginx's
`
	got, st := runSource(t, SourceConfig{Format: "combined", Forwarded: true, Proxies: Proxies{netip.MustParsePrefix("10.0.0.0/8")}}, content, 6)
	want := []detect.Signal{
		{Client: netip.MustParseAddr("198.51.100.7"), Method: "POST", Path: "/login", Status: 401},
		// an untrusted peer's header is ignored
		{Client: netip.MustParseAddr("203.0.113.9"), Method: "GET", Path: "/items/6", Status: 404},
		{Client: netip.MustParseAddr("10.0.0.2"), Method: "GET", Path: "/boom", Status: 500},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("signals\n%+v\nwant\n%+v", got, want)
	}
	if st.Lines != 6 || st.ParseErrors != 1 || st.Unattributed != 1 || st.Signals != 2 || st.Format != "combined" {
		t.Fatalf("stats %+v", st)
	}
}

func TestSourceJSON(t *testing.T) {
	content := `{"ip":"2001:db8::5","req":{"method":"GET","uri":"/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301"},"code":404}
{"ip":"2001:db8::5","req":{"method":"GET","uri":"/"},"code":200}
{"ip":"2001:db8::5","code":"oops"}
`
	fields := Fields{Client: "ip", Method: "req.method", Path: "req.uri", Status: "code"}
	got, st := runSource(t, SourceConfig{Format: "json", Fields: fields}, content, 3)
	want := []detect.Signal{{Client: netip.MustParseAddr("2001:db8::5"), Method: "GET", Path: "/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301", Status: 404}}
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
