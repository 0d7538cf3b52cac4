package crowdsec

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/apiguard/apiguard/test/tlsfixture"
)

// A decision broader than the minimum prefix is refused, counted and logged,
// whichever way it is written (a v4-mapped IPv6 range bans IPv4 addresses and
// is judged as IPv4); one at the minimum is enforced. Both pull kinds.
func TestTooBroadDecisionsRefused(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	for _, r := range []string{"0.0.0.0/0", "::/0", "128.0.0.0/1", "::ffff:0.0.0.0/96", "::ffff:10.0.0.0/104",
		"10.0.0.0/15", "2001:db8::/31"} {
		f.add("Range", r, "1h", "cscli")
	}
	f.add("Range", "10.2.0.0/16", "1h", "cscli")
	f.add("Range", "::ffff:10.3.0.0/112", "1h", "cscli") // a v4-mapped /16
	f.add("Range", "2001:db8::/32", "1h", "cscli")
	var logs bytes.Buffer
	b, _ := newTestBouncer(t, f, k, func(c *BouncerConfig) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	pull(t, b)
	want(t, k, "10.2.0.0/16", "10.3.0.0/16", "2001:db8::/32")
	if st := b.Stats(); !maps.Equal(st.Refused, map[string]uint64{RefusedTooBroad: 7}) || st.Ignored != 7 {
		t.Fatalf("stats %+v: want 7 refused as too broad", st)
	}
	// the first few are warnings naming the range, the rest a summary line
	if n := strings.Count(logs.String(), "level=WARN msg=\"CrowdSec decision refused"); n != loudRefusals {
		t.Fatalf("%d warnings for 7 refusals, want %d:\n%s", n, loudRefusals, logs.String())
	}
	// which ranges come first is the LAPI's order, not the bouncer's
	if !regexp.MustCompile(`(0\.0\.0\.0/0|::/0|128\.0\.0\.0/1|0\.0\.0\.0/0|10\.0\.0\.0/8|10\.0\.0\.0/15|2001:db8::/31) is broader than the minimum prefix /(16|32)`).MatchString(logs.String()) ||
		!strings.Contains(logs.String(), "counted, not logged") {
		t.Fatalf("log:\n%s", logs.String())
	}

	// an incremental pull refuses the same way; its deletion is harmless
	id := f.add("Range", "0.0.0.0/0", "1h", "cscli")
	pull(t, b)
	f.del(id)
	pull(t, b)
	want(t, k, "10.2.0.0/16", "10.3.0.0/16", "2001:db8::/32")
	if st := b.Stats(); st.Refused[RefusedTooBroad] != 8 {
		t.Fatalf("refused %v after an incremental /0", st.Refused)
	}
}

func TestMinPrefixConfigurable(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	f.add("Range", "10.0.0.0/8", "1h", "cscli")
	f.add("Range", "10.0.0.0/24", "1h", "cscli")
	f.add("Range", "2001:db8::/48", "1h", "cscli")
	f.add("Range", "2001:db8:1::/64", "1h", "cscli")
	f.add("Ip", "2001:db8:2::1", "1h", "cscli") // an address is never too broad
	b, _ := newTestBouncer(t, f, k, func(c *BouncerConfig) { c.MinPrefix4, c.MinPrefix6 = 24, 64 })
	pull(t, b)
	want(t, k, "10.0.0.0/24", "2001:db8:1::/64", "2001:db8:2::1/128")
	if st := b.Stats(); st.Refused[RefusedTooBroad] != 2 {
		t.Fatalf("refused %v", st.Refused)
	}
	for _, bad := range []BouncerConfig{{MinPrefix4: 33}, {MinPrefix6: 129}, {MinPrefix4: -1}} {
		bad.URL, bad.APIKey = f.srv.URL, "k"
		if _, err := NewBouncer(bad, k); err == nil || !strings.Contains(err.Error(), "minimum prefixes") {
			t.Errorf("%+v: error %v", bad, err)
		}
	}
}

// recorder is a server that must never be reached: it keeps what it got.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
	body []string
	srv  *httptest.Server
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		data, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, req)
		r.body = append(r.body, string(data))
		r.mu.Unlock()
		w.Write([]byte(`{"new":null,"deleted":null}`))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) got() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.reqs) }

// A LAPI (or whatever answers at its address) that redirects gets no second
// request: neither the bouncer's API key nor the machine's password follows a
// redirect to another host, and the error says why.
func TestRedirectsNotFollowed(t *testing.T) {
	elsewhere := newRecorder(t)
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.srv.URL+r.URL.RequestURI(), code)
		}))
		t.Cleanup(redir.Close)
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		b, err := NewBouncer(BouncerConfig{URL: redir.URL, APIKey: "secret-key", Logger: quiet}, newMemKernel())
		if err != nil {
			t.Fatal(err)
		}
		err = b.Pull(context.Background())
		var he *HTTPError
		if !errors.As(err, &he) || he.Status != code || !strings.Contains(err.Error(), "follows no redirect") ||
			!strings.Contains(err.Error(), elsewhere.srv.URL) {
			t.Fatalf("%d: error %v", code, err)
		}
		r, err := NewReporter(ReporterConfig{URL: redir.URL, MachineID: "m", Password: "secret-password", Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.c.login(context.Background(), "m", "secret-password", nil); !errors.As(err, &he) || he.Status != code {
			t.Fatalf("%d: login error %v", code, err)
		}
		// a client the caller built keeps its own redirect policy; the
		// bouncer's copy refuses redirects all the same
		caller := &http.Client{}
		b2, _ := NewBouncer(BouncerConfig{URL: redir.URL, APIKey: "secret-key", HTTPClient: caller, Logger: quiet}, newMemKernel())
		if err := b2.Pull(context.Background()); !errors.As(err, &he) || he.Status != code || caller.CheckRedirect != nil {
			t.Fatalf("%d with the caller's client: error %v", code, err)
		}
	}
	if n := elsewhere.got(); n != 0 {
		t.Fatalf("the redirect target got %d requests (first: %v %v)", n, elsewhere.reqs[0].Header, elsewhere.body[0])
	}
}

// The client goes to the LAPI directly: HTTP_PROXY would hand a plain-HTTP
// LAPI's API key to the proxy.
func TestNoProxyFromEnvironment(t *testing.T) {
	hc, err := NewHTTPClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	if tr := hc.Transport.(*http.Transport); tr.Proxy != nil {
		t.Fatal("the transport takes a proxy from the environment")
	}
}

func TestIsLoopback(t *testing.T) {
	for u, want := range map[string]bool{
		"http://127.0.0.1:8080": true, "http://localhost:8080/": true, "http://LOCALHOST": true, "http://[::1]:8080": true,
		"http://127.8.9.10": true, "http://10.0.0.1:8080": false, "http://lapi.internal:8080": false,
		"http://localhost.example.com": false, "http://[::ffff:127.0.0.1]:80": true, "http://0.0.0.0:8080": false,
	} {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		if got := IsLoopback(pu); got != want {
			t.Errorf("%s: loopback %v, want %v", u, got, want)
		}
	}
}

// An HTTPS LAPI that wants a client certificate: the bouncer trusts only the
// CA it is given and authenticates with its certificate, with or without a key.
func TestTLS(t *testing.T) {
	p := tlsfixture.New(t)
	f := newFakeLAPI(t) // its handler, behind a TLS server of our own
	var mu sync.Mutex
	var sawKey []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sawKey = append(sawKey, r.Header.Get("X-Api-Key"))
		mu.Unlock()
		if len(r.TLS.PeerCertificates) == 1 && r.TLS.PeerCertificates[0].Subject.OrganizationalUnit[0] == "bouncer-ou" &&
			r.Header.Get("X-Api-Key") == "" {
			r.Header.Set("X-Api-Key", f.key) // what CrowdSec does: the certificate stands for the key
		}
		f.serve(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.Server}, ClientCAs: p.Pool, ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.add("Ip", "192.0.2.7", "1h", "cscli")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	bouncer := func(tlsCfg *TLS, key string) (*Bouncer, *memKernel) {
		t.Helper()
		hc, err := NewHTTPClient(tlsCfg)
		if err != nil {
			t.Fatal(err)
		}
		k := newMemKernel()
		b, err := NewBouncer(BouncerConfig{URL: srv.URL, APIKey: key, CertAuth: key == "", HTTPClient: hc, Logger: quiet}, k)
		if err != nil {
			t.Fatal(err)
		}
		return b, k
	}

	// the system's roots do not know the test CA
	b, _ := bouncer(&TLS{}, "good-key")
	if err := b.Pull(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("unknown CA: error %v", err)
	}
	// another CA's certificate is refused too
	other := tlsfixture.New(t)
	b, _ = bouncer(&TLS{CA: other.CA}, "good-key")
	if err := b.Pull(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("wrong CA: error %v", err)
	}
	// the right CA and the key
	b, k := bouncer(&TLS{CA: p.CA}, "good-key")
	pull(t, b)
	want(t, k, "192.0.2.7/32")
	// the right CA and a client certificate, no key: none is sent
	b, k = bouncer(&TLS{CA: p.CA, Cert: p.ClientCert, Key: p.ClientKey}, "")
	pull(t, b)
	want(t, k, "192.0.2.7/32")
	mu.Lock()
	last := sawKey[len(sawKey)-1]
	mu.Unlock()
	if last != "" {
		t.Fatalf("X-Api-Key %q sent with certificate authentication", last)
	}

	for _, bad := range []struct {
		tls  TLS
		want string
	}{
		{TLS{CA: []byte("not pem")}, "no PEM certificate"},
		{TLS{Cert: p.ClientCert}, "needs its key"},
		{TLS{Key: p.ClientKey}, "needs its key"},
		{TLS{Cert: p.ClientCert, Key: other.ClientKey}, "client certificate and key"},
	} {
		if _, err := NewHTTPClient(&bad.tls); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("error %v, want %q", err, bad.want)
		}
	}
	if _, err := NewBouncer(BouncerConfig{URL: srv.URL}, newMemKernel()); err == nil || !strings.Contains(err.Error(), "no API key") {
		t.Fatalf("neither key nor certificate: %v", err)
	}
}

// A hostile LAPI's answer costs a bounded amount of memory: decoded, every
// decision costs a hundred bytes or so however short it is in the answer
// (`{}` is three bytes, so a 256 MiB answer of them took some 9 GB), so an
// answer of more than maxDecisions is refused whole; and a decision's texts
// are cut to maxField, so that a megabyte of origin is not kept in the
// origin table for the bouncer's life, nor a megabyte of value decoded and
// kept until refused.
func TestHostileAnswerBounded(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	f.add("Ip", "192.0.2.7", "1h", "cscli")
	f.add("Ip", "192.0.2.8", "1h", strings.Repeat("o", 1<<20))
	f.add("Ip", "192.0.2.9"+strings.Repeat(" ", 1<<20), "1h", "cscli")
	b, _ := newTestBouncer(t, f, k, nil)
	pull(t, b)
	want(t, k, "192.0.2.7/32", "192.0.2.8/32")
	if o := b.Origin(netip.MustParsePrefix("192.0.2.8/32")); len(o) > maxField+len("…") || !strings.HasPrefix(o, "ooo") {
		t.Fatalf("kept an origin of %d bytes", len(o))
	}
	if st := b.Stats(); st.Refused[RefusedValue] != 1 {
		t.Fatalf("refused %v: want the megabyte value refused", st.Refused)
	}

	var many strings.Builder
	many.WriteString(`{"new":[{}`)
	for range maxDecisions {
		many.WriteString(`,{}`)
	}
	many.WriteString(`],"deleted":null}`)
	f.mu.Lock()
	f.raw = many.String()
	f.mu.Unlock()
	f.add("Ip", "192.0.2.10", "1h", "cscli")
	err := b.Pull(context.Background())
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("more than %d decisions in one answer", maxDecisions)) {
		t.Fatalf("an answer of %d decisions: error %v", maxDecisions+1, err)
	}
	want(t, k, "192.0.2.7/32", "192.0.2.8/32")
	// and the next pull starts over, and takes what it missed
	pull(t, b)
	want(t, k, "192.0.2.7/32", "192.0.2.8/32", "192.0.2.10/32")
}
