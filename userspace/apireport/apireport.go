// Package apireport lets a Go API tell apiguard about its clients: failed
// logins, authorization failures, its own throttling. apiguard counts them per
// client like the access log's lines and bans an offender at the NIC within a
// second.
//
// One line in a handler:
//
//	rep := apireport.New(apireport.DefaultSocket)
//	defer rep.Close()
//	...
//	if !passwordOK {
//		rep.FailedLogin(r) // the client is r.RemoteAddr
//		http.Error(w, "wrong credentials", http.StatusUnauthorized)
//	}
//
// Where the application's own validation rejects a payload (the class may be
// left empty: the daemon finds it in the request's path and query):
//
//	if !validID(id) {
//		rep.InjectionAttempt(r, apireport.SQLInjection)
//	}
//
// Or every 401, 403, 404 and 429 the API answers, through middleware:
//
//	http.ListenAndServe(addr, rep.Middleware(mux))
//
// Reports are sent in the background and never block or fail the request: if
// apiguard is down or slow, they are dropped and counted (Dropped). The
// control socket is root-only, so the API must run as root or be given the
// socket another way (apiguard refuses every other user).
//
// Who the client is. A report bans an address at the NIC, on every port, so
// it must never name a proxy: behind a load balancer the request's peer is the
// balancer, and banning it cuts off every client. Set ClientIP for the way the
// API is reached:
//
//   - behind proxies: ClientIP = ForwardedIP(their addresses...): the first
//     X-Forwarded-For address, from the right, that is not one of them;
//   - reached directly: ClientIP = PeerIP, so that no client can hide behind a
//     header it wrote itself;
//   - the default, RemoteIP: the peer, except that a request carrying a header
//     a proxy sets (X-Forwarded-For, Forwarded, X-Real-IP, ...) is reported
//     against nobody (Unattributed counts it): it probably came through a
//     proxy this Reporter was not told about.
package apireport

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/apiguard/apiguard/userspace/clientip"
)

// DefaultSocket is the apiguard daemon's control socket.
const DefaultSocket = "/run/apiguard/apiguard.sock"

// Reasons a report can give (the daemon also takes its rule names).
const (
	FailedLogin  = "failed-login"  // counts for auth-failures
	AuthzFailure = "authz-failure" // counts for enumeration (give the path)
	Throttled    = "throttled"     // counts for app-throttled
	ServerError  = "server-error"  // counts for error-burst
	Injection    = "injection"     // counts for injection-probe (give the path and query)
)

// Classes of injection a report may name (Report.Class).
const (
	SQLInjection      = "sql"
	XSS               = "xss"
	CommandInjection  = "command"
	PathTraversal     = "traversal"
	TemplateInjection = "template"
)

// Report is one report.
type Report struct {
	Client string `json:"client"`
	Reason string `json:"reason"`
	Weight uint32 `json:"weight,omitempty"`
	Path   string `json:"path,omitempty"`
	Class  string `json:"class,omitempty"`
}

// maxReportPath is the daemon's bound on a report's path (control.MaxReportPath).
const maxReportPath = 2048

// Reporter sends reports to the daemon. It is safe for concurrent use.
type Reporter struct {
	// ClientIP finds the client of a request, false when it cannot be told
	// (RemoteIP by default; see the package comment).
	ClientIP func(*http.Request) (netip.Addr, bool)

	socket       string
	http         *http.Client
	queue        chan Report
	done         chan struct{}
	once         sync.Once
	sent         atomic.Uint64
	dropped      atomic.Uint64
	failed       atomic.Uint64
	unattributed atomic.Uint64
}

// queueLen bounds the reports waiting to be sent.
const queueLen = 4096

// New returns a Reporter for the daemon at socket and starts its sender.
func New(socket string) *Reporter {
	r := &Reporter{
		ClientIP: RemoteIP,
		socket:   socket,
		queue:    make(chan Report, queueLen),
		done:     make(chan struct{}),
	}
	r.http = &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			MaxIdleConns: 2, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute,
		},
	}
	go r.send()
	return r
}

// PeerIP is the address of the request's peer, whatever its headers say:
// for an API that clients reach directly.
func PeerIP(req *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// proxyHeaders are the headers a proxy adds to name the client; a request
// that carries one probably came through a proxy.
var proxyHeaders = []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "X-Client-Ip"}

// RemoteIP is the request's peer, unless the request carries a header a
// proxy sets: then it is probably the proxy, and nobody is named (false).
// A client of an API reached directly can avoid its reports this way: such an
// API should use PeerIP, an API behind proxies ForwardedIP.
func RemoteIP(req *http.Request) (netip.Addr, bool) {
	for _, h := range proxyHeaders {
		if _, ok := req.Header[h]; ok {
			return netip.Addr{}, false
		}
	}
	return PeerIP(req)
}

// ForwardedIP finds the client behind the given proxies (addresses or
// ranges): the X-Forwarded-For header is read only when the peer is one of
// them, from its right end, skipping the proxies; the first other address is
// the client. A proxy is never named: a request whose chain holds only proxies
// (a health check, a proxy's own request) names nobody, and neither does one
// whose chain has a hop that does not parse. This is what the daemon does for
// the access log's trustedProxies (userspace/clientip); list the proxies'
// own addresses, not their network: any host in a trusted range that reaches
// the API directly can write the header and name any address.
func ForwardedIP(proxies ...netip.Prefix) func(*http.Request) (netip.Addr, bool) {
	trusted := make(clientip.Trusted, 0, len(proxies))
	for _, p := range proxies {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		trusted = append(trusted, p.Masked())
	}
	return func(req *http.Request) (netip.Addr, bool) {
		peer, ok := PeerIP(req)
		if !ok {
			return netip.Addr{}, false
		}
		// several header lines are one list, in order
		xff := strings.Join(req.Header.Values("X-Forwarded-For"), ",")
		a, res := trusted.Client(peer, []byte(xff))
		return a, res == clientip.Attributed
	}
}

// Send queues a report; it never blocks. It reports false when the report
// was dropped (the queue is full or the Reporter closed).
func (r *Reporter) Send(rep Report) bool {
	select {
	case <-r.done:
		r.dropped.Add(1)
		return false
	default:
	}
	select {
	case r.queue <- rep:
		return true
	default:
		r.dropped.Add(1)
		return false
	}
}

// FailedLogin reports a failed login by req's client.
func (r *Reporter) FailedLogin(req *http.Request) bool {
	return r.about(req, FailedLogin, "")
}

// AuthzFailure reports that req's client was refused the object at req's
// path (403, or a 404 hiding one).
func (r *Reporter) AuthzFailure(req *http.Request) bool {
	return r.about(req, AuthzFailure, reportTarget(req.URL.Path))
}

// InjectionAttempt reports that req carried an injection payload the
// application's own validation caught (class: SQLInjection, XSS, ...; ""
// lets the daemon find it in the request's path and query, which the
// report carries, cut to the daemon's bound).
func (r *Reporter) InjectionAttempt(req *http.Request, class string) bool {
	return r.aboutClass(req, Injection, reportTarget(req.URL.RequestURI()), class)
}

// reportTarget is a request target (or path) as a report carries it: at most
// maxReportPath bytes, cut between characters, with every byte that is not
// UTF-8 percent-escaped. Go's server keeps such bytes in a query, JSON would
// write each as U+FFFD (three bytes once read), and a client padding its
// payload with them made the report too long for the daemon, which refused
// it; escaped, the daemon's matcher decodes them back to what was sent.
func reportTarget(target string) string {
	var b strings.Builder
	for i := 0; i < len(target); {
		r, n := utf8.DecodeRuneInString(target[i:])
		piece := target[i : i+n]
		if r == utf8.RuneError && n == 1 {
			piece = fmt.Sprintf("%%%02X", target[i])
		}
		if b.Len()+len(piece) > maxReportPath {
			break
		}
		b.WriteString(piece)
		i += n
	}
	return b.String()
}

func (r *Reporter) about(req *http.Request, reason, path string) bool {
	return r.aboutClass(req, reason, path, "")
}

func (r *Reporter) aboutClass(req *http.Request, reason, path, class string) bool {
	a, ok := r.ClientIP(req)
	if !ok {
		r.unattributed.Add(1)
		return false
	}
	return r.Send(Report{Client: a.String(), Reason: reason, Path: path, Class: class})
}

// Middleware reports the answers next gives: 401 as a failed login, 403 and
// 404 as authorization failures (with the path), 429 as throttling. 5xx are
// left to the access log: they are often the server's fault.
func (r *Reporter) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, req)
		switch sw.code {
		case http.StatusUnauthorized:
			r.about(req, FailedLogin, "")
		case http.StatusForbidden, http.StatusNotFound:
			r.about(req, AuthzFailure, reportTarget(req.URL.Path))
		case http.StatusTooManyRequests:
			r.about(req, Throttled, "")
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Stats are the reports sent, dropped (queue full, closed) and failed (the
// daemon refused or was unreachable).
func (r *Reporter) Stats() (sent, dropped, failed uint64) {
	return r.sent.Load(), r.dropped.Load(), r.failed.Load()
}

// Unattributed counts the requests not reported because ClientIP could not
// name their client (a proxy's own request, a header from an unknown proxy).
func (r *Reporter) Unattributed() uint64 { return r.unattributed.Load() }

// Close stops the sender after the reports queued so far are sent (at most
// a few seconds).
func (r *Reporter) Close() {
	r.once.Do(func() { close(r.done) })
}

func (r *Reporter) send() {
	for {
		select {
		case rep := <-r.queue:
			r.post(rep)
		case <-r.done:
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				select {
				case rep := <-r.queue:
					r.post(rep)
				default:
					r.http.CloseIdleConnections()
					return
				}
			}
			r.http.CloseIdleConnections()
			return
		}
	}
}

func (r *Reporter) post(rep Report) {
	if err := r.Post(context.Background(), rep); err != nil {
		r.failed.Add(1)
		return
	}
	r.sent.Add(1)
}

// Post sends one report now and waits for the daemon's answer.
func (r *Reporter) Post(ctx context.Context, rep Report) error {
	body, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://apiguard/v1/report", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build report: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.http.Do(req)
	if err != nil {
		return fmt.Errorf("report to apiguard at %s: %w", r.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		return fmt.Errorf("apiguard refused the report (%s): %s", resp.Status, eb.Error)
	}
	return nil
}
