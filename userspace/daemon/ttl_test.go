package daemon

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

// TestBanTTLIsBoundedAndReportedAsTheKernelHoldsIt: `ban add --ttl
// 2562047h47m16s` once stored a void ban (expiry 1) while the API answered
// 2319. A ttl over loader.MaxBanTTL is refused and nothing reaches the
// kernel; up to it, the answer and `ban ls` say what the kernel holds.
func TestBanTTLIsBoundedAndReportedAsTheKernelHoldsIt(t *testing.T) {
	testenv.RequireRoot(t)
	d := startBans(t, testPinDir(t), t.TempDir())
	long := netip.MustParsePrefix("192.0.2.60/32")
	for _, ttl := range []time.Duration{2562047*time.Hour + 47*time.Minute + 16*time.Second, loader.MaxBanTTL + time.Second} {
		_, err := d.Ban(long, ttl, "too long", SourceManual)
		if !errors.Is(err, control.ErrInvalid) {
			t.Errorf("ttl %v: %v, want ErrInvalid", ttl, err)
		}
		if _, err := d.dp.LookupBan(long); !errors.Is(err, loader.ErrNotBanned) {
			t.Errorf("ttl %v: the refused ban is in the kernel (%v)", ttl, err)
		}
	}

	p := netip.MustParsePrefix("192.0.2.61/32")
	asked := time.Now().Add(loader.MaxBanTTL)
	b, err := d.Ban(p, loader.MaxBanTTL, "ten years", SourceManual)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := d.dp.LookupBan(p)
	if err != nil {
		t.Fatal(err)
	}
	// each conversion of the kernel's clock to wall time reads both clocks
	// anew: equal to well under a millisecond
	same := func(a *time.Time) bool { return a != nil && a.Sub(kb.Expires).Abs() < time.Millisecond }
	if !same(b.Expires) {
		t.Errorf("the answer says %v, the kernel holds %v", b.Expires, kb.Expires)
	}
	if diff := kb.Expires.Sub(asked).Abs(); diff > time.Second {
		t.Errorf("the kernel holds %v for a ban asked until %v", kb.Expires, asked)
	}
	listed, ok := banByPrefix(t, d, p.String())
	if !ok || !same(listed.Expires) {
		t.Errorf("ban ls: %+v, want expiry %v", listed, kb.Expires)
	}
}

// TestRestoreSkipsBansPastTheLongest: a ban record whose expiry is past
// loader.MaxBanTTL (a hand-edited state file) is dropped at start with a
// warning; the rest are restored.
func TestRestoreSkipsBansPastTheLongest(t *testing.T) {
	testenv.RequireRoot(t)
	pinDir, stateDir := testPinDir(t), t.TempDir()
	far, near := netip.MustParsePrefix("192.0.2.70/32"), netip.MustParsePrefix("192.0.2.71/32")
	if err := writeJSONFile(filepath.Join(stateDir, banStateFile), banFile{Bans: []banRecord{
		{Prefix: far, Reason: "edited", Source: SourceManual, Expires: time.Now().Add(200 * 365 * 24 * time.Hour)},
		{Prefix: near, Reason: "fine", Source: SourceManual, Expires: time.Now().Add(time.Hour)},
	}}); err != nil {
		t.Fatal(err)
	}
	d := startBans(t, pinDir, stateDir)
	if _, err := d.dp.LookupBan(far); !errors.Is(err, loader.ErrNotBanned) {
		t.Errorf("the far record reached the kernel: %v", err)
	}
	if _, err := d.dp.LookupBan(near); err != nil {
		t.Errorf("the good record was not restored: %v", err)
	}
}
