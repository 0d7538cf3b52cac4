package daemon

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/test/tlsfixture"
	"github.com/apiguard/apiguard/userspace/crowdsec"
	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/cilium/ebpf"
)

// miniLAPI serves a fixed decision set on startup pulls, nothing on the
// others, and records the alerts it gets.
type miniLAPI struct {
	mu       sync.Mutex
	key      string
	body     []byte // the startup answer
	startups int
	alerts   []map[string]any
	srv      *httptest.Server
}

func newMiniLAPI(t testing.TB, decisions []crowdsec.Decision) *miniLAPI {
	body, err := json.Marshal(map[string]any{"new": decisions, "deleted": nil})
	if err != nil {
		t.Fatal(err)
	}
	m := &miniLAPI{key: "the-key", body: body}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		defer m.mu.Unlock()
		switch r.URL.Path {
		case "/v1/decisions/stream":
			if r.Header.Get("X-Api-Key") != m.key {
				w.WriteHeader(http.StatusForbidden)
				fmt.Fprint(w, `{"message":"access forbidden"}`)
				return
			}
			if r.URL.Query().Get("startup") == "true" {
				m.startups++
				w.Write(m.body)
				return
			}
			fmt.Fprint(w, `{"new":null,"deleted":null}`)
		case "/v1/watchers/login":
			fmt.Fprintf(w, `{"code":200,"expire":%q,"token":"jwt"}`, time.Now().Add(time.Hour).Format(time.RFC3339))
		case "/v1/alerts":
			var as []map[string]any
			json.NewDecoder(r.Body).Decode(&as)
			m.alerts = append(m.alerts, as...)
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `["1"]`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func xdpVerdict(t *testing.T, d *Daemon, src string) uint32 {
	t.Helper()
	a := netip.MustParseAddr(src)
	dst := netip.MustParseAddr("192.0.2.1")
	if a.Is6() {
		dst = netip.MustParseAddr("2001:db8:ffff::1")
	}
	ret, err := d.dp.XDP().Run(&ebpf.RunOptions{Data: packet.Build(packet.Spec{Src: a, Dst: dst, Proto: packet.TCP,
		SrcPort: 40000, DstPort: 443, TCPFlags: packet.SYN})})
	if err != nil {
		t.Fatal(err)
	}
	return ret
}

func crowdSecPolicy(url, pwFile, extra string) string {
	return fmt.Sprintf(`apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: cs}
spec:
  allow: [192.0.2.200/32]
  crowdsec:
    lapi: %s
    bouncer: {apiKeyEnv: APIGUARD_TEST_CS_KEY, pollInterval: 1s}
    report: {machineIDEnv: APIGUARD_TEST_CS_ID, passwordFile: %s, banDuration: 2h}
%s`, url, pwFile, extra)
}

// The daemon follows its policy's crowdsec section: decisions become bans of
// source crowdsec:<origin> the XDP program drops; a manual ban and the allow
// list win; detector bans are reported; wrong credentials show in status and
// stop nothing; a policy without the section stops the link.
func TestCrowdSecLink(t *testing.T) {
	testenv.RequireRoot(t)
	lapi := newMiniLAPI(t, []crowdsec.Decision{
		{ID: 1, Origin: "cscli", Scope: "Ip", Type: "ban", Value: "203.0.113.7", Duration: "1h"},
		{ID: 2, Origin: "CAPI", Scope: "Range", Type: "ban", Value: "2001:db8:7::/48", Duration: "1h"},
		{ID: 3, Origin: "cscli", Scope: "Ip", Type: "ban", Value: "198.51.100.1", Duration: "1h"}, // banned by hand already
		{ID: 4, Origin: "cscli", Scope: "Ip", Type: "ban", Value: "192.0.2.200", Duration: "1h"},  // allow-listed
		{ID: 5, Origin: "cscli", Scope: "Range", Type: "ban", Value: "0.0.0.0/0", Duration: "1h"}, // too broad
		{ID: 6, Origin: "cscli", Scope: "Range", Type: "ban", Value: "::ffff:0.0.0.0/96", Duration: "1h"},
	})
	t.Setenv("APIGUARD_TEST_CS_KEY", "the-key")
	t.Setenv("APIGUARD_TEST_CS_ID", "host-a")
	d := startBans(t, testPinDir(t), t.TempDir())
	// the policy's relative file names resolve against its directory
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw.txt"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pol := crowdSecPolicy(lapi.srv.URL, "pw.txt", "")
	pwFile := filepath.Join(dir, "pw.txt")
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cfg.PolicyPath = filepath.Join(dir, "p.yaml")
	p, err := d.readPolicyFile()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Ban(netip.MustParsePrefix("198.51.100.1/32"), time.Hour, "by hand", SourceManual); err != nil {
		t.Fatal(err)
	}
	if _, err := d.apply(p, "test"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.runCrowdSec(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	waitFor(t, "the decisions in the kernel", func() bool {
		b, ok := banByPrefix(t, d, "203.0.113.7/32")
		return ok && b.Source == "crowdsec:cscli"
	})
	if b, ok := banByPrefix(t, d, "2001:db8:7::/48"); !ok || b.Source != "crowdsec:CAPI" {
		t.Fatalf("range ban %+v %v", b, ok)
	}
	if xdpVerdict(t, d, "203.0.113.7") != 1 || xdpVerdict(t, d, "2001:db8:7::99") != 1 {
		t.Fatal("a CrowdSec ban does not drop")
	}
	if b, _ := banByPrefix(t, d, "198.51.100.1/32"); b.Source != SourceManual || b.Reason != "by hand" {
		t.Fatalf("the manual ban was overwritten: %+v", b)
	}
	if _, ok := banByPrefix(t, d, "192.0.2.200/32"); ok {
		t.Fatal("an allow-listed address was banned")
	}
	st, err := d.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.CrowdSec == nil || st.CrowdSec.Bouncer == nil || !st.CrowdSec.Bouncer.Reachable || st.CrowdSec.Bouncer.Decisions != 4 ||
		st.CrowdSec.Bouncer.Refused[crowdsec.RefusedTooBroad] != 2 || st.CrowdSec.Insecure {
		t.Fatalf("status %+v", st.CrowdSec)
	}
	// the whole address space stays reachable
	for _, src := range []string{"192.0.2.9", "10.1.2.3", "8.8.8.8"} {
		if xdpVerdict(t, d, src) != 2 {
			t.Fatalf("%s is dropped after a /0 decision", src)
		}
	}
	if bans, _ := d.dp.Bans(); len(bans) != 3 {
		t.Fatalf("kernel bans %+v: want the manual ban and two decisions", bans)
	}

	// a detector ban goes to the LAPI with the policy's duration
	if err := d.detectorBan(netip.MustParsePrefix("198.51.100.50/32"), 10*time.Minute, detect.Flood, "limited for 12s"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the report", func() bool {
		lapi.mu.Lock()
		defer lapi.mu.Unlock()
		return len(lapi.alerts) == 1
	})
	lapi.mu.Lock()
	a := lapi.alerts[0]
	lapi.mu.Unlock()
	dec := a["decisions"].([]any)[0].(map[string]any)
	dur, _ := time.ParseDuration(fmt.Sprint(dec["duration"]))
	if a["scenario"] != "apiguard/flood" || dec["value"] != "198.51.100.50" || dur < 119*time.Minute || dur > 2*time.Hour || dec["origin"] != "apiguard" {
		t.Fatalf("alert %v", a)
	}

	// a wrong key: shown in status, nothing else stops, the bans stay
	t.Setenv("APIGUARD_TEST_CS_KEY", "wrong")
	d.mustApply(t, crowdSecPolicy(lapi.srv.URL, pwFile, "  mode: enforce\n")) // a changed policy restarts the link
	waitFor(t, "the 403 in status", func() bool {
		st, _ := d.Status(context.Background())
		return st.CrowdSec != nil && st.CrowdSec.Bouncer != nil && st.CrowdSec.Bouncer.PullErrors > 0 &&
			strings.Contains(st.CrowdSec.Bouncer.LastError, "403")
	})
	if xdpVerdict(t, d, "203.0.113.7") != 1 {
		t.Fatal("the bans went with the bad key")
	}

	// an unreadable credential: a clear error in status
	t.Setenv("APIGUARD_TEST_CS_ID", "")
	d.mustApply(t, crowdSecPolicy(lapi.srv.URL, pwFile, "  mode: monitor\n"))
	waitFor(t, "the credential error in status", func() bool {
		st, _ := d.Status(context.Background())
		return st.CrowdSec != nil && strings.Contains(st.CrowdSec.Error, "APIGUARD_TEST_CS_ID is not set")
	})

	// no section: the link stops
	d.mustApply(t, "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: plain}\nspec: {}\n")
	waitFor(t, "the link to stop", func() bool {
		st, _ := d.Status(context.Background())
		return st.CrowdSec == nil
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // generous: a real LAPI on a loaded 2-core machine
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The policy's tls files reach the HTTP client: an HTTPS LAPI that wants a
// client certificate is pulled with the CA and the certificate the policy
// names (relative to its directory), no API key needed. Plain HTTP to an
// address that is not this host is flagged in status.
func TestCrowdSecTLSFiles(t *testing.T) {
	testenv.RequireRoot(t)
	pki := tlsfixture.New(t)
	var sawKey atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawKey.Store(r.Header.Get("X-Api-Key"))
		if len(r.TLS.PeerCertificates) == 0 {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"message":"access forbidden"}`)
			return
		}
		fmt.Fprint(w, `{"new":[{"id":1,"origin":"cscli","scope":"Ip","type":"ban","value":"203.0.113.8","duration":"1h"}],"deleted":null}`)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.Server}, ClientCAs: pki.Pool, ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	for name, data := range map[string][]byte{"ca.pem": pki.CA, "bouncer.pem": pki.ClientCert, "bouncer.key": pki.ClientKey} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d := startBans(t, testPinDir(t), t.TempDir())
	pol := fmt.Sprintf(`apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: cs-tls}
spec:
  crowdsec:
    lapi: %s
    tls: {caFile: ca.pem, certFile: bouncer.pem, keyFile: bouncer.key}
    bouncer: {pollInterval: 1s}
`, srv.URL)
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cfg.PolicyPath = filepath.Join(dir, "p.yaml")
	p, err := d.readPolicyFile()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.apply(p, "test"); err != nil {
		t.Fatal(err)
	}
	runLink(t, d)
	waitFor(t, "the decision pulled over TLS", func() bool { return xdpVerdict(t, d, "203.0.113.8") == 1 })
	if k := sawKey.Load(); k != "" {
		t.Fatalf("X-Api-Key %q sent with a client certificate", k)
	}

	// plain HTTP to an address that is not this host (nothing listens there)
	t.Setenv("APIGUARD_TEST_CS_KEY", "k")
	d.mustApply(t, "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: far}\nspec:\n  crowdsec:\n    lapi: http://192.0.2.1:1\n    bouncer: {apiKeyEnv: APIGUARD_TEST_CS_KEY}\n")
	waitFor(t, "the plain-HTTP warning in status", func() bool {
		st, _ := d.Status(context.Background())
		return st.CrowdSec != nil && st.CrowdSec.Insecure
	})
}
