package loader

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
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
		n   uint32
		tat uint64
	)
	for _, s := range chargedSlots(t, d) {
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

// reflectDatapath is a datapath proxying synProxyPolicy's service with the
// reflection tests' small bound (provenTTL 0: the policy's default).
func reflectDatapath(t *testing.T, provenTTL time.Duration) *Datapath {
	t.Helper()
	d := newDatapath(t, Options{})
	p := synProxyPolicy()
	p.SynProxyAnswers = Rate{PerMinute: reflectPerMinute, Burst: reflectBurst}
	if provenTTL > 0 {
		p.ProvenTTL = provenTTL
	}
	mustApply(t, d, p)
	if err := d.SetSynProxyHost(spHost); err != nil {
		t.Fatal(err)
	}
	return d
}

func runReflectTable(t *testing.T, prog func(*Datapath) *ebpf.Program, answer uint32) {
	d := reflectDatapath(t, 10*time.Minute)
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

// The name of the reflection bound's slot key map (synproxy.h), spelt here so
// that the test states the contract without the generated name.
const slotKeyMap = "synproxy_slotkey"

// chargedSlots is the reflection buckets a SYN has charged, in order.
func chargedSlots(t *testing.T, d *Datapath) []uint32 {
	t.Helper()
	var slots []uint32
	err := eachEntry(d.objs.SynproxyAnswered, func(k *uint32, tat *uint64) {
		if *tat != 0 {
			slots = append(slots, *k)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return slots
}

// The reflection bound's slots are a keyed hash under a key of their own, not
// the cookie's: whoever learns which sources share a slot (it receives the
// SYN-ACKs, it can spend a spoofed address's burst) learns nothing of the key
// that forges cookies and source proofs. Changing the cookie key moves no
// source's slot; changing the slot key moves them; a zero slot key answers
// nothing.
func TestSynProxyReflectionSlotKey(t *testing.T) {
	d := reflectDatapath(t, 0)
	sources := []netip.Addr{addr("198.51.100.7"), addr("198.51.100.8"), addr("203.0.113.200"), addr("10.1.0.9"),
		addr("2001:db8:1:1::7"), addr("2001:db8:1:2::1"), addr("2001:db8:77::1"), addr("fd00::1")}
	// slots answers one SYN of each source and returns the one bucket it
	// charged, emptied again for the next
	slots := func() []uint32 {
		t.Helper()
		var out []uint32
		for i, src := range sources {
			if a, _ := sendSYNs(t, d, d.XDP(), xdpTX, 1, func(int) netip.Addr { return src }, 600+i); a != 1 {
				t.Fatalf("SYN from %v not answered", src)
			}
			got := chargedSlots(t, d)
			if len(got) != 1 {
				t.Fatalf("SYN from %v charged slots %v, want one", src, got)
			}
			if err := d.objs.SynproxyAnswered.Update(got[0], uint64(0), ebpf.UpdateExist); err != nil {
				t.Fatal(err)
			}
			out = append(out, got[0])
		}
		return out
	}
	before := slots()

	var host GuardAgSynproxy
	if err := d.objs.Synproxy.Lookup(uint32(0), &host); err != nil {
		t.Fatal(err)
	}
	host.Key[0] ^= 0x5bd1e9955bd1e995
	host.Key[1] += 0x9e3779b97f4a7c15
	if err := d.objs.Synproxy.Update(uint32(0), &host, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	if after := slots(); !slices.Equal(after, before) {
		t.Fatalf("the cookie key changed and the slots moved: %v, then %v; the slot hash leaks the cookie key", before, after)
	}

	m, ok := d.byName[slotKeyMap]
	if !ok {
		t.Fatalf("no map %s: the slots have no key of their own", slotKeyMap)
	}
	var key [2]uint64
	if err := m.Lookup(uint32(0), &key); err != nil {
		t.Fatal(err)
	}
	if key == [2]uint64{} {
		t.Fatal("the slot key is zero after Load")
	}
	if key == host.Key {
		t.Fatal("the slot key is the cookie key")
	}
	key[0] ^= 0x5bd1e9955bd1e995
	if err := m.Update(uint32(0), key, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	after := slots()
	moved := 0
	for i := range before {
		if after[i] != before[i] {
			moved++
		}
	}
	// a new key leaves a source in its slot with probability 2^-16
	if moved < len(sources)-1 {
		t.Fatalf("the slot key changed and %d of %d sources moved: %v, then %v", moved, len(sources), before, after)
	}

	// a zero slot key (a map created, its key not yet written) answers
	// nothing and charges nothing: the SYN cannot be answered
	if err := m.Update(uint32(0), [2]uint64{}, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	for i, src := range sources {
		frame := reflectSYN(src, 700+i, false)
		beforeCnt := counterMap(t, d)
		ret, err := d.XDP().Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			t.Fatal(err)
		}
		act, reason, n := counterDelta(t, beforeCnt, counterMap(t, d))
		if ret == xdpTX || act != ActionDrop || reason != Reason(GuardAgReasonAG_R_SYN_UNPROXYABLE) || n != 1 {
			t.Fatalf("SYN from %v under a zero slot key: verdict %d, counted %v %v (%d); want one syn_unproxyable drop", src, ret, act, reason, n)
		}
	}
	if got := chargedSlots(t, d); len(got) != 0 {
		t.Fatalf("a zero slot key charged slots %v", got)
	}
}

// keys reads the cookie key and the slot key of a loaded datapath.
func keys(t *testing.T, d *Datapath) (cookie, slot [2]uint64) {
	t.Helper()
	var host GuardAgSynproxy
	if err := d.objs.Synproxy.Lookup(uint32(0), &host); err != nil {
		t.Fatal(err)
	}
	m, ok := d.byName[slotKeyMap]
	if !ok {
		t.Fatalf("no map %s: the slots have no key of their own", slotKeyMap)
	}
	if err := m.Lookup(uint32(0), &slot); err != nil {
		t.Fatal(err)
	}
	return host.Key, slot
}

// Load draws the slot key (non-zero, not the cookie key) and a restart that
// adopts the pins keeps it, so that no source changes bucket (a flooded
// victim would get a fresh burst, an innocent a spent one). An install made
// by a build without the map (an upgrade) is adopted without a detach: the
// map is created beside the adopted ones with a key of its own, and the
// cookie key stays.
func TestSynProxySlotKeyKeptAcrossLoads(t *testing.T) {
	dir := tempPinDir(t)
	d := newDatapath(t, Options{PinDir: dir})
	cookie, slot := keys(t, d)
	if cookie == [2]uint64{} || slot == [2]uint64{} || slot == cookie {
		t.Fatalf("after Load: cookie key %x, slot key %x; want two non-zero keys of their own", cookie, slot)
	}
	d.Close()

	d = newDatapath(t, Options{PinDir: dir})
	if c, s := keys(t, d); !d.Adopted() || c != cookie || s != slot {
		t.Fatalf("re-Load from pins (adopted %v): keys %x %x, want %x %x", d.Adopted(), c, s, cookie, slot)
	}
	d.Close()

	// what an earlier build left: no pin of the map, no record of its layout
	if err := os.Remove(filepath.Join(dir, mapsDir, slotKeyMap)); err != nil {
		t.Fatal(err)
	}
	rec, err := ebpf.LoadPinnedMap(filepath.Join(dir, mapsDir, GuardMapPinLayouts), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Delete(pinName(slotKeyMap)); err != nil {
		t.Fatal(err)
	}
	rec.Close()
	d = newDatapath(t, Options{PinDir: dir})
	c, s := keys(t, d)
	if !d.Adopted() || c != cookie || s == [2]uint64{} || s == slot || s == cookie {
		t.Fatalf("upgrade (adopted %v): cookie key %x (was %x), slot key %x; want the cookie key kept and a new slot key", d.Adopted(), c, cookie, s)
	}
	if _, err := os.Stat(filepath.Join(dir, mapsDir, slotKeyMap)); err != nil {
		t.Fatalf("the new map is not pinned: %v", err)
	}
}

// A proven source's second bucket is its own, not a slot some other address
// reaches by construction: were the domain a bit of the hashed address (xored
// into its first word), the second bucket of 2001:db8:1:1::/64 would be the
// first bucket of 2101:db8:1:1::/64, whatever the key, and a flood spoofing
// that twin would spend a proven victim's second bucket before the victim
// asked for it.
func TestSynProxyProvenDomainNotAnAddress(t *testing.T) {
	d := reflectDatapath(t, 10*time.Minute)
	for _, c := range []struct {
		name         string
		victim, twin netip.Addr
		key          netip.Prefix
	}{
		// the first word's lowest bit is bit 0 of the first byte
		{"ipv6 /64", addr("2001:db8:1:1::7"), addr("2101:db8:1:1::7"), pfx("2001:db8:1:1::/64")},
	} {
		t.Run(c.name, func(t *testing.T) {
			shiftAnswered(t, d, 0, true)
			a, l := sendSYNs(t, d, d.XDP(), xdpTX, 2*reflectBurst, func(int) netip.Addr { return c.twin }, 0)
			if a != reflectBurst || l != reflectBurst {
				t.Fatalf("the twin: %d answered, %d synack_limited; want %d and %d", a, l, reflectBurst, reflectBurst)
			}
			key := GuardAgSrcKey{Addr: c.key.Addr().As16()}
			if err := d.objs.ProvenSources.Put(key, coarseNow(t)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.objs.ProvenSources.Delete(key) })
			a, l = sendSYNs(t, d, d.XDP(), xdpTX, 3*reflectBurst, func(int) netip.Addr { return c.victim }, 100)
			if a != 2*reflectBurst || l != reflectBurst {
				t.Errorf("proven victim after its twin's flood: %d answered, %d synack_limited; want %d and %d (its second bucket spent by the twin)",
					a, l, 2*reflectBurst, reflectBurst)
			}
		})
	}
}
