package loader

import (
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
)

const (
	xdpDrop = 1
	xdpPass = 2
)

func newDatapath(tb testing.TB, opts Options) *Datapath {
	tb.Helper()
	testenv.RequireRoot(tb)
	d, err := Load(opts)
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

func mustApply(tb testing.TB, d *Datapath, p *Policy) {
	tb.Helper()
	if _, err := d.Apply(p); err != nil {
		tb.Fatalf("apply: %v", err)
	}
}

func runXDP(tb testing.TB, d *Datapath, frame []byte) uint32 {
	tb.Helper()
	ret, err := d.XDP().Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		tb.Fatalf("prog.Run: %v", err)
	}
	return ret
}

func counterMap(tb testing.TB, d *Datapath) map[[2]uint8]uint64 {
	tb.Helper()
	cs, err := d.Counters()
	if err != nil {
		tb.Fatalf("counters: %v", err)
	}
	out := map[[2]uint8]uint64{}
	for _, c := range cs {
		if c.Packets > 0 {
			out[[2]uint8{uint8(c.Action), uint8(c.Reason)}] = c.Packets
		}
	}
	return out
}

// counterDelta returns the one (action, reason) counter that moved between two reads.
func counterDelta(tb testing.TB, before, after map[[2]uint8]uint64) (Action, Reason, uint64) {
	tb.Helper()
	var moved [][2]uint8
	for k, v := range after {
		if v != before[k] {
			moved = append(moved, k)
		}
	}
	if len(moved) != 1 {
		tb.Fatalf("want exactly one counter to move, got %v", moved)
	}
	k := moved[0]
	return Action(k[0]), Reason(k[1]), after[k] - before[k]
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

var (
	guarded4 = addr("192.0.2.200")
	guarded6 = addr("2001:db8:ffff::1")
)

func tcp(src string, dport uint16, flags uint8) packet.Spec {
	a := addr(src)
	dst := guarded4
	if a.Is6() {
		dst = guarded6
	}
	return packet.Spec{Src: a, Dst: dst, Proto: packet.TCP, SrcPort: 40000, DstPort: dport, TCPFlags: flags}
}

func udp(src string, dport uint16, payload int) packet.Spec {
	a := addr(src)
	dst := guarded4
	if a.Is6() {
		dst = guarded6
	}
	return packet.Spec{Src: a, Dst: dst, Proto: packet.UDP, SrcPort: 40000, DstPort: dport, Payload: payload}
}
