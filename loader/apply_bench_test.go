package loader

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func bigDenyPolicy(n int) *Policy {
	rng := rand.New(rand.NewPCG(5, 6))
	p := basePolicy()
	seen := map[netip.Prefix]bool{}
	for len(p.Deny) < n {
		a := [4]byte{byte(100 + rng.IntN(100)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
		pf := netip.PrefixFrom(netip.AddrFrom4(a), 32)
		if !seen[pf] {
			seen[pf] = true
			p.Deny = append(p.Deny, pf)
		}
	}
	return p
}

// Applying 100k deny prefixes: in full, unchanged, and with one line changed.
func BenchmarkApply100kDeny(b *testing.B) {
	d := newDatapath(b, Options{})
	big := bigDenyPolicy(100_000)
	changed := bigDenyPolicy(100_000)
	changed.Deny[0] = netip.MustParsePrefix("198.18.0.1/32")
	b.Run("full", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			mustApply(b, d, basePolicy())
			d.waitMirror()
			b.StartTimer()
			mustApply(b, d, big)
			b.StopTimer()
			d.waitMirror()
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		mustApply(b, d, big)
		d.waitMirror()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if r, err := d.Apply(big); err != nil || r.Changed {
				b.Fatalf("%+v %v", r, err)
			}
		}
	})
	b.Run("one_line", func(b *testing.B) {
		mustApply(b, d, big)
		d.waitMirror()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			p := big
			if i%2 == 0 {
				p = changed
			}
			d.waitMirror()
			b.StartTimer()
			r, err := d.Apply(p)
			b.StopTimer()
			if err != nil || r.PrefixWrites != 2 {
				b.Fatalf("%+v %v", r, err)
			}
		}
	})
}
