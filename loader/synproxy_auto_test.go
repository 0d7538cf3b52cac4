package loader

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
)

// synProxy auto through prog.Run: off while the service's total connection
// budget lasts (SYNs go to the listener, ACKs are not judged), on from the
// first SYN the budget would refuse (answered, not dropped), the ACKs then
// judged, and a valid cookie with timestamps proving its source; off again once the hold ran
// out and the budget refilled.
func TestSynProxyAuto(t *testing.T) {
	s := newSpNetns(t)
	d := newDatapath(t, Options{})
	const burst = 3
	p := synProxyPolicy()
	p.ProveSources = true
	p.ProvenTTL = DefaultProvenTTL
	p.Services[0].SynProxy = SynProxyAuto
	p.Services[0].Total.Conns = Rate{PerSecond: 1, Burst: burst}
	mustApply(t, d, p)
	if err := d.SetSynProxyHost(spHost); err != nil {
		t.Fatal(err)
	}
	var c GuardAgSynproxy
	if err := d.objs.Synproxy.Lookup(uint32(0), &c); err != nil {
		t.Fatal(err)
	}
	key := c.Key
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}
	syn := func(i int) []byte {
		src := netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)})
		return packet.Build(synCase{src: src.String(), offer: linux}.spec(0x11223344, 0xa0b0c0d0))
	}
	wrongACK := ackCase{src: "198.51.100.60", offer: linux, mutate: func(_, ack, _ *uint32, _ *bool) { *ack ^= 1 << 20 }}

	for _, prog := range []struct {
		name            string
		get             func(*Datapath) *ebpf.Program
		pass, drop, ans uint32
	}{
		{"xdp", (*Datapath).XDP, xdpPass, xdpDrop, xdpTX},
		{"tc", (*Datapath).TC, tcActOK, tcActShot, tcActRedir},
	} {
		t.Run(prog.name, func(t *testing.T) {
			resetAuto(t, d, 1)
			step := func(what string, frame []byte, want uint32, wantReason Reason) {
				t.Helper()
				before := counterMap(t, d)
				got := s.run(t, prog.get(d), frame)
				_, reason, _ := counterDelta(t, before, counterMap(t, d))
				if got != want || reason != wantReason {
					t.Fatalf("%s: verdict %d (%v), want %d (%v)", what, got, reason, want, wantReason)
				}
			}
			ok, cookie := Reason(GuardAgReasonAG_R_OK), Reason(GuardAgReasonAG_R_SYN_COOKIE)
			st0, err := d.SynProxyStats()
			if err != nil {
				t.Fatal(err)
			}
			// off: an ACK only the listener would take is the kernel's (it resets it)
			step("wrong cookie while off", wrongACK.frame(key, coarseNow(t)>>ckSlotShift), prog.pass, ok)
			for i := range burst {
				step(fmt.Sprintf("SYN %d within the budget", i), syn(i), prog.pass, ok)
			}
			on := autoOn(t, d, 1)
			if !on.IsZero() {
				t.Fatalf("on until %v before the budget ran out", on)
			}
			step("SYN over the budget", syn(burst), prog.ans, cookie)
			if autoOn(t, d, 1).IsZero() {
				t.Fatal("the proxy did not turn on")
			}
			step("next SYN", syn(burst+1), prog.ans, cookie)
			step("wrong cookie while on", wrongACK.frame(key, coarseNow(t)>>ckSlotShift), prog.drop, Reason(GuardAgReasonAG_R_BAD_COOKIE))
			src := "198.51.100.61"
			valid := ackCase{src: src, offer: linux}
			step("valid cookie", valid.frame(key, coarseNow(t)>>ckSlotShift), prog.pass, ok)
			noTS := ackCase{src: "198.51.100.62", offer: synOffer{mss: 1460, wscale: 8, sack: true}}
			step("valid cookie without timestamps", noTS.frame(key, coarseNow(t)>>ckSlotShift), prog.pass, ok)
			st1, err := d.SynProxyStats()
			if err != nil {
				t.Fatal(err)
			}
			if got := st1.AutoOn - st0.AutoOn; got != 1 {
				t.Errorf("turned on %d times, want 1", got)
			}
			if got := st1.Proven - st0.Proven; got != 1 {
				t.Errorf("%d sources proven, want 1 (the cookie with timestamps)", got)
			}
			for _, c := range []struct {
				src    string
				proven bool
			}{{src, true}, {"198.51.100.62", false}} {
				var k GuardAgSrcKey
				a := netip.MustParseAddr(c.src).As16()
				k.Addr = a
				var seen uint64
				if inSources := d.objs.ProvenSources.Lookup(&k, &seen) == nil; inSources != c.proven {
					t.Errorf("%s: proven source %v, want %v", c.src, inSources, c.proven)
				}
			}
			// the hold ran out and the budget refilled: SYNs go to the listener again
			resetAuto(t, d, 1)
			step("SYN after the flood", syn(burst+2), prog.pass, ok)
			step("wrong cookie after the flood", wrongACK.frame(key, coarseNow(t)>>ckSlotShift), prog.pass, ok)
		})
	}
}

// resetAuto turns service id's auto proxy off and refills its total buckets,
// as SP_AUTO_HOLD seconds without a flood would.
func resetAuto(t *testing.T, d *Datapath, id uint32) {
	t.Helper()
	if err := d.objs.SynproxyUntil.Update(id, uint64(0), ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	if err := d.objs.ServiceState.Update(id, GuardAgServiceState{}, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
}

func autoOn(t *testing.T, d *Datapath, id uint32) time.Time {
	t.Helper()
	on, err := d.SynProxyOn([]uint32{id})
	if err != nil {
		t.Fatal(err)
	}
	return on[id]
}
