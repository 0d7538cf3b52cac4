package apireport_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/apireport"
	"github.com/apiguard/apiguard/userspace/attack"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/detect"
)

// sink is a control backend that records reports.
type sink struct {
	control.Backend
	mu  sync.Mutex
	got []detect.Signal
}

func (s *sink) Report(_ context.Context, sig detect.Signal) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, sig)
	return true, nil
}

func (s *sink) wait(t *testing.T, n int) []detect.Signal {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		got := slices.Clone(s.got)
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d reports after 10s, want %d: %+v", len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// daemon serves the real control server (root only: the test runs as root
// on this project's machines) on a temporary socket.
func daemon(t *testing.T) (*sink, string) {
	t.Helper()
	s := &sink{}
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.NewServer(s, nil).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s, path
}

func TestMiddlewareReportsFailures(t *testing.T) {
	// the control socket answers root only
	testenv.RequireRoot(t)
	s, path := daemon(t)
	rep := apireport.New(path)
	defer rep.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	})
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "1" {
			w.Write([]byte("mine"))
			return
		}
		http.Error(w, "not yours", http.StatusForbidden)
	})
	mux.HandleFunc("GET /search", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	})
	h := rep.Middleware(mux)
	do := func(method, target string) int {
		req := httptest.NewRequest(method, target, nil)
		req.RemoteAddr = "198.51.100.7:40000"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	codes := []int{do("POST", "/login"), do("GET", "/items/1"), do("GET", "/items/2"), do("GET", "/search"), do("GET", "/nothing")}
	if !slices.Equal(codes, []int{401, 200, 403, 429, 404}) {
		t.Fatalf("codes %v", codes)
	}
	got := s.wait(t, 4)
	c := netip.MustParseAddr("198.51.100.7")
	want := []detect.Signal{
		{Client: c, Report: detect.AuthFailures},
		{Client: c, Report: detect.Enumeration, Path: "/items/2"},
		{Client: c, Report: detect.AppThrottled},
		{Client: c, Report: detect.Enumeration, Path: "/nothing"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// one line in a handler
	req := httptest.NewRequest("POST", "/login", nil)
	req.RemoteAddr = "[2001:db8::9]:5000"
	if !rep.FailedLogin(req) {
		t.Fatal("dropped")
	}
	if got := s.wait(t, 5); got[4] != (detect.Signal{Client: netip.MustParseAddr("2001:db8::9"), Report: detect.AuthFailures}) {
		t.Fatalf("got %+v", got[4])
	}
	// an object refused whose path is longer than the daemon's bound, or
	// not UTF-8 once decoded, is reported all the same: the daemon refused
	// such reports, and a client walking padded ids went unreported
	if c1, c2 := do("GET", "/items/"+strings.Repeat("9", 3000)), do("GET", "/items/"+strings.Repeat("%FF", 1000)); c1 != 403 || c2 != 403 {
		t.Fatalf("codes %d %d", c1, c2)
	}
	got = s.wait(t, 7)
	if p := got[5].Path; len(p) != control.MaxReportPath || p != "/items/"+strings.Repeat("9", control.MaxReportPath-7) {
		t.Errorf("long path reported as %d bytes", len(p))
	}
	if p := got[6].Path; len(p) > control.MaxReportPath || !strings.HasPrefix(p, "/items/%FF%FF") {
		t.Errorf("path that is not UTF-8 reported as %.40q (%d bytes)", p, len(p))
	}
	// the sender counts once the daemon has answered, after the sink saw it
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		sent, dropped, failed := rep.Stats()
		if sent == 7 && dropped == 0 && failed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats sent %d dropped %d failed %d", sent, dropped, failed)
		}
	}
}

// With no daemon, reports fail in the background; the request does not.
func TestNoDaemonNeverFailsTheRequest(t *testing.T) {
	rep := apireport.New(filepath.Join(t.TempDir(), "none.sock"))
	h := rep.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	req := httptest.NewRequest("POST", "/login", nil)
	req.RemoteAddr = "192.0.2.1:1"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 401 {
		t.Fatalf("code %d", w.Code)
	}
	if err := rep.Post(context.Background(), apireport.Report{Client: "192.0.2.1", Reason: apireport.FailedLogin}); err == nil {
		t.Fatal("no error without a daemon")
	}
	rep.Close()
	if rep.Send(apireport.Report{Client: "192.0.2.1", Reason: apireport.FailedLogin}) {
		t.Fatal("accepted after Close")
	}
}

// Behind a load balancer the peer is the balancer: it must never be named.
func TestClientBehindProxies(t *testing.T) {
	lb := apireport.ForwardedIP(netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("::ffff:10.0.1.0/120"))
	for _, c := range []struct {
		name, peer string
		hdr        map[string][]string
		remote     string // RemoteIP's answer ("": nobody)
		peerIP     string // PeerIP's
		forwarded  string // ForwardedIP's
	}{
		{"direct client", "198.51.100.7:4000", nil, "198.51.100.7", "198.51.100.7", "198.51.100.7"},
		{"through the balancer", "10.0.0.5:4000", map[string][]string{"X-Forwarded-For": {"198.51.100.7"}},
			"", "10.0.0.5", "198.51.100.7"},
		{"a client's own header through the balancer", "10.0.0.5:4000", map[string][]string{"X-Forwarded-For": {"192.0.2.99, 198.51.100.7"}},
			"", "10.0.0.5", "198.51.100.7"},
		{"two header lines are one list", "10.0.0.5:4000", map[string][]string{"X-Forwarded-For": {"192.0.2.99", "198.51.100.7"}},
			"", "10.0.0.5", "198.51.100.7"},
		{"a chain of the balancers", "10.0.0.5:4000", map[string][]string{"X-Forwarded-For": {"198.51.100.7, 10.0.1.9"}},
			"", "10.0.0.5", "198.51.100.7"},
		{"the balancer's own health check", "10.0.0.5:4000", nil, "10.0.0.5", "10.0.0.5", ""},
		{"only balancers in the chain", "10.0.0.5:4000", map[string][]string{"X-Forwarded-For": {"10.0.1.9"}}, "", "10.0.0.5", ""},
		{"a direct client writing the header", "198.51.100.7:4000", map[string][]string{"X-Forwarded-For": {"192.0.2.99"}},
			"", "198.51.100.7", "198.51.100.7"},
		{"another proxy header", "10.0.0.5:4000", map[string][]string{"X-Real-Ip": {"198.51.100.7"}}, "", "10.0.0.5", ""},
		{"Forwarded", "10.9.9.9:4000", map[string][]string{"Forwarded": {"for=198.51.100.7"}}, "", "10.9.9.9", "10.9.9.9"},
		{"garbage in the chain", "10.0.0.5:4000", map[string][]string{"X-Forwarded-For": {"unknown"}}, "", "10.0.0.5", ""},
		{"ipv6 peer", "[2001:db8::9]:4000", nil, "2001:db8::9", "2001:db8::9", "2001:db8::9"},
		{"no port", "bogus", nil, "", "", ""},
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = c.peer
		for k, vs := range c.hdr {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
		for _, f := range []struct {
			name string
			fn   func(*http.Request) (netip.Addr, bool)
			want string
		}{{"RemoteIP", apireport.RemoteIP, c.remote}, {"PeerIP", apireport.PeerIP, c.peerIP}, {"ForwardedIP", lb, c.forwarded}} {
			got, ok := f.fn(req)
			if ok != (f.want != "") || (ok && got != netip.MustParseAddr(f.want)) {
				t.Errorf("%s: %s = %v %v, want %q", c.name, f.name, got, ok, f.want)
			}
		}
	}
}

func TestUnattributedNotReported(t *testing.T) {
	testenv.RequireRoot(t)
	s, path := daemon(t)
	rep := apireport.New(path)
	defer rep.Close()
	rep.ClientIP = apireport.ForwardedIP(netip.MustParsePrefix("10.0.0.5/32"))
	h := rep.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusUnauthorized) }))
	for _, xff := range []string{"198.51.100.7", ""} { // a client, then the balancer's own request
		req := httptest.NewRequest("POST", "/login", nil)
		req.RemoteAddr = "10.0.0.5:4000"
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	if got := s.wait(t, 1); len(got) != 1 || got[0].Client != netip.MustParseAddr("198.51.100.7") {
		t.Fatalf("reports %+v", got)
	}
	// the sender counts once the daemon has answered
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		sent, dropped, _ := rep.Stats()
		if sent == 1 && dropped == 0 && rep.Unattributed() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sent %d dropped %d unattributed %d", sent, dropped, rep.Unattributed())
		}
	}
}

// The application's validation catches a payload: the report carries the
// request's target, cut to the daemon's bound, and the class.
func TestInjectionAttempt(t *testing.T) {
	testenv.RequireRoot(t)
	s, path := daemon(t)
	rep := apireport.New(path)
	defer rep.Close()
	rep.ClientIP = apireport.PeerIP
	req := httptest.NewRequest("GET", "/items?id=1%27%20or%20%271%27%3D%271", nil)
	req.RemoteAddr = "198.51.100.9:4000"
	if !rep.InjectionAttempt(req, apireport.SQLInjection) {
		t.Fatal("not queued")
	}
	long := httptest.NewRequest("GET", "/search?q="+strings.Repeat("A", 5000), nil)
	long.RemoteAddr = "198.51.100.9:4000"
	rep.InjectionAttempt(long, "")
	got := s.wait(t, 2)
	if got[0].Report != detect.InjectionProbe || got[0].Class != attack.SQL || got[0].Path != "/items?id=1%27%20or%20%271%27%3D%271" ||
		got[0].Client != netip.MustParseAddr("198.51.100.9") {
		t.Fatalf("report %+v", got[0])
	}
	if got[1].Class != attack.NoClass || len(got[1].Path) != control.MaxReportPath {
		t.Fatalf("long report: class %v, path of %d bytes", got[1].Class, len(got[1].Path))
	}
	// A query may hold bytes that are not UTF-8 (Go's server keeps them):
	// JSON writes each as U+FFFD, three bytes, and 1 KiB of them made the
	// report too long for the daemon, which refused it — a client padding
	// its payload so went unreported. They travel percent-escaped (the
	// daemon's matcher decodes them back), and the cut keeps the bound.
	for _, pad := range []int{1000, 3000} {
		bad := httptest.NewRequest("GET", "/items?id=1%27+or+%271%27=%271&pad="+strings.Repeat("\xff", pad), nil)
		bad.RemoteAddr = "198.51.100.9:4000"
		rep.InjectionAttempt(bad, "")
	}
	got = s.wait(t, 4)
	for _, g := range got[2:] {
		if !strings.HasPrefix(g.Path, "/items?id=1%27+or+%271%27=%271&pad=%FF%FF") || len(g.Path) > control.MaxReportPath || strings.ContainsRune(g.Path, '\uFFFD') {
			t.Fatalf("report of a query with bytes that are not UTF-8: path of %d bytes %.80q", len(g.Path), g.Path)
		}
	}
	if sent, dropped, failed := rep.Stats(); sent != 4 || dropped != 0 || failed != 0 {
		t.Fatalf("sent %d, dropped %d, failed %d", sent, dropped, failed)
	}
}
