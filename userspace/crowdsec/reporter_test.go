package crowdsec

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func newTestReporter(t *testing.T, f *fakeLAPI, mod func(*ReporterConfig)) (*Reporter, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	cfg := ReporterConfig{URL: f.srv.URL, MachineID: "host-a", Password: "pw", Now: c.now, Batch: 2, Queue: 4,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&cfg)
	}
	r, err := NewReporter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, c
}

func TestReportAlertShape(t *testing.T) {
	f := newFakeLAPI(t)
	r, c := newTestReporter(t, f, nil)
	r.Report(netip.MustParsePrefix("192.0.2.7/32"), 10*time.Minute, "flood", "limited for 12s")
	r.Report(netip.MustParsePrefix("2001:db8::/64"), 10*time.Minute, "scan", "")
	r.Report(netip.MustParsePrefix("192.0.2.7/32"), 10*time.Minute, "flood", "again") // same ban: once
	c.t = c.t.Add(time.Minute)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.alerts) != 1 || len(f.alerts[0]) != 2 {
		t.Fatalf("alerts %+v: want one request with two", f.alerts)
	}
	a, b := f.alerts[0][0], f.alerts[0][1]
	d := a.Decisions[0]
	if a.Scenario != "apiguard/flood" || a.Source.Scope != "Ip" || a.Source.Value != "192.0.2.7" ||
		d.Origin != "apiguard" || d.Type != "ban" || d.Duration != "9m0s" || d.Value != "192.0.2.7" || a.Message != "limited for 12s" {
		t.Fatalf("alert %+v", a)
	}
	if b.Source.Scope != "Range" || b.Source.Value != "2001:db8::/64" || b.Decisions[0].Scope != "Range" || b.Message == "" {
		t.Fatalf("alert %+v", b)
	}
	if a.StartAt == "" || a.Leakspeed == "" || len(a.Events) != 1 || a.EventsCount != 1 {
		t.Fatalf("alert lacks required fields: %+v", a)
	}
	if !r.Own(netip.MustParsePrefix("192.0.2.7/32")) || r.Own(netip.MustParsePrefix("192.0.2.8/32")) {
		t.Fatal("Own does not match what was reported")
	}
	if st := r.Stats(); st.Sent != 2 || st.Logins != 1 || st.Queued != 0 {
		t.Fatalf("stats %+v", st)
	}
	// once the decision has run out, a new ban is reported again
	c.t = c.t.Add(10 * time.Minute)
	r.Report(netip.MustParsePrefix("192.0.2.7/32"), 10*time.Minute, "flood", "back")
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.alerts) != 2 {
		t.Fatalf("%d requests, want 2", len(f.alerts))
	}
}

func TestReportBanDurationOverride(t *testing.T) {
	f := newFakeLAPI(t)
	r, _ := newTestReporter(t, f, func(c *ReporterConfig) { c.BanDuration = 4 * time.Hour })
	r.Report(netip.MustParsePrefix("192.0.2.7/32"), time.Minute, "flood", "")
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := f.alerts[0][0].Decisions[0].Duration; d != "4h0m0s" {
		t.Fatalf("duration %s, want 4h0m0s", d)
	}
}

func TestReportRelogin(t *testing.T) {
	f := newFakeLAPI(t)
	r, c := newTestReporter(t, f, nil)
	f.expire = c.t.Add(time.Hour)
	r.Report(netip.MustParsePrefix("192.0.2.1/32"), time.Hour, "flood", "")
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// a revoked token: one 401, a new login, the same batch again
	f.mu.Lock()
	f.rejectTok = true
	f.mu.Unlock()
	r.Report(netip.MustParsePrefix("192.0.2.2/32"), time.Hour, "flood", "")
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// close to the token's expiry: renewed before use
	c.t = c.t.Add(58 * time.Minute)
	f.mu.Lock()
	f.tokens = map[string]bool{"tok-2": true} // only the newest is accepted anyway
	f.mu.Unlock()
	r.Report(netip.MustParsePrefix("192.0.2.3/32"), time.Hour, "flood", "")
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Logins != 3 || st.Sent != 3 {
		t.Fatalf("stats %+v: want 3 logins (start, 401, near expiry) and 3 sent", st)
	}
}

func TestReportWrongPassword(t *testing.T) {
	f := newFakeLAPI(t)
	r, _ := newTestReporter(t, f, func(c *ReporterConfig) { c.Password = "bad" })
	r.Report(netip.MustParsePrefix("192.0.2.1/32"), time.Hour, "flood", "")
	err := r.Flush(context.Background())
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), "machine id and password") {
		t.Fatalf("error %v: want a 401 naming the credentials", err)
	}
	if st := r.Stats(); st.Queued != 1 || st.Errors != 1 {
		t.Fatalf("stats %+v: the report must stay queued", st)
	}
}

func TestReportQueueBoundedWhileDown(t *testing.T) {
	f := newFakeLAPI(t)
	f.setDown(true)
	r, c := newTestReporter(t, f, nil) // Queue: 4
	for i := range 6 {
		r.Report(netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32), time.Hour, "flood", "")
	}
	if err := r.Flush(context.Background()); err == nil {
		t.Fatal("flush to a down LAPI succeeded")
	}
	if st := r.Stats(); st.Queued != 4 || st.Dropped != 2 {
		t.Fatalf("stats %+v: want 4 queued, 2 dropped", st)
	}
	f.setDown(false)
	c.t = c.t.Add(time.Minute)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, req := range f.alerts {
		for _, a := range req {
			got = append(got, a.Source.Value)
		}
	}
	if strings.Join(got, ",") != "192.0.2.2,192.0.2.3,192.0.2.4,192.0.2.5" {
		t.Fatalf("sent %v: want the 4 newest, oldest first", got)
	}
	// reports whose ban ran out while the LAPI was down are dropped, not sent
	f.setDown(true)
	r.Report(netip.MustParsePrefix("198.51.100.1/32"), time.Minute, "flood", "")
	_ = r.Flush(context.Background())
	f.setDown(false)
	c.t = c.t.Add(2 * time.Minute)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Queued != 0 || st.Sent != 4 || st.Dropped != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRunBacksOffAndStops(t *testing.T) {
	f := newFakeLAPI(t)
	r, _ := newTestReporter(t, f, func(c *ReporterConfig) {
		c.Now = nil
		c.FlushEvery = time.Millisecond
		c.MaxBackoff = 4 * time.Millisecond
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	r.Report(netip.MustParsePrefix("192.0.2.1/32"), time.Hour, "flood", "")
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().Sent == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
	if r.Stats().Sent != 1 {
		t.Fatal("Run never sent the report")
	}
}
