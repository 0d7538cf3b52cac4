package crowdsec

import (
	"testing"

	"github.com/apiguard/apiguard/loader"
)

// TestLongDecisionsAreCapped: a LAPI decision longer than the longest ban
// with an expiry still bans, for loader.MaxBanTTL. Before the cap, the
// longest Go duration overflowed the bouncer's nanosecond expiry.
func TestLongDecisionsAreCapped(t *testing.T) {
	f := newFakeLAPI(t)
	k := newMemKernel()
	f.add("Ip", "192.0.2.7", "2562047h47m16s", "cscli") // the longest Go duration
	f.add("Ip", "192.0.2.8", "1000000h", "cscli")
	f.add("Ip", "192.0.2.9", "87600h", "cscli") // exactly the cap
	b, c := newTestBouncer(t, f, k, nil)
	pull(t, b)
	want(t, k, "192.0.2.7/32", "192.0.2.8/32", "192.0.2.9/32")
	for _, p := range []string{"192.0.2.7/32", "192.0.2.8/32", "192.0.2.9/32"} {
		ban, _ := k.get(p)
		if exp := c.t.Add(loader.MaxBanTTL); !ban.Expires.Equal(exp) {
			t.Errorf("%s expires %v, want %v (now + %v)", p, ban.Expires, exp, loader.MaxBanTTL)
		}
	}
}
