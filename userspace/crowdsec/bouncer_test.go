package crowdsec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestBouncer(t *testing.T, f *fakeLAPI, k Kernel, mod func(*BouncerConfig)) (*Bouncer, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	cfg := BouncerConfig{URL: f.srv.URL, APIKey: "good-key", Now: c.now, Batch: 2,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&cfg)
	}
	b, err := NewBouncer(cfg, k)
	if err != nil {
		t.Fatal(err)
	}
	return b, c
}

func pull(t *testing.T, b *Bouncer) {
	t.Helper()
	if err := b.Pull(context.Background()); err != nil {
		t.Fatalf("pull: %v", err)
	}
}

func want(t *testing.T, k *memKernel, prefixes ...string) {
	t.Helper()
	slices.Sort(prefixes)
	if got := k.prefixes(); !slices.Equal(got, prefixes) {
		t.Fatalf("kernel bans %v, want %v", got, prefixes)
	}
}

func TestStreamStartupThenIncremental(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	id1 := f.add("Ip", "192.0.2.7", "4m56.35s", "cscli")
	f.add("Range", "198.51.100.0/24", "1h", "crowdsec")
	f.add("Ip", "2001:db8::1", "10m", "CAPI")
	f.add("Range", "2001:db8:1::/48", "10m", "lists")
	f.add("Ip", "::ffff:203.0.113.9", "10m", "cscli") // v4-mapped: banned as the IPv4 address
	b, c := newTestBouncer(t, f, k, nil)
	pull(t, b)
	want(t, k, "192.0.2.7/32", "198.51.100.0/24", "2001:db8::1/128", "2001:db8:1::/48", "203.0.113.9/32")
	ban, _ := k.get("192.0.2.7/32")
	if wantExp := c.t.Add(4*time.Minute + 56350*time.Millisecond); !ban.Expires.Equal(wantExp) || ban.Origin != "cscli" {
		t.Fatalf("ban %+v: want expiry %v and origin cscli", ban, wantExp)
	}
	if !strings.Contains(f.pulls[0], "startup=true") || !strings.Contains(f.pulls[0], "scopes=Ip%2CRange") {
		t.Fatalf("first pull %q: want startup=true and both scopes", f.pulls[0])
	}

	// nothing changed: both lists null
	pull(t, b)
	if !strings.Contains(f.pulls[1], "startup=false") {
		t.Fatalf("second pull %q is not incremental", f.pulls[1])
	}
	want(t, k, "192.0.2.7/32", "198.51.100.0/24", "2001:db8::1/128", "2001:db8:1::/48", "203.0.113.9/32")

	f.del(id1)
	f.add("Ip", "192.0.2.8", "1m", "cscli")
	pull(t, b)
	want(t, k, "192.0.2.8/32", "198.51.100.0/24", "2001:db8::1/128", "2001:db8:1::/48", "203.0.113.9/32")
	st := b.Stats()
	if !st.Reachable || st.Active != 5 || st.Decisions != 5 || st.Removed != 1 {
		t.Fatalf("stats %+v", st)
	}
	if b.Origin(netip.MustParsePrefix("2001:db8:1::/48")) != "lists" {
		t.Fatal("origin of the range is lost")
	}
}

func TestTwoDecisionsOnePrefix(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	a := f.add("Ip", "192.0.2.7", "10m", "cscli")
	bID := f.add("Ip", "192.0.2.7", "1h", "crowdsec")
	b, c := newTestBouncer(t, f, k, nil)
	pull(t, b)
	ban, _ := k.get("192.0.2.7/32")
	if !ban.Expires.Equal(c.t.Add(time.Hour)) {
		t.Fatalf("expiry %v: want the longer decision's", ban.Expires)
	}
	f.del(bID)
	pull(t, b)
	want(t, k, "192.0.2.7/32") // the other decision still holds it
	f.del(a)
	pull(t, b)
	want(t, k)
}

func TestIgnoredDecisions(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	f.add("Ip", "not-an-ip", "1m", "cscli")
	f.add("Range", "192.0.2.0/33", "1m", "cscli")
	f.add("Country", "FR", "1m", "cscli")
	f.add("Ip", "192.0.2.1", "forever", "cscli")
	f.add("Ip", "192.0.2.2", "-5s", "cscli") // already expired
	f.add("Ip", "192.0.2.3", "1m", "apiguard")
	f.add("Ip", "192.0.2.4", "1m", "apiguard") // another host's report: enforced
	f.mu.Lock()
	f.nextID++
	f.live[f.nextID] = Decision{ID: f.nextID, Origin: "cscli", Scope: "Ip", Type: "captcha", Value: "192.0.2.5", Duration: "1m"}
	f.mu.Unlock()
	own := netip.MustParsePrefix("192.0.2.3/32")
	b, _ := newTestBouncer(t, f, k, func(c *BouncerConfig) { c.Own = func(p netip.Prefix) bool { return p == own } })
	pull(t, b)
	want(t, k, "192.0.2.4/32")
	st := b.Stats()
	if st.Ignored != 7 {
		t.Fatalf("ignored %d, want 7", st.Ignored)
	}
	// expired and own are not refusals: they are not the LAPI's mistake
	wantRefused := map[string]uint64{RefusedValue: 2, RefusedScope: 1, RefusedDuration: 1, RefusedType: 1}
	if !maps.Equal(st.Refused, wantRefused) {
		t.Fatalf("refused %v, want %v", st.Refused, wantRefused)
	}
}

func TestExpiryForgetsDecisions(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	f.add("Ip", "192.0.2.7", "30s", "cscli")
	f.add("Ip", "192.0.2.8", "1h", "cscli")
	b, c := newTestBouncer(t, f, k, nil)
	pull(t, b)
	c.t = c.t.Add(time.Minute)
	pull(t, b)
	// the kernel lets the expired ban lapse on its own; the bouncer forgets it
	if st := b.Stats(); st.Active != 1 || st.Decisions != 1 {
		t.Fatalf("stats %+v: want only the live decision tracked", st)
	}
}

func TestOutageKeepsBansAndReconciles(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	a := f.add("Ip", "192.0.2.7", "1h", "cscli")
	f.add("Ip", "192.0.2.8", "1h", "cscli")
	var logs strings.Builder
	b, _ := newTestBouncer(t, f, k, func(c *BouncerConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	pull(t, b)
	f.setDown(true)
	for range 3 {
		if err := b.Pull(context.Background()); err == nil {
			t.Fatal("pull from a down LAPI succeeded")
		}
	}
	want(t, k, "192.0.2.7/32", "192.0.2.8/32") // never flushed
	st := b.Stats()
	if st.Reachable || st.PullErrors != 3 || st.Outages != 1 || st.LastError == "" {
		t.Fatalf("stats during the outage %+v", st)
	}
	if n := strings.Count(logs.String(), "pull failed"); n != 1 {
		t.Fatalf("the outage was logged %d times, want once:\n%s", n, logs.String())
	}
	// meanwhile one decision goes and another comes; the incremental feed of
	// this bouncer is lost (the LAPI restarted with its database)
	f.mu.Lock()
	delete(f.live, a)
	f.pendNew, f.pendDel = nil, nil
	f.mu.Unlock()
	f.add("Range", "2001:db8::/32", "1h", "cscli")
	f.mu.Lock()
	f.pendNew = nil
	f.mu.Unlock()
	k.local[netip.MustParsePrefix("203.0.113.1/32")] = true // a manual ban: not the bouncer's
	f.setDown(false)
	pull(t, b)
	if !strings.Contains(f.pulls[len(f.pulls)-1], "startup=true") {
		t.Fatal("the pull after an outage is not a startup pull")
	}
	want(t, k, "192.0.2.8/32", "2001:db8::/32")
	if st := b.Stats(); !st.Reachable || st.LastError != "" || !strings.Contains(logs.String(), "reachable again") {
		t.Fatalf("stats after recovery %+v", st)
	}
}

func TestStartupRemovesStaleKernelBans(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	// an earlier run left these in the pinned maps
	k.bans[netip.MustParsePrefix("192.0.2.99/32")] = Ban{Prefix: netip.MustParsePrefix("192.0.2.99/32")}
	k.bans[netip.MustParsePrefix("192.0.2.7/32")] = Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32")}
	f.add("Ip", "192.0.2.7", "1h", "cscli")
	b, _ := newTestBouncer(t, f, k, nil)
	pull(t, b)
	want(t, k, "192.0.2.7/32")
}

func TestBadAnswers(t *testing.T) {
	for _, body := range []string{"not json", `{"new":[{"id":"x"}]}`, `[1,2]`} {
		f := newFakeLAPI(t)
		k := newMemKernel()
		f.add("Ip", "192.0.2.7", "1h", "cscli")
		b, _ := newTestBouncer(t, f, k, nil)
		pull(t, b)
		f.mu.Lock()
		f.raw = body
		f.mu.Unlock()
		err := b.Pull(context.Background())
		if err == nil || !strings.Contains(err.Error(), "not the expected JSON") {
			t.Fatalf("answer %q: error %v", body, err)
		}
		want(t, k, "192.0.2.7/32")
		// the next pull starts over, since changes may have been lost
		pull(t, b)
		if !strings.Contains(f.pulls[len(f.pulls)-1], "startup=true") {
			t.Fatalf("answer %q: the next pull is not a startup pull", body)
		}
	}
}

func TestWrongKey(t *testing.T) {
	f := newFakeLAPI(t)
	b, _ := newTestBouncer(t, f, newMemKernel(), func(c *BouncerConfig) { c.APIKey = "wrong" })
	err := b.Pull(context.Background())
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusForbidden || !strings.Contains(err.Error(), "access forbidden") ||
		!strings.Contains(err.Error(), "API key") {
		t.Fatalf("error %v: want a 403 naming the API key", err)
	}
	if st := b.Stats(); st.Reachable || st.PullErrors != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestKernelFailureRestartsFromStartup(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	b, _ := newTestBouncer(t, f, k, nil)
	pull(t, b)
	f.add("Ip", "192.0.2.7", "1h", "cscli")
	k.fail = errors.New("map full")
	if err := b.Pull(context.Background()); err == nil {
		t.Fatal("a kernel failure was not reported")
	}
	k.fail = nil
	pull(t, b) // the LAPI has no pending change for us: only a startup pull recovers it
	want(t, k, "192.0.2.7/32")
}

func TestBatches(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	for i := range 5 {
		f.add("Ip", netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}).String(), "1h", "cscli")
	}
	b, _ := newTestBouncer(t, f, k, nil) // Batch: 2
	pull(t, b)
	if k.calls != 3 || len(k.prefixes()) != 5 {
		t.Fatalf("%d kernel calls for 5 bans in batches of 2, %d bans", k.calls, len(k.prefixes()))
	}
}

func TestNewBouncerErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  BouncerConfig
		want string
	}{
		{BouncerConfig{URL: "http://x"}, "no API key"},
		{BouncerConfig{URL: "ftp://x", APIKey: "k"}, "want http"},
		{BouncerConfig{URL: "http://", APIKey: "k"}, "want http"},
	} {
		if _, err := NewBouncer(tc.cfg, newMemKernel()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// Status and metrics read the bouncer while a pull waits on a slow LAPI.
func TestStatsDuringSlowPull(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		fmt.Fprint(w, `{"new":null,"deleted":null}`)
	}))
	t.Cleanup(srv.Close)
	b, err := NewBouncer(BouncerConfig{URL: srv.URL, APIKey: "k", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, newMemKernel())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Pull(context.Background()) }()
	<-entered
	if st := b.Stats(); st.Pulls != 1 || st.Reachable {
		t.Fatalf("stats during the pull %+v", st)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !b.Stats().Reachable {
		t.Fatal("not reachable after the pull")
	}
}
