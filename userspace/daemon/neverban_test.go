package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/crowdsec"
	"github.com/apiguard/apiguard/userspace/detect"
)

// scanBase is a kernel time for synthetic events.
const scanBase = uint64(1000 * time.Second)

// A ban on p covers a protected address when the two overlap at all: a wider
// ban covers it, a narrower one inside a protected range is inside it.
func TestNeverBanSetCovers(t *testing.T) {
	set := newNeverBanSet([]neverBanEntry{
		{netip.MustParsePrefix("192.0.2.53/32"), "a resolver"},
		{netip.MustParsePrefix("10.9.0.0/16"), "a trusted proxy"},
		{netip.MustParsePrefix("2001:db8:53::1/128"), "a resolver"},
		{netip.MustParsePrefix("::ffff:198.51.100.1/128"), "the gateway"}, // v4-mapped: IPv4
		{netip.MustParsePrefix("192.0.2.53/32"), "said twice"},
	})
	for _, c := range []struct {
		ban  string
		want string // "" for none
	}{
		{"192.0.2.53/32", "a resolver"},
		{"192.0.2.0/24", "a resolver"},
		{"0.0.0.0/0", "a trusted proxy"}, // the first by address
		{"192.0.2.54/32", ""},
		{"10.9.4.4/32", "a trusted proxy"},
		{"10.0.0.0/8", "a trusted proxy"},
		{"10.10.0.0/16", ""},
		{"198.51.100.1/32", "the gateway"},
		{"::ffff:198.51.100.1/128", "the gateway"},
		{"2001:db8:53::/64", "a resolver"},
		{"::/0", "a resolver"},
		{"2001:db8:54::/48", ""},
		{"::ffff:0.0.0.0/96", "a trusted proxy"},
	} {
		e, ok := set.covering(netip.MustParsePrefix(c.ban))
		if got := map[bool]string{true: e.why}[ok]; got != c.want {
			t.Errorf("ban %s: covers %q, want %q", c.ban, got, c.want)
		}
	}
	if set.len() != 4 {
		t.Errorf("%d entries, want 4 (the duplicate dropped)", set.len())
	}
	var empty *neverBanSet
	if _, ok := empty.covering(netip.MustParsePrefix("0.0.0.0/0")); ok {
		t.Error("the empty set covers something")
	}
}

func TestResolvers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "# a comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver   fe80::1%eth0\nnameserver junk\noptions ndots:2\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	es, err := resolvers(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].prefix != netip.MustParsePrefix("192.0.2.53/32") || es[1].prefix != netip.MustParsePrefix("fe80::1/128") {
		t.Fatalf("resolvers %+v", es)
	}
	if es, err := resolvers(filepath.Join(t.TempDir(), "missing")); err != nil || len(es) != 0 {
		t.Fatalf("a missing resolv.conf: %v %v", es, err)
	}
}

// The daemon gathers the set from the kernel (in a namespace of the test's,
// with an address and a default route), from resolv.conf and from the policy;
// the detector flags a never-banned address saying why, a manual ban needs
// force, CrowdSec decisions covering it are skipped and counted; a new
// policy and a new route change the set.
func TestNeverBanSet(t *testing.T) {
	testenv.RequireRoot(t)
	ns, err := netns.New("agnb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	peer, err := netns.New("agnp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	here, there, err := netns.Veth(ns, peer, 93)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.IP("route", "add", "default", "via", there.Addr4.String()); err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 192.0.2.53\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startBans(t, testPinDir(t), t.TempDir())
	d.cfg.ResolvConf = resolv
	d.mustApply(t, `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: never}
spec:
  neverBan: [203.0.113.0/28]
  accessLogs:
    - {path: /var/log/nginx/access.log, forwarded: true, trustedProxies: [10.77.0.0/16]}
  crowdsec:
    lapi: http://198.51.100.80:8080
    bouncer: {apiKeyEnv: APIGUARD_TEST_NEVER_KEY}
`)
	build := func() {
		t.Helper()
		if err := ns.Do(func() error { d.buildNeverBan(context.Background()); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	build()
	for addr, want := range map[string]string{
		here.Addr4.String():  "the host's own address on " + here.Name,
		here.Addr6.String():  "the host's own address on " + here.Name,
		"127.0.0.1":          "the host's own address on lo",
		there.Addr4.String(): "the host's default gateway",
		"192.0.2.53":         "a resolver in " + resolv,
		"198.51.100.80":      "the CrowdSec LAPI 198.51.100.80:8080",
		"10.77.3.4":          "a trusted proxy of the access log /var/log/nginx/access.log",
		"203.0.113.9":        "spec.neverBan",
		"203.0.113.99":       "",
	} {
		a := netip.MustParseAddr(addr)
		why, ok := d.neverBan(netip.PrefixFrom(a, a.BitLen()))
		if !strings.HasPrefix(why, want) || ok != (want != "") {
			t.Errorf("%s: never banned %v (%q), want %q", addr, ok, why, want)
		}
	}

	// the detector: flagged, not banned, and why
	det, err := detect.New(detect.DefaultConfig(), detect.Options{
		Banner:   detect.BanFunc(d.detectorBan),
		NeverBan: d.neverBan,
		ProofOf:  func(netip.Prefix) (int64, bool) { return int64(scanBase), true },
		Logger:   d.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := 0; p < 30; p++ {
		ev := loader.Event{Ts: scanBase + uint64(p)*uint64(time.Millisecond), Addr: netip.MustParseAddr("::ffff:192.0.2.53").As16(),
			Family: 4, Proto: loader.ProtoTCP, Dport: uint16(1000 + p), TcpFlags: 0x02,
			Type: uint8(loader.GuardAgEventTypeAG_EV_NO_SERVICE), Reason: uint8(loader.GuardAgReasonAG_R_NO_SERVICE)}
		det.Observe(&ev)
	}
	fs := det.Flags()
	if len(fs) != 1 || fs[0].Ban.Banned || fs[0].Ban.Skipped != "never banned: a resolver in "+resolv+" (192.0.2.53/32)" {
		t.Fatalf("flags %+v", fs)
	}
	if det.Totals().NeverBan != 1 {
		t.Errorf("totals %+v", det.Totals())
	}

	// by hand: refused, unless forced
	ctx := context.Background()
	_, err = d.AddBan(ctx, control.NewBan{Prefix: netip.MustParsePrefix("192.0.2.0/24"), TTL: time.Minute})
	if !errors.Is(err, control.ErrRefused) || !strings.Contains(err.Error(), "never banned: a resolver") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("a manual ban on a resolver's /24: %v", err)
	}
	if _, err := d.AddBan(ctx, control.NewBan{Prefix: netip.MustParsePrefix("192.0.2.0/24"), TTL: time.Minute, Force: true}); err != nil {
		t.Fatalf("a forced ban: %v", err)
	}
	if _, err := d.AddBan(ctx, control.NewBan{Prefix: netip.MustParsePrefix("192.0.3.1/32"), TTL: time.Minute}); err != nil {
		t.Fatalf("an ordinary ban: %v", err)
	}

	// an import: the resolver's /24 and the host's own address are refused,
	// each with why; the rest is banned and recorded
	imp, err := d.ImportBans(ctx, []control.NewBan{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), TTL: time.Minute},
		{Prefix: netip.MustParsePrefix("203.0.113.50/32"), TTL: time.Minute, Reason: "list"},
		{Prefix: netip.PrefixFrom(here.Addr4, 32), DefaultTTL: true},
		{Prefix: netip.MustParsePrefix("203.0.113.64/26"), Reason: "list"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if imp.Added != 2 || len(imp.Refused) != 2 || imp.Refused[0].Index != 0 || imp.Refused[1].Index != 2 ||
		!strings.Contains(imp.Refused[1].Error, "the host's own address") {
		t.Fatalf("import: %+v", imp)
	}
	if b, ok := banByPrefix(t, d, "203.0.113.50/32"); !ok || b.Source != SourceManual || b.Reason != "list" {
		t.Errorf("imported ban: %+v %v", b, ok)
	}
	// a flush of the manual bans lifts them all, the forced one included
	fl, err := d.FlushBans(ctx, control.FlushManual)
	if err != nil || fl.Removed != 4 {
		t.Fatalf("flush: %+v %v", fl, err)
	}
	if _, ok := banByPrefix(t, d, "203.0.113.64/26"); ok {
		t.Error("a flushed ban is still listed")
	}

	// CrowdSec: decisions covering the set are skipped and counted
	hour := time.Now().Add(time.Hour)
	err = d.ApplyCrowdSec([]crowdsec.Ban{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Expires: hour},
		{Prefix: netip.MustParsePrefix("198.51.100.80/32"), Expires: hour},
		{Prefix: netip.MustParsePrefix("10.77.0.0/24"), Expires: hour},
		{Prefix: netip.MustParsePrefix("198.18.0.7/32"), Expires: hour},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inKernel, err := d.CrowdSecBans()
	if err != nil {
		t.Fatal(err)
	}
	if len(inKernel) != 1 || inKernel[0] != netip.MustParsePrefix("198.18.0.7/32") || d.NeverBanCrowdSec() != 3 {
		t.Fatalf("CrowdSec bans in the kernel %v, skipped %d", inKernel, d.NeverBanCrowdSec())
	}

	// a new route and a new policy: the set follows
	if err := ns.IP("route", "replace", "default", "via", fmt.Sprint(there.Addr4.Next())); err != nil {
		t.Fatal(err)
	}
	d.mustApply(t, "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: plain}\nspec: {}\n")
	build()
	for addr, want := range map[string]bool{
		fmt.Sprint(there.Addr4.Next()): true, there.Addr4.String(): false, "203.0.113.9": false, "10.77.3.4": false,
		"198.51.100.80": false, "192.0.2.53": true,
	} {
		a := netip.MustParseAddr(addr)
		if _, ok := d.neverBan(netip.PrefixFrom(a, a.BitLen())); ok != want {
			t.Errorf("after the change, %s never banned: %v, want %v", addr, ok, want)
		}
	}
}
