package applog

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestCombined(t *testing.T) {
	for _, c := range []struct {
		name, line     string
		xff            bool
		remote, method string
		path, fwd      string
		status         int
		err            bool
	}{
		{name: "nginx default", line: `203.0.113.5 - - [27/Nov/2026:10:22:02 +0000] "GET /items/1?x=2 HTTP/1.1" 404 153 "-" "curl/7.88.1"`,
			remote: "203.0.113.5", method: "GET", path: "/items/1", status: 404},
		{name: "user and referer", line: `198.51.100.7 - alice [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/2.0" 401 0 "https://x/" "Mozilla/5.0 (X11)"`,
			remote: "198.51.100.7", method: "POST", path: "/login", status: 401},
		{name: "ipv6", line: `2001:db8::7 - - [27/Nov/2026:10:22:02 +0000] "GET / HTTP/1.1" 200 612 "-" "-"`,
			remote: "2001:db8::7", method: "GET", path: "/", status: 200},
		{name: "mapped v4", line: `::ffff:192.0.2.1 - - [27/Nov/2026:10:22:02 +0000] "GET / HTTP/1.1" 200 612 "-" "-"`,
			remote: "192.0.2.1", method: "GET", path: "/", status: 200},
		{name: "unparsed request", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "\x16\x03\x01\x00" 400 157 "-" "-"`,
			remote: "192.0.2.9", status: 400},
		{name: "dash request", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "-" 408 0 "-" "-"`,
			remote: "192.0.2.9", status: 408},
		{name: "http/0.9", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "GET /x" 200 0 "-" "-"`,
			remote: "192.0.2.9", method: "GET", path: "/x", status: 200},
		{name: "dash bytes", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 499 - "-" "-"`,
			remote: "192.0.2.9", method: "GET", path: "/x", status: 499},
		{name: "no referer fields", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 200 5`,
			remote: "192.0.2.9", method: "GET", path: "/x", status: 200},
		{name: "forwarded", xff: true, line: `10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 403 5 "-" "ua \x22quoted\x22" "203.0.113.9, 10.0.0.1"`,
			remote: "10.0.0.2", method: "GET", path: "/x", fwd: "203.0.113.9, 10.0.0.1", status: 403},
		{name: "forwarded dash", xff: true, line: `10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 403 5 "-" "ua" "-"`,
			remote: "10.0.0.2", method: "GET", path: "/x", status: 403},
		{name: "forwarded missing", xff: true, line: `10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 403 5 "-" "ua"`, err: true},
		{name: "empty", line: ``, err: true},
		{name: "garbage", line: `hello world`, err: true},
		{name: "bad address", line: `300.1.1.1 - - [27/Nov/2026:10:22:02 +0000] "GET / HTTP/1.1" 200 1 "-" "-"`, err: true},
		{name: "leading zero", line: `01.1.1.1 - - [27/Nov/2026:10:22:02 +0000] "GET / HTTP/1.1" 200 1 "-" "-"`, err: true},
		{name: "no time", line: `192.0.2.9 - - "GET / HTTP/1.1" 200 1 "-" "-"`, err: true},
		{name: "unterminated request", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "GET / HTTP/1.1 200 1`, err: true},
		{name: "short status", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "GET / HTTP/1.1" 20 1 "-" "-"`, err: true},
		{name: "letter status", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "GET / HTTP/1.1" 2x0 1 "-" "-"`, err: true},
		{name: "no bytes", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "GET / HTTP/1.1" 200 x "-" "-"`, err: true},
		{name: "truncated", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "GET / HTTP/1.1" 200`, err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var e Entry
			err := Combined{Forwarded: c.xff}.Parse([]byte(c.line), &e)
			if c.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err %v, want ErrMalformed (entry %+v)", err, e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Remote != netip.MustParseAddr(c.remote) || string(e.Method) != c.method || string(e.Path) != c.path ||
				e.Status != c.status || string(e.Forwarded) != c.fwd {
				t.Fatalf("got remote %v method %q path %q status %d fwd %q", e.Remote, e.Method, e.Path, e.Status, e.Forwarded)
			}
		})
	}
}

func TestJSONLines(t *testing.T) {
	def, err := NewJSONLines(DefaultFields())
	if err != nil {
		t.Fatal(err)
	}
	custom, err := NewJSONLines(Fields{Client: "client.ip", Method: "http.method", Path: "http.path", Status: "http.status", Latency: "ms", LatencyUnit: "ms"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		p      *JSONLines
		line   string
		remote string
		method string
		path   string
		fwd    string
		status int
		lat    time.Duration
		err    bool
	}{
		{name: "nginx escape=json", p: def, line: `{"remote_addr":"203.0.113.5","request":"GET /items/3?a=1 HTTP/1.1","status":"404","request_time":"0.012","http_x_forwarded_for":"-"}`,
			remote: "203.0.113.5", method: "GET", path: "/items/3", status: 404, lat: 12 * time.Millisecond},
		{name: "numbers", p: def, line: `{"remote_addr":"2001:db8::1","request":"POST /login HTTP/1.1","status":401,"request_time":0.5,"http_x_forwarded_for":"203.0.113.1"}`,
			remote: "2001:db8::1", method: "POST", path: "/login", status: 401, lat: 500 * time.Millisecond, fwd: "203.0.113.1"},
		{name: "nested", p: custom, line: `{"client":{"ip":"192.0.2.4"},"http":{"method":"DELETE","path":"/a/b","status":429},"ms":3}`,
			remote: "192.0.2.4", method: "DELETE", path: "/a/b", status: 429, lat: 3 * time.Millisecond},
		{name: "duration string", p: custom, line: `{"client.ip":"192.0.2.4","http.path":"/","http.status":"500","ms":"1.5s"}`,
			remote: "192.0.2.4", path: "/", status: 500, lat: 1500 * time.Millisecond},
		{name: "no status", p: def, line: `{"remote_addr":"203.0.113.5","request":"GET / HTTP/1.1"}`, err: true},
		{name: "status out of range", p: def, line: `{"remote_addr":"203.0.113.5","status":42}`, err: true},
		{name: "no client", p: def, line: `{"status":200}`, err: true},
		{name: "bad client", p: def, line: `{"remote_addr":"nobody","status":200}`, err: true},
		{name: "client not a string", p: def, line: `{"remote_addr":7,"status":200}`, err: true},
		{name: "not json", p: def, line: `GET / 200`, err: true},
		{name: "broken json", p: def, line: `{"remote_addr":"1.2.3.4",`, err: true},
		{name: "negative latency", p: def, line: `{"remote_addr":"1.2.3.4","status":200,"request_time":-1}`, err: true},
		{name: "nested not object", p: custom, line: `{"client":"x","http.status":200}`, err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var e Entry
			err := c.p.Parse([]byte(c.line), &e)
			if c.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err %v, want ErrMalformed (entry %+v)", err, e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Remote != netip.MustParseAddr(c.remote) || string(e.Method) != c.method || string(e.Path) != c.path ||
				e.Status != c.status || string(e.Forwarded) != c.fwd || e.Latency != c.lat {
				t.Fatalf("got remote %v method %q path %q status %d fwd %q latency %v", e.Remote, e.Method, e.Path, e.Status, e.Forwarded, e.Latency)
			}
		})
	}
}

func TestFieldsCheck(t *testing.T) {
	if _, err := NewJSONLines(Fields{Method: "m", LatencyUnit: "h"}); err == nil {
		t.Fatal("accepted a mapping without client, status, path, with a bad unit")
	} else if want := "json fields: client: a field must name the client address; status: a field must name the status; path: a field must name the path (or request); latencyUnit: \"h\" is none of s, ms, us, ns"; err.Error() != want {
		t.Fatalf("error\n%v\nwant\n%v", err, want)
	}
}

func TestProxiesClient(t *testing.T) {
	ps := Proxies{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, c := range []struct {
		remote, fwd, want string
		ok                bool
	}{
		{"203.0.113.1", "198.51.100.1", "203.0.113.1", true},                  // untrusted peer: its header is ignored
		{"10.0.0.2", "", "10.0.0.2", true},                                    // proxy without a header
		{"10.0.0.2", "198.51.100.1", "198.51.100.1", true},                    // one proxy
		{"10.0.0.2", "1.1.1.1, 198.51.100.1, 10.0.0.1", "198.51.100.1", true}, // spoofed left part ignored
		{"10.0.0.2", "10.0.0.9,10.0.0.1", "10.0.0.9", true},                   // all proxies
		{"fd00::1", "2001:db8::5", "2001:db8::5", true},
		{"10.0.0.2", "198.51.100.1, junk", "", false},
	} {
		e := Entry{Remote: netip.MustParseAddr(c.remote), Forwarded: []byte(c.fwd)}
		got, ok := ps.Client(&e)
		if ok != c.ok || (ok && got != netip.MustParseAddr(c.want)) {
			t.Errorf("remote %s fwd %q: got %v %v, want %s %v", c.remote, c.fwd, got, ok, c.want, c.ok)
		}
	}
}

// A line that parses has an address, a status of three digits and, if a
// path, one without a query; nothing panics.
func FuzzCombined(f *testing.F) {
	f.Add([]byte(`203.0.113.5 - - [27/Nov/2026:10:22:02 +0000] "GET /items/1?x=2 HTTP/1.1" 404 153 "-" "curl/7.88.1"`), false)
	f.Add([]byte(`10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 403 5 "-" "ua" "203.0.113.9, 10.0.0.1"`), true)
	f.Fuzz(func(t *testing.T, line []byte, xff bool) {
		var e Entry
		if err := (Combined{Forwarded: xff}).Parse(line, &e); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if !e.Remote.IsValid() || e.Status < 0 || e.Status > 999 {
			t.Fatalf("accepted %q as %+v", line, e)
		}
		for _, c := range e.Path {
			if c == '?' || c == ' ' {
				t.Fatalf("path %q keeps a query or a space", e.Path)
			}
		}
		Proxies{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}.Client(&e)
	})
}

func FuzzJSONLines(f *testing.F) {
	f.Add([]byte(`{"remote_addr":"203.0.113.5","request":"GET /items/3?a=1 HTTP/1.1","status":"404","request_time":"0.012"}`))
	f.Add([]byte(`{"client":{"ip":"192.0.2.4"},"http":{"status":429}}`))
	p, err := NewJSONLines(DefaultFields())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var e Entry
		if err := p.Parse(line, &e); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if !e.Remote.IsValid() || e.Status < 100 || e.Status > 999 || e.Latency < 0 {
			t.Fatalf("accepted %q as %+v", line, e)
		}
	})
}
