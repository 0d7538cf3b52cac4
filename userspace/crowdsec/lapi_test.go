package crowdsec

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lapi"
	"github.com/apiguard/apiguard/test/tlsfixture"
)

// waitVerdict pulls until src gets want, within n pulls a poll interval apart.
func waitVerdict(t *testing.T, b *Bouncer, d interface{ verdictOf(string) uint32 }, src string, want uint32, n int, every time.Duration) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := b.Pull(context.Background()); err != nil {
			t.Fatalf("pull: %v", err)
		}
		if d.verdictOf(src) == want {
			return
		}
		time.Sleep(every)
	}
	t.Fatalf("%s: verdict not %d after %d pulls", src, want, n)
}

type verdicts struct {
	t *testing.T
	k dpKernel
}

func (v verdicts) verdictOf(src string) uint32 { return verdict(v.t, v.k.d, src) }

func TestRealLAPI(t *testing.T) {
	d := loadDatapath(t)
	l := lapi.Start(t)
	k := dpKernel{d}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	const every = 200 * time.Millisecond

	// a wrong key: a clear error, nothing in the kernel changes
	bad, err := NewBouncer(BouncerConfig{URL: l.URL, APIKey: "wrong", Logger: quiet}, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Pull(context.Background()); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("wrong key: %v", err)
	}

	b, err := NewBouncer(BouncerConfig{URL: l.URL, APIKey: l.Key, Interval: every, Logger: quiet}, k)
	if err != nil {
		t.Fatal(err)
	}
	v := verdicts{t, k}
	for _, src := range []string{"192.0.2.7", "198.51.100.77", "2001:db8::7", "2001:db8:1:2::9"} {
		if got := verdict(t, d, src); got != xdpPass {
			t.Fatalf("%s before any decision: verdict %d, want pass", src, got)
		}
	}
	if err := b.Pull(context.Background()); err != nil {
		t.Fatalf("first pull (startup, no decisions: null lists): %v", err)
	}

	l.CSCLI(t, "decisions", "add", "--ip", "192.0.2.7", "--duration", "5m", "--reason", "test")
	l.CSCLI(t, "decisions", "add", "--range", "198.51.100.0/24", "--duration", "5m", "--reason", "test")
	l.CSCLI(t, "decisions", "add", "--ip", "2001:db8::7", "--duration", "5m", "--reason", "test")
	l.CSCLI(t, "decisions", "add", "--range", "2001:db8:1::/48", "--duration", "5m", "--reason", "test")
	for _, src := range []string{"192.0.2.7", "198.51.100.77", "2001:db8::7", "2001:db8:1:2::9"} {
		waitVerdict(t, b, v, src, xdpDrop, 2, every)
	}
	bans, _ := d.Bans()
	for _, kb := range bans {
		if left := time.Until(kb.Expires); left < 4*time.Minute || left > 5*time.Minute {
			t.Fatalf("ban %v expires in %v, want the decision's ~5m", kb.Prefix, left)
		}
	}
	if got := verdict(t, d, "192.0.2.8"); got != xdpPass {
		t.Fatalf("a neighbour of a banned address: verdict %d, want pass", got)
	}

	l.CSCLI(t, "decisions", "delete", "--ip", "192.0.2.7")
	l.CSCLI(t, "decisions", "delete", "--range", "2001:db8:1::/48")
	waitVerdict(t, b, v, "192.0.2.7", xdpPass, 2, every)
	waitVerdict(t, b, v, "2001:db8:1:2::9", xdpPass, 2, every)
	if got := verdict(t, d, "198.51.100.77"); got != xdpDrop {
		t.Fatal("deleting one decision lifted another")
	}

	// apiguard's own report: an alert with a decision, seen in the stream
	r, err := NewReporter(ReporterConfig{URL: l.URL, MachineID: l.Machine, Password: l.Password, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	flagged := netip.MustParsePrefix("203.0.113.50/32")
	r.Report(flagged, 10*time.Minute, "flood", "limited for 12s of 1m")
	if err := r.Flush(context.Background()); err != nil {
		t.Fatalf("report: %v", err)
	}
	stream, err := b.c.stream(context.Background(), l.Key, true, nil, []string{OriginApiguard})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, dec := range stream.New {
		if dec.Value == "203.0.113.50" && dec.Origin == OriginApiguard && dec.Scenario == "apiguard/flood" && dec.Type == "ban" {
			found = true
		}
	}
	if !found {
		t.Fatalf("the reported client is not in the LAPI's decisions: %+v", stream.New)
	}
	// this host does not apply its own report a second time; another host does
	own, _ := NewBouncer(BouncerConfig{URL: l.URL, APIKey: l.Key, Own: r.Own, Logger: quiet}, newMemKernel())
	other := newMemKernel()
	peer, _ := NewBouncer(BouncerConfig{URL: l.URL, APIKey: l.Key, Logger: quiet}, other)
	for _, bb := range []*Bouncer{own, peer} {
		if err := bb.Pull(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if own.Origin(flagged) != "" {
		t.Fatal("the reporting host applied its own report")
	}
	if _, ok := other.get("203.0.113.50/32"); !ok || peer.Origin(flagged) != OriginApiguard {
		t.Fatal("another host did not get the reported ban")
	}

	// wrong password: a clear error
	rb, _ := NewReporter(ReporterConfig{URL: l.URL, MachineID: l.Machine, Password: "nope", Logger: quiet})
	rb.Report(flagged, time.Minute, "flood", "")
	if err := rb.Flush(context.Background()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestRealLAPIOutage(t *testing.T) {
	d := loadDatapath(t)
	l := lapi.Start(t)
	k := dpKernel{d}
	b, err := NewBouncer(BouncerConfig{URL: l.URL, APIKey: l.Key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, k)
	if err != nil {
		t.Fatal(err)
	}
	l.CSCLI(t, "decisions", "add", "--ip", "192.0.2.7", "--duration", "5m")
	l.CSCLI(t, "decisions", "add", "--ip", "192.0.2.8", "--duration", "5m")
	if err := b.Pull(context.Background()); err != nil {
		t.Fatal(err)
	}
	// stop the LAPI: bans stay
	l.Stop(t)
	deadline := time.Now().Add(10 * time.Second)
	for b.Pull(context.Background()) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the LAPI did not stop")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := b.Stats(); st.Reachable || st.Outages != 1 {
		t.Fatalf("stats %+v", st)
	}
	for _, src := range []string{"192.0.2.7", "192.0.2.8"} {
		if verdict(t, d, src) != xdpDrop {
			t.Fatalf("%s: the ban went with the LAPI", src)
		}
	}
	// it comes back with its state rebuilt (a new database): 192.0.2.7's
	// decision is gone, which no incremental change will ever say
	l.Rebuild(t)
	l.CSCLI(t, "decisions", "add", "--ip", "192.0.2.8", "--duration", "5m")
	if err := b.Pull(context.Background()); err != nil {
		t.Fatalf("pull after the outage: %v", err)
	}
	if verdict(t, d, "192.0.2.7") != xdpPass || verdict(t, d, "192.0.2.8") != xdpDrop {
		t.Fatal("not reconciled after the outage")
	}
	if st := b.Stats(); !st.Reachable || st.Active != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// `cscli decisions add --range 0.0.0.0/0` and its kind change nothing in the
// kernel and are counted; a range at the minimum prefix is enforced.
func TestRealLAPITooBroad(t *testing.T) {
	d := loadDatapath(t)
	l := lapi.Start(t)
	var logs strings.Builder
	b, err := NewBouncer(BouncerConfig{URL: l.URL, APIKey: l.Key, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, dpKernel{d})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Pull(context.Background()); err != nil {
		t.Fatal(err)
	}
	broad := []string{"0.0.0.0/0", "::/0", "128.0.0.0/1", "::ffff:0.0.0.0/96", "10.0.0.0/15", "2001:db8::/31"}
	for _, r := range broad {
		l.CSCLI(t, "decisions", "add", "--range", r, "--duration", "5m", "--reason", "test")
	}
	l.CSCLI(t, "decisions", "add", "--range", "10.2.0.0/16", "--duration", "5m", "--reason", "test")
	if err := b.Pull(context.Background()); err != nil {
		t.Fatal(err)
	}
	bans, err := d.Bans()
	if err != nil {
		t.Fatal(err)
	}
	if len(bans) != 1 || bans[0].Prefix != netip.MustParsePrefix("10.2.0.0/16") {
		t.Fatalf("kernel bans %+v, want only 10.2.0.0/16", bans)
	}
	for src, want := range map[string]uint32{"192.0.2.1": xdpPass, "198.51.100.1": xdpPass, "10.1.0.1": xdpPass,
		"2001:db8::1": xdpPass, "10.2.3.4": xdpDrop} {
		if got := verdict(t, d, src); got != want {
			t.Errorf("%s: verdict %d, want %d", src, got, want)
		}
	}
	if st := b.Stats(); st.Refused[RefusedTooBroad] != uint64(len(broad)) {
		t.Fatalf("refused %v, want %d too broad", st.Refused, len(broad))
	}
	// a startup pull (after a restart) refuses them again
	b2, _ := NewBouncer(BouncerConfig{URL: l.URL, APIKey: l.Key, Logger: slog.New(slog.DiscardHandler)}, dpKernel{d})
	if err := b2.Pull(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := b2.Stats(); st.Refused[RefusedTooBroad] != uint64(len(broad)) || st.Active != 1 {
		t.Fatalf("startup pull: %+v", st)
	}
	t.Logf("warnings:\n%s", logs.String())
}

// A real LAPI over TLS: the bouncer checks the LAPI's certificate against the
// CA it is given and is known by its client certificate alone (no API key);
// the system's roots refuse the test CA's certificate.
func TestRealLAPITLS(t *testing.T) {
	d := loadDatapath(t)
	pki := tlsfixture.New(t)
	l := lapi.StartTLS(t, lapi.TLSFiles{Cert: pki.ServerCert, Key: pki.ServerKey, ClientCA: pki.CA})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	bouncer := func(tlsCfg *TLS, key string) *Bouncer {
		t.Helper()
		hc, err := NewHTTPClient(tlsCfg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewBouncer(BouncerConfig{URL: l.URL, APIKey: key, CertAuth: key == "", HTTPClient: hc, Logger: quiet}, dpKernel{d})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := bouncer(&TLS{}, l.Key).Pull(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("the system's roots: %v", err)
	}
	l.CSCLI(t, "decisions", "add", "--ip", "192.0.2.7", "--duration", "5m", "--reason", "test")
	// by key over TLS
	if err := bouncer(&TLS{CA: pki.CA}, l.Key).Pull(context.Background()); err != nil {
		t.Fatalf("TLS with the key: %v", err)
	}
	// by certificate only
	certOnly := bouncer(&TLS{CA: pki.CA, Cert: pki.ClientCert, Key: pki.ClientKey}, "")
	if err := certOnly.Pull(context.Background()); err != nil {
		t.Fatalf("TLS with a client certificate: %v", err)
	}
	if verdict(t, d, "192.0.2.7") != xdpDrop || certOnly.Stats().Active != 1 {
		t.Fatalf("the decision pulled over TLS is not enforced: %+v", certOnly.Stats())
	}
	// CrowdSec registered the bouncer from its certificate (CN@address)
	if out := l.CSCLI(t, "bouncers", "list"); !strings.Contains(out, "apiguard@127.0.0.1") {
		t.Fatalf("no bouncer known by its certificate:\n%s", out)
	}
}
