package loader

import (
	"testing"

	"github.com/apiguard/apiguard/test/packet"
)

// What fragments cost the datapath (bpf/include/frag.h), against the same
// baseline as BenchmarkDatapath. The service is benchPolicy's "api" (udp 9000,
// limits no client reaches).
func BenchmarkFragments(b *testing.B) {
	api := udp("10.0.0.1", 9000, 0)
	cases := []struct {
		name        string
		cycle       uint32 // distinct sources drawn per packet; 0 = one
		defaultDrop bool
		prime       packet.Spec // run once before: a first fragment the frame follows
		spec        packet.Spec
	}{
		// one source: its first fragment judged and entered in the table each time
		{name: "first_fragment", spec: first(api, 1, 8)},
		// one source: a later fragment that follows its first to the service
		{name: "later_fragment", prime: first(api, 1, 8), spec: later(api, 1, 100, 1514)},
		// 64k sources, no first fragment: under defaultAction drop, one lookup
		{name: "orphans_drop_64k", cycle: 1 << 16, defaultDrop: true, spec: later(api, 2, 100, 1514)},
		// under pass each orphan waits for its first fragment in the table
		{name: "orphans_pass_64k", cycle: 1 << 16, spec: later(api, 2, 100, 1514)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			d := newDatapath(b, Options{})
			p := benchPolicy()
			p.DefaultDrop = c.defaultDrop
			mustApply(b, d, p)
			if c.prime.Src.IsValid() {
				runXDP(b, d, packet.Build(c.prime))
			}
			pr := benchPrograms(b, d, c.cycle)
			benchAgainstBaseline(b, pr.Baseline, pr.Guard, packet.Build(c.spec), 1000)
		})
	}
}
