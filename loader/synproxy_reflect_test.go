package loader

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
)

// The reflection bound (synproxy.h sp_answer_conforms): a SYN flood spoofing a
// victim (its client key: a /32, a /64) gets it at most its policy's
// SYN-ACKs, whatever the flood's rate (at most burst + rate × time), and
// leaves its neighbours answered. Time is virtual: the bound is 10 a minute (one per 6 s), the test
// moves the victim's bucket back instead of waiting, so no count depends on
// how fast the machine runs.

const (
	reflectPerMinute = 10
	reflectBurst     = 5
	reflectInterval  = time.Minute / reflectPerMinute
)

type reflectCase struct {
	name      string
	victim    func(i int) netip.Addr // an address of the victim's client key
	key       netip.Prefix           // the victim's client key
	neighbour netip.Addr             // another client of the victim's prefix (/24, /48)
}

func reflectCases() []reflectCase {
	return []reflectCase{
		{"ipv4 /32", func(int) netip.Addr { return addr("198.51.100.7") }, pfx("198.51.100.7/32"), addr("198.51.100.8")},
		{"ipv6 /64", func(i int) netip.Addr {
			// a different address every time, one /64
			return addr(fmt.Sprintf("2001:db8:1:1::%x", i+7))
		}, pfx("2001:db8:1:1::/64"), addr("2001:db8:1:2::1")},
	}
}

// reflectSYN is a Linux SYN from src (port varying with i) to the proxied port.
func reflectSYN(src netip.Addr, i int, badSum bool) []byte {
	s := synCase{src: src.String(), offer: synOffer{mss: 1460, wscale: 7, sack: true, ts: true}}.spec(uint32(1000+i), 1)
	s.SrcPort = uint16(20000 + i)
	f := packet.Build(s)
	if badSum {
		f[len(f)-1] ^= 0xff // the last option byte: the checksum no longer adds up
	}
	return f
}

// shiftAnswered moves every charged reflection bucket back by `by` of virtual
// time (reset: empties them) and returns how many were charged.
func shiftAnswered(t *testing.T, d *Datapath, by time.Duration, reset bool) int {
	t.Helper()
	var (
		k, n uint32
		tat  uint64
	)
	it := d.objs.SynproxyAnswered.Iterate()
	var slots []uint32
	for it.Next(&k, &tat) {
		if tat != 0 {
			slots = append(slots, k)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if err := d.objs.SynproxyAnswered.Lookup(s, &tat); err != nil {
			t.Fatal(err)
		}
		next := uint64(0)
		if !reset {
			next = tat - uint64(by)
		}
		if err := d.objs.SynproxyAnswered.Update(s, next, ebpf.UpdateExist); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return int(n)
}

// sendSYNs runs n SYNs from src(i) through prog and returns how many came
// back as SYN-ACKs and how many were counted synack_limited; every other
// outcome fails the test.
func sendSYNs(t *testing.T, d *Datapath, prog *ebpf.Program, answer uint32, n int, src func(i int) netip.Addr, first int) (answered, limited int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		frame := reflectSYN(src(i), i, false)
		before := counterMap(t, d)
		out := make([]byte, len(frame)+64)
		ret, err := prog.Run(&ebpf.RunOptions{Data: frame, DataOut: out})
		if err != nil {
			t.Fatalf("prog.Run: %v", err)
		}
		act, reason, cnt := counterDelta(t, before, counterMap(t, d))
		switch {
		case ret == answer && reason == Reason(GuardAgReasonAG_R_SYN_COOKIE) && act == ActionDrop && cnt == 1:
			seg, err := decode(out)
			if err != nil || seg.Flags != packet.SYN|packet.ACK || seg.Dst != src(i) || !seg.TCPCsumOK {
				t.Fatalf("SYN %d from %v: answer %+v (%v), want a SYN-ACK to it", i, src(i), seg, err)
			}
			answered++
		case ret != answer && reason == Reason(GuardAgReasonAG_R_SYNACK_LIMITED) && act == ActionDrop && cnt == 1:
			limited++
		default:
			t.Fatalf("SYN %d from %v: verdict %d, counted %v %v (%d); want an answer or one synack_limited drop", i, src(i), ret, act, reason, cnt)
		}
	}
	return answered, limited
}

func runReflectTable(t *testing.T, prog func(*Datapath) *ebpf.Program, answer uint32) {
	d := newDatapath(t, Options{})
	p := synProxyPolicy()
	p.SynProxyAnswers = Rate{PerMinute: reflectPerMinute, Burst: reflectBurst}
	p.ProvenTTL = 10 * time.Minute
	mustApply(t, d, p)
	if err := d.SetSynProxyHost(spHost); err != nil {
		t.Fatal(err)
	}
	for _, c := range reflectCases() {
		t.Run(c.name, func(t *testing.T) {
			shiftAnswered(t, d, 0, true)
			// SYNs the proxy does not answer are not charged: a bad
			// checksum is syn_unproxyable, the bucket stays full
			for i := 0; i < 3*reflectBurst; i++ {
				if ret, err := prog(d).Run(&ebpf.RunOptions{Data: reflectSYN(c.victim(i), i, true)}); err != nil || ret == answer {
					t.Fatalf("bad-checksum SYN: verdict %d (%v), want a drop", ret, err)
				}
			}
			if n := shiftAnswered(t, d, 0, false); n != 0 {
				t.Fatalf("%d buckets charged by SYNs never answered", n)
			}
			// a flood spoofing the victim: the burst, then nothing
			a, l := sendSYNs(t, d, prog(d), answer, 4*reflectBurst, c.victim, 0)
			if a != reflectBurst || l != 3*reflectBurst {
				t.Errorf("flood: %d answered, %d synack_limited; want %d and %d", a, l, reflectBurst, 3*reflectBurst)
			}
			// 18 s later (virtual): three intervals' worth, then nothing
			if n := shiftAnswered(t, d, 3*reflectInterval, false); n != 1 {
				t.Fatalf("%d buckets charged, want the victim's one", n)
			}
			a, l = sendSYNs(t, d, prog(d), answer, 3*reflectBurst, c.victim, 100)
			if a != 3 || l != 3*reflectBurst-3 {
				t.Errorf("18 s later: %d answered, %d synack_limited; want 3 and %d", a, l, 3*reflectBurst-3)
			}
			// a minute later: a bucket holds no more than its burst
			shiftAnswered(t, d, time.Minute, false)
			a, l = sendSYNs(t, d, prog(d), answer, 3*reflectBurst, c.victim, 200)
			if a != reflectBurst || l != 2*reflectBurst {
				t.Errorf("a minute later: %d answered, %d synack_limited; want %d and %d", a, l, reflectBurst, 2*reflectBurst)
			}
			// a neighbour in the victim's prefix is still answered, up to its own burst
			a, l = sendSYNs(t, d, prog(d), answer, reflectBurst, func(int) netip.Addr { return c.neighbour }, 300)
			if a != reflectBurst || l != 0 {
				t.Errorf("a neighbour: %d answered, %d synack_limited; want %d and 0", a, l, reflectBurst)
			}
			// the victim is a client of the server: refused with the flood
			// until proven (the server spoke to it), then a second bucket at
			// the same bound, and no more however much it is spoofed
			a, l = sendSYNs(t, d, prog(d), answer, reflectBurst, c.victim, 400)
			if a != 0 || l != reflectBurst {
				t.Errorf("unproven victim: %d answered, %d synack_limited; want 0 and %d", a, l, reflectBurst)
			}
			key := GuardAgSrcKey{Addr: c.key.Addr().As16()}
			if err := d.objs.ProvenSources.Put(key, coarseNow(t)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.objs.ProvenSources.Delete(key) })
			a, l = sendSYNs(t, d, prog(d), answer, 3*reflectBurst, c.victim, 500)
			if a != reflectBurst || l != 2*reflectBurst {
				t.Errorf("proven victim: %d answered, %d synack_limited; want %d and %d", a, l, reflectBurst, 2*reflectBurst)
			}
		})
	}
}

func TestSynProxyReflectionBoundXDP(t *testing.T) {
	runReflectTable(t, (*Datapath).XDP, xdpTX)
}

func TestSynProxyReflectionBoundTC(t *testing.T) {
	runReflectTable(t, (*Datapath).TC, tcActRedir)
}

// The policy's bound reaches the kernel, the default when it sets none, and
// a bound that answers nothing is refused.
func TestSynProxyAnswersCompile(t *testing.T) {
	for _, c := range []struct {
		name     string
		r        Rate
		interval uint64
		err      bool
	}{
		{"default", Rate{}, uint64(time.Second/time.Duration(DefaultSynProxyAnswers.PerSecond)) << 16, false},
		{"per second", Rate{PerSecond: 50, Burst: 100}, uint64(time.Second/50) << 16, false},
		{"per minute", Rate{PerMinute: 10, Burst: 5}, uint64(6*time.Second) << 16, false},
		{"no rate", Rate{Burst: 10}, 0, true},
		{"no burst", Rate{PerSecond: 10}, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := synProxyPolicy()
			p.SynProxyAnswers = c.r
			img, err := compile(p)
			if c.err {
				if err == nil {
					t.Fatalf("compiled %+v, want an error", c.r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := img.cfg.SynproxyAnswers.Interval; got != c.interval {
				t.Errorf("interval %d, want %d", got, c.interval)
			}
		})
	}
}
