package applog

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/clientip"
)

func TestCombined(t *testing.T) {
	for _, c := range []struct {
		name, line     string
		xff            bool
		remote, method string
		path, fwd      string
		query, ua      string
		status         int
		err            bool
	}{
		{name: "nginx default", line: `203.0.113.5 - - [27/Nov/2026:10:22:02 +0000] "GET /items/1?x=2 HTTP/1.1" 404 153 "-" "curl/7.88.1"`,
			remote: "203.0.113.5", method: "GET", path: "/items/1", query: "x=2", ua: "curl/7.88.1", status: 404},
		{name: "user and referer", line: `198.51.100.7 - alice [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/2.0" 401 0 "https://x/" "Mozilla/5.0 (X11)"`,
			remote: "198.51.100.7", method: "POST", path: "/login", ua: "Mozilla/5.0 (X11)", status: 401},
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
			remote: "10.0.0.2", method: "GET", path: "/x", fwd: "203.0.113.9, 10.0.0.1", ua: `ua \x22quoted\x22`, status: 403},
		{name: "forwarded dash", xff: true, line: `10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 403 5 "-" "ua" "-"`,
			remote: "10.0.0.2", method: "GET", path: "/x", ua: "ua", status: 403},
		// Apache escapes a quote as \": a client's quotes do not shift the fields
		{name: "apache escaped quotes", xff: true, line: `10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /x\" 200 \"y HTTP/1.1" 404 5 "-" "ua\" \"198.51.100.66\" \"" "203.0.113.9, 10.0.0.1"`,
			remote: "10.0.0.2", method: "GET", path: `/x\"`, fwd: "203.0.113.9, 10.0.0.1", ua: `ua\" \"198.51.100.66\" \"`, status: 404},
		{name: "escaped backslash before a quote", xff: true, line: `10.0.0.2 - - [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 404 5 "-" "ua\\" "203.0.113.9"`,
			remote: "10.0.0.2", method: "GET", path: "/x", fwd: "203.0.113.9", ua: `ua\\`, status: 404},
		// the user name is the client's (a Basic authorization header): nginx
		// escapes its quotes, not its brackets
		{name: "user with a bracket", line: `198.51.100.7 - a [ [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/1.1" 401 0 "-" "-"`,
			remote: "198.51.100.7", method: "POST", path: "/login", status: 401},
		{name: "user with a whole line", xff: true, line: `10.0.0.2 - a [01/Jan/2020:00:00:00 +0000] \x22GET /x HTTP/1.1\x22 200 0 [27/Nov/2026:10:22:02 +0000] "POST /login HTTP/1.1" 401 0 "-" "-" "198.51.100.7"`,
			remote: "10.0.0.2", method: "POST", path: "/login", fwd: "198.51.100.7", status: 401},
		{name: "apache empty user", line: `198.51.100.7 - "" [27/Nov/2026:10:22:02 +0000] "GET /x HTTP/1.1" 404 0 "-" "-"`,
			remote: "198.51.100.7", method: "GET", path: "/x", status: 404},
		// the user agent and the query, whatever they hold
		{name: "payload and scanner", line: `203.0.113.5 - - [27/Nov/2026:10:22:02 +0000] "GET /items?id=1%27%20or%20%271%27=%271&x=\x22 HTTP/1.1" 200 9 "-" "sqlmap/1.7.2#stable (https://sqlmap.org)"`,
			remote: "203.0.113.5", method: "GET", path: "/items", query: `id=1%27%20or%20%271%27=%271&x=\x22`, ua: "sqlmap/1.7.2#stable (https://sqlmap.org)", status: 200},
		{name: "referer but no user agent", line: `192.0.2.9 - - [27/Nov/2026:10:22:02 +0000] "GET /x? HTTP/1.1" 200 5 "https://a/"`,
			remote: "192.0.2.9", method: "GET", path: "/x", status: 200},
		// nginx accepts several spaces around the target and an absolute
		// target (RFC 9112's absolute-form), and logs the request line as
		// sent: lines as nginx 1.22 wrote them
		{name: "spaces around the target", line: `127.0.0.1 - - [27/Nov/2026:10:22:02 +0000] "GET  /.env?id=1'or'1'='1 HTTP/1.1" 404 153 "-" "-"`,
			remote: "127.0.0.1", method: "GET", path: "/.env", query: "id=1'or'1'='1", status: 404},
		{name: "three spaces", line: `127.0.0.1 - - [27/Nov/2026:10:22:02 +0000] "GET   /server-status   HTTP/1.1" 403 153 "-" "-"`,
			remote: "127.0.0.1", method: "GET", path: "/server-status", status: 403},
		{name: "absolute-form", line: `127.0.0.1 - - [27/Nov/2026:10:22:02 +0000] "GET http://x/server-status HTTP/1.1" 403 153 "-" "-"`,
			remote: "127.0.0.1", method: "GET", path: "/server-status", status: 403},
		{name: "absolute-form with a port", line: `127.0.0.1 - - [27/Nov/2026:10:22:02 +0000] "GET HTTP://x:80/.git/config HTTP/1.1" 404 153 "-" "-"`,
			remote: "127.0.0.1", method: "GET", path: "/.git/config", status: 404},
		{name: "absolute-form without a path", line: `127.0.0.1 - - [27/Nov/2026:10:22:02 +0000] "GET http://x?id=1'or'1'='1 HTTP/1.1" 404 153 "-" "-"`,
			remote: "127.0.0.1", method: "GET", path: "/", query: "id=1'or'1'='1", status: 404},
		{name: "a relative target is left alone", line: `127.0.0.1 - - [27/Nov/2026:10:22:02 +0000] "GET x/http://y/z HTTP/1.1" 400 153 "-" "-"`,
			remote: "127.0.0.1", method: "GET", path: "x/http://y/z", status: 400},
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
				e.Status != c.status || string(e.Forwarded) != c.fwd || string(e.Time) != "27/Nov/2026:10:22:02 +0000" ||
				string(e.Query) != c.query || string(e.UserAgent()) != c.ua {
				t.Fatalf("got remote %v method %q path %q query %q status %d fwd %q ua %q time %q",
					e.Remote, e.Method, e.Path, e.Query, e.Status, e.Forwarded, e.UserAgent(), e.Time)
			}
		})
	}
}

func TestJSONLines(t *testing.T) {
	def, err := NewJSONLines(DefaultFields())
	if err != nil {
		t.Fatal(err)
	}
	custom, err := NewJSONLines(Fields{Client: "client.ip", Time: "ts", Method: "http.method", Path: "http.path", Status: "http.status", Latency: "ms", LatencyUnit: "ms"})
	if err != nil {
		t.Fatal(err)
	}
	uriArgs, err := NewJSONLines(Fields{Client: "ip", Time: "ts", Path: "uri", Query: "args", Status: "code", UserAgent: "ua"})
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
		query  string
		ua     string
		status int
		lat    time.Duration
		time   string
		err    bool
	}{
		{name: "nginx escape=json", p: def, line: `{"time_iso8601":"2026-11-27T10:22:02+00:00","remote_addr":"203.0.113.5","request":"GET /items/3?a=1 HTTP/1.1","status":"404","request_time":"0.012","http_x_forwarded_for":"-","http_user_agent":"curl/8.5.0"}`,
			remote: "203.0.113.5", method: "GET", path: "/items/3", query: "a=1", ua: "curl/8.5.0", status: 404, lat: 12 * time.Millisecond, time: "2026-11-27T10:22:02+00:00"},
		{name: "escaped user agent", p: def, line: `{"time_iso8601":"2026-11-27T10:22:02Z","remote_addr":"203.0.113.5","request":"GET /?q=%27 HTTP/1.1","status":200,"http_user_agent":"a\"b\u001b[2J"}`,
			remote: "203.0.113.5", method: "GET", path: "/", query: "q=%27", ua: "a\"b\x1b[2J", status: 200, time: "2026-11-27T10:22:02Z"},
		{name: "request_uri and args", p: uriArgs, line: `{"ts":"2026-11-27T10:22:02Z","ip":"192.0.2.4","uri":"/search?q=x","args":"q=%3Cscript%3E","code":400,"ua":"-"}`,
			remote: "192.0.2.4", path: "/search", query: "q=%3Cscript%3E", status: 400, time: "2026-11-27T10:22:02Z"},
		{name: "request_uri", p: uriArgs, line: `{"ts":"2026-11-27T10:22:02Z","ip":"192.0.2.4","uri":"/search?q=1","code":400,"ua":"Nikto"}`,
			remote: "192.0.2.4", path: "/search", query: "q=1", ua: "Nikto", status: 400, time: "2026-11-27T10:22:02Z"},
		{name: "numbers", p: def, line: `{"time_iso8601":1764238922.5,"remote_addr":"2001:db8::1","request":"POST /login HTTP/1.1","status":401,"request_time":0.5,"http_x_forwarded_for":"203.0.113.1"}`,
			remote: "2001:db8::1", method: "POST", path: "/login", status: 401, lat: 500 * time.Millisecond, fwd: "203.0.113.1", time: "1764238922.5"},
		{name: "nested", p: custom, line: `{"ts":"27/Nov/2026:10:22:02 +0100","client":{"ip":"192.0.2.4"},"http":{"method":"DELETE","path":"/a/b","status":429},"ms":3}`,
			remote: "192.0.2.4", method: "DELETE", path: "/a/b", status: 429, lat: 3 * time.Millisecond, time: "27/Nov/2026:10:22:02 +0100"},
		{name: "duration string", p: custom, line: `{"ts":"2026-11-27T10:22:02Z","client.ip":"192.0.2.4","http.path":"/","http.status":"500","ms":"1.5s"}`,
			remote: "192.0.2.4", path: "/", status: 500, lat: 1500 * time.Millisecond, time: "2026-11-27T10:22:02Z"},
		{name: "escaped time", p: custom, line: `{"ts":"2026-11-27T10:22:02\u002b01:00","client.ip":"192.0.2.4","http.path":"/","http.status":"500"}`,
			remote: "192.0.2.4", path: "/", status: 500, time: "2026-11-27T10:22:02+01:00"},
		{name: "spaces and absolute-form", p: def, line: `{"time_iso8601":"2026-11-27T10:22:02+00:00","remote_addr":"203.0.113.5","request":"GET   https://api.example:8443/.git/config?a=1  HTTP/1.1","status":"404"}`,
			remote: "203.0.113.5", method: "GET", path: "/.git/config", query: "a=1", status: 404, time: "2026-11-27T10:22:02+00:00"},
		// a JSON log_format without escape=json: nginx writes a client's quote
		// \x22, its backslash \x5C and other bytes \xHH, which JSON has no
		// escape for; a client sending a quote must not make its lines
		// unreadable (lines as nginx 1.22 wrote them)
		{name: "nginx default escaping", p: def, line: `{"remote_addr":"127.0.0.1","time_iso8601":"2026-12-06T16:41:58+00:00","request":"GET /.env HTTP/1.1","status":404,"http_user_agent":"a\x22b"}`,
			remote: "127.0.0.1", method: "GET", path: "/.env", ua: `a"b`, status: 404, time: "2026-12-06T16:41:58+00:00"},
		{name: "nginx default escaping of bytes", p: def, line: `{"remote_addr":"127.0.0.1","time_iso8601":"2026-12-06T16:41:58+00:00","request":"GET /.env?q=%22x HTTP/1.1","status":404,"http_user_agent":"caf\xC3\xA9\x5C\x01"}`,
			remote: "127.0.0.1", method: "GET", path: "/.env", query: "q=%22x", ua: "caf\u00e9\\\x01", status: 404, time: "2026-12-06T16:41:58+00:00"},
		// the client's quotes stay inside the field: no key of its own
		{name: "nginx default escaping keeps fields", p: def, line: `{"remote_addr":"127.0.0.1","time_iso8601":"2026-12-06T16:41:58+00:00","request":"GET /x HTTP/1.1","status":401,"http_user_agent":"\x22,\x22remote_addr\x22:\x22192.0.2.99"}`,
			remote: "127.0.0.1", method: "GET", path: "/x", ua: `","remote_addr":"192.0.2.99`, status: 401, time: "2026-12-06T16:41:58+00:00"},
		// escape=json's escaped backslash before an x is no nginx escape
		{name: "escaped backslash then x", p: def, line: `{"remote_addr":"127.0.0.1","time_iso8601":"2026-12-06T16:41:58+00:00","request":"GET /x HTTP/1.1","status":404,"http_user_agent":"a\\x22"}`,
			remote: "127.0.0.1", method: "GET", path: "/x", ua: `a\x22`, status: 404, time: "2026-12-06T16:41:58+00:00"},
		{name: "broken json with an nginx escape", p: def, line: `{"remote_addr":"1.2.3.4","ua":"\x22",`, err: true},
		{name: "no time", p: def, line: `{"remote_addr":"203.0.113.5","request":"GET / HTTP/1.1","status":200}`, err: true},
		{name: "null time", p: def, line: `{"time_iso8601":null,"remote_addr":"203.0.113.5","request":"GET / HTTP/1.1","status":200}`, err: true},
		{name: "no status", p: def, line: `{"time_iso8601":"x","remote_addr":"203.0.113.5","request":"GET / HTTP/1.1"}`, err: true},
		{name: "status out of range", p: def, line: `{"time_iso8601":"x","remote_addr":"203.0.113.5","status":42}`, err: true},
		{name: "no client", p: def, line: `{"time_iso8601":"x","status":200}`, err: true},
		{name: "bad client", p: def, line: `{"time_iso8601":"x","remote_addr":"nobody","status":200}`, err: true},
		{name: "client not a string", p: def, line: `{"time_iso8601":"x","remote_addr":7,"status":200}`, err: true},
		{name: "not json", p: def, line: `GET / 200`, err: true},
		{name: "broken json", p: def, line: `{"remote_addr":"1.2.3.4",`, err: true},
		{name: "negative latency", p: def, line: `{"time_iso8601":"x","remote_addr":"1.2.3.4","status":200,"request_time":-1}`, err: true},
		{name: "nested not object", p: custom, line: `{"ts":"x","client":"x","http.status":200}`, err: true},
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
				e.Status != c.status || string(e.Forwarded) != c.fwd || e.Latency != c.lat || string(e.Time) != c.time ||
				string(e.Query) != c.query || string(e.UserAgent()) != c.ua {
				t.Fatalf("got remote %v method %q path %q query %q status %d fwd %q ua %q latency %v time %q",
					e.Remote, e.Method, e.Path, e.Query, e.Status, e.Forwarded, e.UserAgent(), e.Latency, e.Time)
			}
		})
	}
}

func TestFieldsCheck(t *testing.T) {
	if _, err := NewJSONLines(Fields{Method: "m", LatencyUnit: "h"}); err == nil {
		t.Fatal("accepted a mapping without client, status, path, with a bad unit")
	} else if want := "json fields: client: a field must name the client address; status: a field must name the status; time: a field must name the request's time (a line is dated by it); path: a field must name the path (or request); latencyUnit: \"h\" is none of s, ms, us, ns"; err.Error() != want {
		t.Fatalf("error\n%v\nwant\n%v", err, want)
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
		for _, c := range e.Query {
			if c == ' ' {
				t.Fatalf("query %q keeps a space", e.Query)
			}
		}
		if ua := e.UserAgent(); len(ua) > len(line) {
			t.Fatalf("user agent %q longer than its line", ua)
		}
		clientip.Trusted{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}.Client(e.Remote, e.Forwarded)
		if _, err := ParseTime(e.Time); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("time %q: error not ErrMalformed: %v", e.Time, err)
		}
	})
}

func FuzzJSONLines(f *testing.F) {
	f.Add([]byte(`{"time_iso8601":"2026-11-27T10:22:02+00:00","remote_addr":"203.0.113.5","request":"GET /items/3?a=1 HTTP/1.1","status":"404","request_time":"0.012"}`))
	f.Add([]byte(`{"time_iso8601":1764238922.123,"client":{"ip":"192.0.2.4"},"http":{"status":429}}`))
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
		if !e.Remote.IsValid() || e.Status < 100 || e.Status > 999 || e.Latency < 0 || len(e.Time) == 0 {
			t.Fatalf("accepted %q as %+v", line, e)
		}
		ParseTime(e.Time) // any text: an error or a time, never a panic
	})
}

func TestParseTime(t *testing.T) {
	utc := func(s string) time.Time { return mustTime(t, s) }
	for _, c := range []struct {
		in   string
		want time.Time // zero: an error
	}{
		{"27/Nov/2026:10:22:02 +0000", utc("2026-11-27T10:22:02Z")},
		{"27/Nov/2026:10:22:02 +0130", utc("2026-11-27T08:52:02Z")},
		{"27/Nov/2026:10:22:02 -0800", utc("2026-11-27T18:22:02Z")},
		{"01/Jan/2026:00:00:00 +1400", utc("2025-12-31T10:00:00Z")},
		{"31/Dec/2026:23:59:60 +0000", utc("2027-01-01T00:00:00Z")}, // a leap second
		{"2026-11-27T10:22:02+00:00", utc("2026-11-27T10:22:02Z")},
		{"2026-11-27T10:22:02.123456Z", utc("2026-11-27T10:22:02.123456Z")},
		{"2026-11-27T11:22:02+01:00", utc("2026-11-27T10:22:02Z")},
		{"1764238922", utc("2025-11-27T10:22:02Z")},
		{"1764238922.25", utc("2025-11-27T10:22:02.25Z")},
		{"1764238922250", utc("2025-11-27T10:22:02.25Z")},       // ms
		{"1764238922250000", utc("2025-11-27T10:22:02.25Z")},    // µs
		{"1764238922250000000", utc("2025-11-27T10:22:02.25Z")}, // ns
		{" 27/Nov/2026:10:22:02 +0000 ", utc("2026-11-27T10:22:02Z")},
		// defined failures
		{"", time.Time{}},
		{"-", time.Time{}},
		{"31/Feb/2026:10:22:02 +0000", time.Time{}},
		{"27/Foo/2026:10:22:02 +0000", time.Time{}},
		{"27/Nov/2026:24:22:02 +0000", time.Time{}},
		{"27/Nov/2026:10:22:02 +2500", time.Time{}},
		{"27/Nov/2026:10:22:02 *0000", time.Time{}},
		{"2x/Nov/2026:10:22:02 +0000", time.Time{}},
		{"2026-13-27T10:22:02Z", time.Time{}},
		{"2026-11-27 10:22:02", time.Time{}},
		{"-1764238922", time.Time{}},
		{"NaN", time.Time{}},
		{"Inf", time.Time{}},
		{"1e300", time.Time{}},
		{"9223372036.999999999", time.Time{}}, // past int64 nanoseconds
		{"1.2.3", time.Time{}},
		{"yesterday", time.Time{}},
	} {
		got, err := ParseTime([]byte(c.in))
		if c.want.IsZero() {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%q: %v, %v; want ErrMalformed", c.in, got, err)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) {
			t.Errorf("%q: %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWindowsFor(t *testing.T) {
	w := Windows{AuthFailures: time.Minute, Enumeration: 2 * time.Minute, AppThrottled: 3 * time.Minute, ErrorBurst: 4 * time.Minute}
	for status, want := range map[int]time.Duration{401: time.Minute, 403: 2 * time.Minute, 404: 2 * time.Minute,
		429: 3 * time.Minute, 500: 4 * time.Minute, 599: 4 * time.Minute, 400: 4 * time.Minute, 418: 4 * time.Minute} {
		if got := w.For(status, false); got != want {
			t.Errorf("%d: %v, want %v", status, got, want)
		}
	}
	// the rules that look at what a request carried: sensitive-files for
	// any 4xx but 429, the other two for a line that carried something
	w.SensitiveFiles, w.InjectionProbe, w.ScannerAgent = 5*time.Minute, 6*time.Minute, 7*time.Minute
	for _, c := range []struct {
		status  int
		carried bool
		want    time.Duration
	}{
		{401, false, 5 * time.Minute}, {404, false, 5 * time.Minute}, {429, false, 3 * time.Minute},
		{500, false, 4 * time.Minute}, {200, false, 4 * time.Minute},
		{200, true, 7 * time.Minute}, {404, true, 7 * time.Minute}, {503, true, 7 * time.Minute},
	} {
		if got := w.For(c.status, c.carried); got != c.want {
			t.Errorf("%d carried=%v: %v, want %v", c.status, c.carried, got, c.want)
		}
	}
}
