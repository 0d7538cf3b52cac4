package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

const nginxPort = 8080

// nginxConf serves the lab's API paths: /login answers 401 unless the
// password header is right, /items/1 exists and every other item is 404.
// Everything it writes stays under dir; it runs in the foreground.
const nginxConf = `worker_processes 1;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 256; }
http {
	access_log %[1]s/access.log combined;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s:%[3]d;
		location = /login {
			if ($http_x_password != "opensesame") { return 401 "wrong credentials\n"; }
			return 200 "welcome\n";
		}
		location = /items/1 { return 200 "item 1\n"; }
		location /items/ { return 404 "no such item\n"; }
		location = /health { return 200 "ok\n"; }
		location /api/ { return 200 "{}\n"; }
	}
}
`

const apiSignalsPolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: api-signals-e2e}
spec:
  services:
    - name: api
      protocol: tcp
      ports: [8080]
  detection:
    auth-failures: {failures: 20, window: 1m, loginPaths: [/login]}
    enumeration: {objects: 50, window: 1m}
  bans: {ttl: 1m}
  accessLogs:
    - path: %s
`

// nginxProc is nginx running in the guarded namespace.
type nginxProc struct {
	cmd  *exec.Cmd
	dir  string
	done chan error
}

func (e *env) startNginx(t testing.TB) *nginxProc {
	t.Helper()
	bin := testenv.RequireTool(t, "nginx")
	dir := filepath.Join(e.dir, "nginx")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, e.pair.guardEnd.Addr4, nginxPort), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+e.pair.guarded.Name, bin,
		"-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &nginxProc{cmd: cmd, dir: dir, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT) // graceful: workers go too
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	// wait until it answers
	c := e.httpFrom(t, e.pair.peerEnd.Addr4)
	if !lab.WaitFor(10*time.Second, func() bool { code, _ := get(c, "/health", ""); return code == 200 }) {
		errlog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		t.Fatalf("nginx does not answer within 10s\n%s", errlog)
	}
	return p
}

func (p *nginxProc) accessLog() string { return filepath.Join(p.dir, "access.log") }

// reopen makes nginx reopen its logs (what logrotate's postrotate does).
func (p *nginxProc) reopen(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
}

// apiClient is an HTTP client in the peer namespace whose connections come
// from src; each request is a new connection, so a ban shows on the next one.
type apiClient struct {
	http *http.Client
	base string
}

func (e *env) httpFrom(t testing.TB, src netip.Addr) *apiClient {
	t.Helper()
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := e.pair.peer.Do(func() error {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 500 * time.Millisecond}
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &apiClient{http: &http.Client{Transport: tr, Timeout: time.Second},
		base: fmt.Sprintf("http://%s:%d", e.pair.guardEnd.Addr4, nginxPort)}
}

// get requests path (a POST with a password header when password is given)
// and returns the status, or an error when no answer came.
func get(c *apiClient, path, password string) (int, error) {
	method := http.MethodGet
	if password != "" {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		return 0, err
	}
	if password != "" {
		req.Header.Set("X-Password", password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func (e *env) accessLogStatus(t testing.TB, path string) control.AccessLogStatus {
	t.Helper()
	for _, l := range e.status().AccessLogs {
		if l.Path == path {
			return l
		}
	}
	t.Fatalf("status lists no access log %s", path)
	return control.AccessLogStatus{}
}

// udpProbe sends one datagram from src to the lab's UDP port; the guarded
// side needs no listener: a ban drops it at the NIC, before any socket.
func (e *env) udpProbe(t testing.TB, src netip.Addr) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := e.pair.peer.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: e.pair.guardEnd.Addr4.AsSlice(), Port: labPort})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// bruteForce posts wrong passwords from src until the 21st 401 (the
// offending request) and returns when its answer came.
func (e *env) bruteForce(t testing.TB, c *apiClient, failures int) time.Time {
	t.Helper()
	for i := range failures {
		code, err := get(c, "/login", "guess-"+fmt.Sprint(i))
		if err != nil || code != 401 {
			t.Fatalf("attempt %d: status %d, %v; want 401", i, code, err)
		}
	}
	return time.Now()
}

// timeToDrop sends a datagram from src, then asks the kernel's counters
// whether a ban dropped a packet, until one did: the first dropped probe is
// the last one sent. It returns how long after since that probe was sent,
// and the previous (passed) probe's time, a lower bound.
func (e *env) timeToDrop(t testing.TB, probe *net.UDPConn, since time.Time, banDrops0 uint64) (upper, lower time.Duration) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	prev := since
	for time.Now().Before(deadline) {
		sent := time.Now()
		if _, err := probe.Write([]byte("probe")); err != nil {
			t.Fatal(err)
		}
		if e.dropped("ban") > banDrops0 {
			return sent.Sub(since), prev.Sub(since)
		}
		prev = sent
	}
	t.Fatalf("no packet of the client dropped by a ban within 10s")
	return 0, 0
}

// TestAPISignalsEndToEnd: nginx in the guarded namespace writes its access
// log; the daemon follows it. A legitimate client with occasional 404s is
// never flagged, and the log's rotation in the middle of its traffic loses
// no line; a malformed line is counted and skipped; a client brute-forcing
// /login is flagged auth-failures and its packets are dropped in the kernel
// within a second; a client walking /items/N is flagged enumeration.
func TestAPISignalsEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEnv(t)
	ngx := e.startNginx(t)
	logPath := ngx.accessLog()
	d := e.startDaemon(e.write("api.yaml", fmt.Sprintf(apiSignalsPolicy, logPath)))
	// the source opens the log within a check interval
	if !lab.WaitFor(10*time.Second, func() bool {
		for _, l := range e.status().AccessLogs {
			if l.Path == logPath && l.Error == "" {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the daemon does not follow %s: %+v\n%s", logPath, e.status().AccessLogs, d.logText())
	}
	base := e.accessLogStatus(t, logPath).Lines

	legitAddr, bruteAddr, walkAddr := e.peerAddr(t, 10), e.peerAddr(t, 11), e.peerAddr(t, 12)
	legit := e.httpFrom(t, legitAddr)

	// 300 requests, one in 25 a 404, the log rotated in the middle
	const legitRequests = 300
	for i := range legitRequests {
		path := "/items/1"
		if i%25 == 7 {
			path = fmt.Sprintf("/items/%d", 1000+i)
		}
		code, err := get(legit, path, "")
		if err != nil || (code != 200 && code != 404) {
			t.Fatalf("legitimate request %d: %d %v", i, code, err)
		}
		if i == legitRequests/2 {
			if err := os.Rename(logPath, logPath+".1"); err != nil {
				t.Fatal(err)
			}
			ngx.reopen(t)
		}
	}
	// a line nginx would never write
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "this is not an access log line")
	f.Close()
	want := base + legitRequests + 1
	var st control.AccessLogStatus
	if !lab.WaitFor(10*time.Second, func() bool { st = e.accessLogStatus(t, logPath); return st.Lines >= want }) {
		t.Fatalf("the daemon read %d lines, want %d (rotation lost lines?): %+v", st.Lines, want, st)
	}
	if st.Lines != want || st.ParseErrors != 1 || st.Rotations < 1 {
		t.Fatalf("access log status %+v: want %d lines, 1 parse error, a rotation", st, want)
	}
	if f := e.flagFor(t, legitAddr.String(), "enumeration"); f != nil {
		t.Fatalf("legitimate client flagged: %+v", f)
	}

	// brute force: the 21st failure is the offence
	brute := e.httpFrom(t, bruteAddr)
	probe := e.udpProbe(t, bruteAddr)
	banDrops := e.dropped("ban")
	offence := e.bruteForce(t, brute, 21)
	upper, lower := e.timeToDrop(t, probe, offence, banDrops)
	t.Logf("offending request to first dropped packet: between %v and %v", lower.Round(10*time.Microsecond), upper.Round(10*time.Microsecond))
	if upper > time.Second {
		t.Errorf("the first packet dropped %v after the offending request; want within 1s", upper)
	}
	fl := e.flagFor(t, bruteAddr.String(), "auth-failures")
	if fl == nil || !fl.Ban.Banned {
		t.Fatalf("brute force not flagged and banned: %+v", fl)
	}
	if code, err := get(brute, "/login", "opensesame"); err == nil {
		t.Fatalf("a banned client was answered %d", code)
	}

	// enumeration: the walk stops when the ban lands
	walk := e.httpFrom(t, walkAddr)
	walked := 0
	for i := 2; i <= 500; i++ {
		code, err := get(walk, fmt.Sprintf("/items/%d", i), "")
		if err != nil {
			break
		}
		if code != 404 {
			t.Fatalf("/items/%d: %d", i, code)
		}
		walked++
	}
	if fl := e.flagFor(t, walkAddr.String(), "enumeration"); fl == nil || !fl.Ban.Banned {
		t.Fatalf("the walk (%d items) was not flagged and banned: %+v", walked, fl)
	}
	if walked < 50 || walked >= 499 {
		t.Fatalf("walked %d items: want the ban to land after the 51st", walked)
	}
	t.Logf("enumeration: banned after %d objects", walked)

	// a report on the control socket, made with curl as docs/control-api.md
	// shows, bans a client the log never saw
	reported := e.peerAddr(t, 13)
	repProbe := e.udpProbe(t, reported)
	banDrops = e.dropped("ban")
	curl := testenv.RequireTool(t, "curl")
	out, err := exec.Command(curl, "-sS", "--fail-with-body", "--unix-socket", e.d.Config.Socket, "-X", "POST", "http://apiguard/v1/report",
		"-H", "Content-Type: application/json", "-d", fmt.Sprintf(`{"client":%q,"reason":"failed-login","weight":21}`, reported)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"counted":true`) {
		t.Fatalf("curl report: %v\n%s", err, out)
	}
	upper, _ = e.timeToDrop(t, repProbe, time.Now(), banDrops)
	t.Logf("report: the first probe sent after curl returned was dropped %v later (the ban is in force when the report is answered)", upper.Round(10*time.Microsecond))
	if fl := e.flagFor(t, reported.String(), "auth-failures"); fl == nil || !fl.Ban.Banned {
		t.Fatalf("reported client not flagged and banned: %+v", fl)
	}

	// and the CLI's report
	if out := e.mustCLI("report", e.peerAddr(t, 14).String(), "throttled", "--weight", "3"); !strings.Contains(out, "counts for app-throttled") {
		t.Fatalf("apiguard report: %s", out)
	}

	// the legitimate client is still served and was never flagged
	if code, err := get(legit, "/items/1", ""); err != nil || code != 200 {
		t.Fatalf("legitimate client after the attacks: %d %v", code, err)
	}
	var flags []control.Flag
	e.jsonCLI(&flags, "clients", "flagged")
	for _, f := range flags {
		if f.Prefix.Addr() == legitAddr {
			t.Fatalf("legitimate client flagged: %+v", f)
		}
	}
	out = []byte(e.mustCLI("status"))
	if !strings.Contains(string(out), logPath) {
		t.Fatalf("status does not list the access log:\n%s", out)
	}
	body := e.scrape(t)
	if v, ok := metric(body, fmt.Sprintf(`apiguard_access_log_parse_errors_total{path=%q}`, logPath)); !ok || v != 1 {
		t.Fatalf("parse errors metric %v %v", v, ok)
	}
	for _, r := range []string{"auth-failures", "enumeration"} {
		if v, ok := metric(body, fmt.Sprintf(`apiguard_clients_flagged_total{reason=%q}`, r)); !ok || v < 1 {
			t.Fatalf("flags metric for %s: %v %v", r, v, ok)
		}
	}
}

// BenchmarkOffendingRequestToDrop measures, per iteration, a fresh client
// brute-forcing /login through nginx: from the answer to its offending
// request to the first of its packets a ban dropped (the upper bound: the
// probe's resolution is one status query, a few ms).
func BenchmarkOffendingRequestToDrop(b *testing.B) {
	testenv.RequireRoot(b)
	e := newEnv(b)
	ngx := e.startNginx(b)
	d := e.startDaemon(e.write("api.yaml", fmt.Sprintf(apiSignalsPolicy, ngx.accessLog())))
	if !lab.WaitFor(10*time.Second, func() bool { return len(e.status().AccessLogs) == 1 }) {
		b.Fatalf("the daemon does not follow the log\n%s", d.logText())
	}
	var total, worst time.Duration
	b.ResetTimer()
	if b.N > 150 {
		b.Fatalf("b.N %d: the lab has 150 client addresses; use -benchtime 10x", b.N)
	}
	for i := range b.N {
		b.StopTimer()
		addr := e.peerAddr(b, byte(100+i))
		c := e.httpFrom(b, addr)
		probe := e.udpProbe(b, addr)
		drops := e.dropped("ban")
		offence := e.bruteForce(b, c, 21)
		b.StartTimer()
		upper, _ := e.timeToDrop(b, probe, offence, drops)
		total += upper
		worst = max(worst, upper)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-drop")
	b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
}
