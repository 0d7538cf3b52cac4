package loader

import (
	"testing"

	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// A kernel without bpf_sk_assign_tcp_reqsk (before 6.9) still loads the
// datapath: the object names the kfunc weakly, and here the reference is
// renamed to a function no kernel has, so the library leaves it out as it
// would on such a kernel. A handshake that reaches the hand-over is counted
// unavailable instead, and CheckSynProxy's refusal is what the user sees.
func TestSynProxyLoadsWithoutKfunc(t *testing.T) {
	testenv.RequireRoot(t)
	const missing = "apiguard_no_such_kfunc"
	spec, err := LoadGuard()
	if err != nil {
		t.Fatal(err)
	}
	var fn *btf.Func
	if err := spec.Types.TypeByName(synProxyKfunc, &fn); err != nil {
		t.Fatalf("the object does not reference %s: %v", synProxyKfunc, err)
	}
	fn.Name = missing
	opts := Options{}
	opts.setDefaults()
	d, err := loadSpec(spec, opts)
	if err != nil {
		t.Fatalf("the datapath does not load without %s: %v", synProxyKfunc, err)
	}
	t.Cleanup(func() { d.Close() })
	if err := kernelHasKfunc(missing); err == nil {
		t.Fatalf("CheckSynProxy would accept a kernel without the kfunc")
	}

	s := newSpNetns(t)
	mustApply(t, d, synProxyPolicy())
	if err := d.SetSynProxyHost(spHost); err != nil {
		t.Fatal(err)
	}
	var c GuardAgSynproxy
	if err := d.objs.Synproxy.Lookup(uint32(0), &c); err != nil {
		t.Fatal(err)
	}
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}
	for i, prog := range []struct {
		name string
		prog *ebpf.Program
		want uint32
	}{
		{"tc guard", d.TC(), tcActOK},
		{"hand-over beside xdp", d.objs.ApiguardSynproxy, tcActUnspec},
	} {
		for try := 0; ; try++ {
			slot := coarseNow(t) >> ckSlotShift
			frame := ackCase{src: "198.51.100.90", sport: 42000 + uint16(i), offer: linux}.frame(c.Key, slot)
			st0, err := d.SynProxyStats()
			if err != nil {
				t.Fatal(err)
			}
			got := s.run(t, prog.prog, frame)
			st1, err := d.SynProxyStats()
			if err != nil {
				t.Fatal(err)
			}
			if coarseNow(t)>>ckSlotShift != slot && try < 3 {
				continue
			}
			if got != prog.want {
				t.Errorf("%s: verdict %d, want %d", prog.name, got, prog.want)
			}
			if n := st1.Unavailable - st0.Unavailable; n != 1 {
				t.Errorf("%s: %d handshakes counted unavailable, want 1", prog.name, n)
			}
			if n := st1.Accepted - st0.Accepted + st1.AcceptFailed - st0.AcceptFailed; n != 0 {
				t.Errorf("%s: %d hand-over attempts without the kfunc", prog.name, n)
			}
			break
		}
	}
}
