package control

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/apiguard/apiguard/userspace/attack"
	"github.com/apiguard/apiguard/userspace/detect"
)

// reportBackend is a Backend that takes reports.
type reportBackend struct {
	fakeBackend
	mu  sync.Mutex
	got []detect.Signal
}

func (b *reportBackend) Report(_ context.Context, s detect.Signal) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, s)
	return s.Report != detect.ErrorBurst, nil // as if error-burst were disabled
}

func TestReportRoundTrip(t *testing.T) {
	b := &reportBackend{}
	c := NewClient(serve(t, b, nil))
	defer c.Close()
	res, err := c.Report(context.Background(), Report{Client: "::ffff:198.51.100.7", Reason: "failed-login", Weight: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Client != "198.51.100.7" || res.Reason != detect.AuthFailures || !res.Counted {
		t.Fatalf("result %+v", res)
	}
	res, err = c.Report(context.Background(), Report{Client: "2001:db8::1", Reason: "server-error"})
	if err != nil || res.Counted {
		t.Fatalf("result %+v, %v", res, err)
	}
	// an injection the application's validation caught, with its class
	res, err = c.Report(context.Background(), Report{Client: "192.0.2.7", Reason: "injection", Path: "/items?id=1%27", Class: "sqli"})
	if err != nil || res.Reason != detect.InjectionProbe || !res.Counted {
		t.Fatalf("result %+v, %v", res, err)
	}
	want := []detect.Signal{
		{Client: netip.MustParseAddr("198.51.100.7"), Report: detect.AuthFailures, Weight: 3},
		{Client: netip.MustParseAddr("2001:db8::1"), Report: detect.ErrorBurst},
		{Client: netip.MustParseAddr("192.0.2.7"), Report: detect.InjectionProbe, Path: "/items?id=1%27", Class: attack.SQL},
	}
	if len(b.got) != 3 || b.got[0] != want[0] || b.got[1] != want[1] || b.got[2] != want[2] {
		t.Fatalf("backend got %+v", b.got)
	}
}

func TestReportRefusals(t *testing.T) {
	b := &reportBackend{}
	path := serve(t, b, nil)
	c := NewClient(path)
	defer c.Close()
	for _, c2 := range []struct {
		r    Report
		want string
	}{
		{Report{Client: "nobody", Reason: "failed-login"}, `client "nobody" is not an IP address`},
		{Report{Client: "fe80::1%eth0", Reason: "failed-login"}, "has a zone"},
		{Report{Client: "192.0.2.1", Reason: "bored"}, `unknown report reason "bored"`},
		{Report{Client: "192.0.2.1", Reason: "enumeration", Weight: 5000}, "weight 5000 is above 1000"},
		{Report{Client: "192.0.2.1", Reason: "enumeration", Path: "items/1"}, `path "items/1" does not start with /`},
		{Report{Client: "192.0.2.1", Reason: "injection", Path: "x\x1b[2J"}, `path "x\\x1b[2J" does not start with /`},
		{Report{Client: "192.0.2.1", Reason: "injection", Class: "ldap"}, `unknown injection class "ldap"`},
		{Report{Client: "192.0.2.1", Reason: "failed-login", Class: "sql"}, `class "sql" is for injection reports`},
	} {
		_, err := c.Report(context.Background(), c2.r)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, c2.want) {
			t.Errorf("%+v: %v, want 400 with %q", c2.r, err, c2.want)
		}
	}
	if code, eb := rawDo(t, path, http.MethodPost, PathReport, strings.NewReader(`{"client":"192.0.2.1","reason":"failed-login","colour":1}`)); code != http.StatusBadRequest || !strings.Contains(eb.Error, "colour") {
		t.Errorf("unknown field: %d %q", code, eb.Error)
	}
	if len(b.got) != 0 {
		t.Fatalf("refused reports reached the backend: %+v", b.got)
	}
	// a backend without a detector
	plain := NewClient(serve(t, &fakeBackend{}, nil))
	defer plain.Close()
	var ae *APIError
	if _, err := plain.Report(context.Background(), Report{Client: "192.0.2.1", Reason: "failed-login"}); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("no detector: %v", err)
	}
}
