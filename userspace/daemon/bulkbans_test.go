package daemon

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

// TestImportRefusesBroadRanges: a ban list comes from elsewhere, as a
// CrowdSec decision does, and is held to the bouncer's minimum prefix: a
// range broader than /16 (IPv4) or /32 (IPv6) that covers none of the
// never-ban set (none here: the set is empty) is refused with why unless
// forced, and an expiry past the longest ban is refused, not capped.
func TestImportRefusesBroadRanges(t *testing.T) {
	testenv.RequireRoot(t)
	d := startBans(t, testPinDir(t), t.TempDir())
	imp, err := d.ImportBans(context.Background(), []control.NewBan{
		{Prefix: netip.MustParsePrefix("128.0.0.0/1"), TTL: time.Hour},                  // half the IPv4 Internet
		{Prefix: netip.MustParsePrefix("8000::/1"), TTL: time.Hour},                     // half of IPv6
		{Prefix: netip.MustParsePrefix("198.18.0.0/15"), TTL: time.Hour},                // one bit too broad
		{Prefix: netip.MustParsePrefix("198.51.0.0/16"), TTL: time.Hour},                // at the minimum: banned
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), TTL: time.Hour},                // at the minimum: banned
		{Prefix: netip.MustParsePrefix("100.64.0.0/10"), TTL: time.Hour, Force: true},   // forced: banned
		{Prefix: netip.MustParsePrefix("192.0.2.9/32"), TTL: 11 * 365 * 24 * time.Hour}, // past ten years
	})
	if err != nil {
		t.Fatal(err)
	}
	refused := map[int]string{}
	for _, r := range imp.Refused {
		refused[r.Index] = r.Error
	}
	for i, want := range map[int]string{0: "broader than /16", 1: "broader than /32", 2: "broader than /16", 6: "longest ban"} {
		if !strings.Contains(refused[i], want) {
			t.Errorf("ban %d: refused with %q, want %q", i, refused[i], want)
		}
	}
	if imp.Added != 3 || len(imp.Refused) != 4 {
		t.Errorf("import: %+v, want 3 added and 4 refused", imp)
	}
	for p, want := range map[string]bool{"128.0.0.0/1": false, "8000::/1": false, "198.18.0.0/15": false,
		"198.51.0.0/16": true, "2001:db8::/32": true, "100.64.0.0/10": true, "192.0.2.9/32": false} {
		if _, ok := banByPrefix(t, d, p); ok != want {
			t.Errorf("%s banned: %v, want %v", p, ok, want)
		}
	}
}
