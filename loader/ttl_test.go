package loader

import (
	"errors"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
)

// TestWallToMonoSaturates: a time too far ahead for the kernel's 64-bit
// nanosecond clock becomes its last instant, never a wrapped value in the
// past (issue 14: 2562047h47m16s stored expiry 1, a void ban).
func TestWallToMonoSaturates(t *testing.T) {
	for _, d := range []time.Duration{math.MaxInt64, 2562047*time.Hour + 47*time.Minute + 16*time.Second, 200 * 365 * 24 * time.Hour} {
		if m := wallToMono(time.Now().Add(d)); m < uint64(math.MaxInt64)/2 {
			t.Errorf("%v ahead: kernel stamp %d, in the past or near it", d, m)
		}
	}
	if m := wallToMono(time.Now().Add(-time.Hour)); m != 1 && m > monoNow() {
		t.Errorf("an hour ago: kernel stamp %d, not in the past", m)
	}
}

// TestBanExpiryIsBoundedAndHolds: a ban up to MaxBanTTL is stored with the
// expiry asked for and drops its source; one past it is refused and leaves
// nothing in the kernel.
func TestBanExpiryIsBoundedAndHolds(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	for _, tc := range []struct {
		src string
		ttl time.Duration
		ok  bool
	}{
		{"203.0.113.21", MaxBanTTL, true},
		{"2001:db8:bad:21::1", MaxBanTTL, true},
		{"203.0.113.22", MaxBanTTL + time.Hour, false},
		{"203.0.113.23", 2562047*time.Hour + 47*time.Minute + 16*time.Second, false},
		{"2001:db8:bad:23::1", math.MaxInt64, false},
	} {
		a := addr(tc.src)
		p := netip.PrefixFrom(a, a.BitLen())
		exp := time.Now().Add(tc.ttl)
		err := d.Ban(Ban{Prefix: p, Expires: exp})
		if !tc.ok {
			if !errors.Is(err, ErrBanTooLong) {
				t.Errorf("%v for %v: %v, want ErrBanTooLong", p, tc.ttl, err)
			}
			if _, err := d.LookupBan(p); !errors.Is(err, ErrNotBanned) {
				t.Errorf("%v: a refused ban is in the kernel (%v)", p, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v for %v: %v", p, tc.ttl, err)
		}
		kb, err := d.LookupBan(p)
		if err != nil {
			t.Fatal(err)
		}
		// the kernel holds what was asked, to the conversion's precision
		if diff := kb.Expires.Sub(exp).Abs(); diff > time.Second {
			t.Errorf("%v: the kernel holds expiry %v, asked %v (%v apart)", p, kb.Expires, exp, diff)
		}
		spec := tcp(tc.src, 80, packet.SYN)
		before := counterMap(t, d)
		if v := runXDP(t, d, packet.Build(spec)); v != xdpDrop {
			t.Errorf("%v banned for %v: verdict %d, want drop", p, tc.ttl, v)
		}
		if act, reason, _ := counterDelta(t, before, counterMap(t, d)); act != ActionDrop || reason != Reason(GuardAgReasonAG_R_BAN) {
			t.Errorf("%v: counted %v/%v, want drop/ban", p, act, reason)
		}
	}
}
