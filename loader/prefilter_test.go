package loader

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
)

// prefilterOf reads one of the kernel's prefilter bitmaps.
func prefilterOf(t *testing.T, d *Datapath, idx uint32) GuardAgPrefilter {
	t.Helper()
	var f GuardAgPrefilter
	if err := d.objs.Prefilters.Lookup(idx, &f); err != nil {
		t.Fatalf("read prefilter %d: %v", idx, err)
	}
	return f
}

func pfHas4(f GuardAgPrefilter, a netip.Addr) bool {
	b := a.As4()
	bit := uint32(b[0])<<8 | uint32(b[1])
	return f.Bits[bit/64]>>(bit%64)&1 == 1
}

func pfHas6(f GuardAgPrefilter, a netip.Addr) bool {
	bit := pfBit6(a.As16())
	return f.Bits[bit/64]>>(bit%64)&1 == 1
}

func activeSlot(t *testing.T, d *Datapath) uint32 {
	t.Helper()
	var s uint32
	if err := d.objs.Active.Lookup(uint32(0), &s); err != nil {
		t.Fatal(err)
	}
	return s & 1
}

// The prefilters only ever let a source skip a trie that holds nothing for
// it: lists wider than a bit's /16, IPv6 lists wider than its /32, bans
// of both families, and the verdict of a source beside them in the same bit.
func TestPrefilterVerdicts(t *testing.T) {
	d := newDatapath(t, Options{})
	p := basePolicy()
	p.Deny = append(p.Deny, pfx("10.0.0.0/8"), pfx("172.16.5.7/32"))
	p.Allow = append(p.Allow, pfx("100.64.0.0/10"))
	mustApply(t, d, p)
	if err := d.Ban(Ban{Prefix: pfx("203.0.113.9/32")}); err != nil {
		t.Fatal(err)
	}
	if err := d.Ban(Ban{Prefix: pfx("2001:db8:bad:1::/64")}); err != nil {
		t.Fatal(err)
	}
	if err := d.Ban(Ban{Prefix: pfx("64.0.0.0/4")}); err != nil { // 4,096 bits
		t.Fatal(err)
	}
	slot := activeSlot(t, d)
	l4 := prefilterOf(t, d, pfListIndex(slot, false))
	for _, a := range []string{"10.0.0.1", "10.255.255.255", "172.16.5.7", "100.127.0.1", "198.51.100.1"} {
		if !pfHas4(l4, addr(a)) {
			t.Errorf("list prefilter misses %s", a)
		}
	}
	if l4.Flags != pfReady || pfHas4(l4, addr("11.0.0.1")) || pfHas4(l4, addr("172.17.5.7")) {
		t.Errorf("list prefilter: flags %d, 11.0.0.1 %v, 172.17.5.7 %v: want ready and both clear",
			l4.Flags, pfHas4(l4, addr("11.0.0.1")), pfHas4(l4, addr("172.17.5.7")))
	}
	b4 := prefilterOf(t, d, pfBanIndex(false))
	if !pfHas4(b4, addr("64.0.0.1")) || !pfHas4(b4, addr("79.255.0.1")) || pfHas4(b4, addr("80.0.0.1")) {
		t.Error("ban prefilter does not hold exactly the /16s of 64.0.0.0/4")
	}
	b6 := prefilterOf(t, d, pfBanIndex(true))
	if b6.Flags != pfReady || !pfHas6(b6, addr("2001:db8:bad:1::5")) {
		t.Errorf("IPv6 ban prefilter: flags %d, bit %v", b6.Flags, pfHas6(b6, addr("2001:db8:bad:1::5")))
	}

	deny, ban := Reason(GuardAgReasonAG_R_DENY), Reason(GuardAgReasonAG_R_BAN)
	ok, allow := Reason(GuardAgReasonAG_R_OK), Reason(GuardAgReasonAG_R_ALLOW)
	checkVerdicts(t, d, []verdictCase{
		vc("deny /8: first /16", packet.Build(udp("10.0.0.1", 53, 0)), drop, deny),
		vc("deny /8: last /16", packet.Build(udp("10.255.255.255", 53, 0)), drop, deny),
		vc("beside the /8: bit clear", packet.Build(udp("11.0.0.1", 53, 0)), pass, ok),
		vc("deny /32", packet.Build(udp("172.16.5.7", 53, 0)), drop, deny),
		vc("same /16 as a deny /32: bit set, no entry", packet.Build(udp("172.16.5.8", 53, 0)), pass, ok),
		vc("allow /10", packet.Build(udp("100.127.0.1", 53, 0)), pass, allow),
		vc("banned host", packet.Build(udp("203.0.113.9", 53, 0)), drop, ban),
		vc("banned /4, deep inside", packet.Build(udp("77.1.2.3", 53, 0)), drop, ban),
		vc("same /16 as a banned host", packet.Build(udp("203.0.113.10", 53, 0)), pass, ok),
		vc("banned IPv6 /64", packet.Build(udp("2001:db8:bad:1::5", 53, 0)), drop, ban),
		vc("same /32 as a banned /64", packet.Build(udp("2001:db8:bad:2::5", 53, 0)), pass, ok),
		vc("denied IPv6 /48", packet.Build(udp("2001:db8:dead::1", 53, 0)), drop, deny),
		vc("arp from a sender in a denied /8", arpFrame("10.9.9.9"), drop, deny),
	})

	// an IPv6 list entry wider than a /32: the bitmap cannot hold it, so
	// every IPv6 source walks the trie
	p.Deny = append(p.Deny, pfx("2a00::/12"))
	mustApply(t, d, p)
	if f := prefilterOf(t, d, pfListIndex(activeSlot(t, d), true)); f.Flags != pfReady|pfWalk {
		t.Fatalf("IPv6 list prefilter flags %d, want ready and walk", f.Flags)
	}
	checkVerdicts(t, d, []verdictCase{
		vc("deny IPv6 /12", packet.Build(udp("2a0f:1::1", 53, 0)), drop, deny),
		vc("beside the IPv6 /12", packet.Build(udp("2a10::1", 53, 0)), pass, ok),
		vc("deny /8, other slot", packet.Build(udp("10.1.0.1", 53, 0)), drop, deny),
	})
	// a list entry removed: the slot's bitmap is rebuilt, the source passes
	p.Deny = p.Deny[:len(p.Deny)-3]
	mustApply(t, d, p)
	mustApply(t, d, p) // and the other slot, mirrored
	for slot := uint32(0); slot < 2; slot++ {
		if f := prefilterOf(t, d, pfListIndex(slot, false)); pfHas4(f, addr("10.1.0.1")) || f.Flags != pfReady {
			t.Errorf("slot %d: the removed /8's bits or flags (%d) stayed", slot, f.Flags)
		}
	}
	checkVerdicts(t, d, []verdictCase{
		vc("deny /8 removed", packet.Build(udp("10.1.0.1", 53, 0)), pass, ok),
		vc("IPv6 /12 removed", packet.Build(udp("2a0f:1::1", 53, 0)), pass, ok),
	})
}

// A bitmap the loader has not built (a map the kernel just created, or one
// it zeroed) walks every trie: nothing depends on the bitmap being there.
func TestPrefilterNotReadyWalks(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	if err := d.Ban(Ban{Prefix: pfx("203.0.113.9/32")}); err != nil {
		t.Fatal(err)
	}
	for idx := uint32(0); idx < uint32(GuardAgConstAG_PF_ENTRIES); idx++ {
		if err := d.objs.Prefilters.Put(idx, &GuardAgPrefilter{}); err != nil {
			t.Fatal(err)
		}
	}
	checkVerdicts(t, d, []verdictCase{
		vc("banned, no bitmap", packet.Build(udp("203.0.113.9", 53, 0)), drop, Reason(GuardAgReasonAG_R_BAN)),
		vc("denied, no bitmap", packet.Build(udp("198.51.100.1", 53, 0)), drop, Reason(GuardAgReasonAG_R_DENY)),
	})
}

// A restarted loader rebuilds the bitmaps from the pinned tries before any
// packet can rely on them, whatever the pinned bitmaps hold (here: marked
// ready with no bit set, the worst a stale or foreign map could say).
func TestPrefilterRebuiltOnAdoption(t *testing.T) {
	dir := tempPinDir(t)
	d := newDatapath(t, Options{PinDir: dir})
	mustApply(t, d, basePolicy())
	if err := d.Ban(Ban{Prefix: pfx("203.0.113.9/32")}); err != nil {
		t.Fatal(err)
	}
	for idx := uint32(0); idx < uint32(GuardAgConstAG_PF_ENTRIES); idx++ {
		if err := d.objs.Prefilters.Put(idx, &GuardAgPrefilter{Flags: pfReady}); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	d2 := newDatapath(t, Options{PinDir: dir})
	checkVerdicts(t, d2, []verdictCase{
		vc("banned, after adoption", packet.Build(udp("203.0.113.9", 53, 0)), drop, Reason(GuardAgReasonAG_R_BAN)),
		vc("denied, after adoption", packet.Build(udp("198.51.100.1", 53, 0)), drop, Reason(GuardAgReasonAG_R_DENY)),
	})
}

// A ban added while the source's packets flow: once Ban returns, not one
// more packet of the source passes.
func TestPrefilterBanWhilePacketsFlow(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	frame := packet.Build(udp("203.0.113.44", 53, 0))
	var banned atomic.Bool
	stop := make(chan struct{})
	bad := make(chan string, 1)
	done := make(chan int)
	go func() {
		runs := 0
		defer func() { done <- runs }()
		deadline := time.Now().Add(10 * time.Second)
		for ; runs < 1_000_000 && time.Now().Before(deadline); runs++ {
			select {
			case <-stop:
				return
			default:
			}
			after := banned.Load() // read before the run: the ban was in force
			ret, err := d.XDP().Run(&ebpf.RunOptions{Data: frame})
			if err != nil {
				bad <- err.Error()
				return
			}
			if after && ret != xdpDrop {
				bad <- "a packet passed after Ban returned"
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	if err := d.Ban(Ban{Prefix: pfx("203.0.113.0/24")}); err != nil {
		t.Fatal(err)
	}
	banned.Store(true)
	time.Sleep(20 * time.Millisecond)
	close(stop)
	runs := <-done
	select {
	case msg := <-bad:
		t.Fatal(msg)
	default:
	}
	if runs == 0 {
		t.Fatal("no packet ran")
	}
	if ret := runXDP(t, d, frame); ret != xdpDrop {
		t.Fatalf("banned source: ret %d, want drop", ret)
	}
}

// Sweeping expired bans rebuilds the bitmaps: the bits of the bans gone are
// cleared, those of the bans that stay are kept.
func TestPrefilterRebuiltBySweep(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	soon := time.Now().Add(50 * time.Millisecond)
	for _, b := range []Ban{
		{Prefix: pfx("203.0.113.9/32")},
		{Prefix: pfx("203.0.113.10/32"), Expires: soon},
		{Prefix: pfx("45.1.2.3/32"), Expires: soon},
		{Prefix: pfx("2001:db8:bad::/48"), Expires: soon},
	} {
		if err := d.Ban(b); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := d.SweepBans(soon.Add(time.Second))
	if err != nil || len(gone) != 3 {
		t.Fatalf("swept %d bans (%v), want 3", len(gone), err)
	}
	b4, b6 := prefilterOf(t, d, pfBanIndex(false)), prefilterOf(t, d, pfBanIndex(true))
	if !pfHas4(b4, addr("203.0.113.9")) || pfHas4(b4, addr("45.1.2.3")) || pfHas6(b6, addr("2001:db8:bad::1")) {
		t.Fatal("sweep: the kept ban's bit must stay and the swept ones' go")
	}
	checkVerdicts(t, d, []verdictCase{
		vc("kept ban", packet.Build(udp("203.0.113.9", 53, 0)), drop, Reason(GuardAgReasonAG_R_BAN)),
		vc("swept ban", packet.Build(udp("45.1.2.3", 53, 0)), pass, Reason(GuardAgReasonAG_R_OK)),
	})
}

// A rebuild that fails half-way (the IPv4 bitmap written, the IPv6 one
// refused) must leave the loader's copy equal to what the map holds: Ban
// skips the write of bits its copy says are set, so a copy that still holds
// the bits the written IPv4 bitmap cleared would let the next ban in those
// /16s go into the trie with its bit clear. The map is swapped for one with
// no entry for the IPv6 bans' bitmap, the one way to make that write fail.
func TestPrefilterFailedRebuildKeepsBansCovered(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	past := time.Now().Add(-time.Minute)
	if err := d.Ban(Ban{Prefix: pfx("198.18.7.7/32"), Expires: past}); err != nil {
		t.Fatal(err)
	}
	kernel := d.objs.Prefilters
	short, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4,
		ValueSize: kernel.ValueSize(), MaxEntries: pfBanIndex(true)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.objs.Prefilters = kernel; short.Close() })
	for idx := uint32(0); idx < pfBanIndex(true); idx++ {
		f := prefilterOf(t, d, idx)
		if err := short.Put(idx, &f); err != nil {
			t.Fatal(err)
		}
	}
	d.objs.Prefilters = short
	if _, err := d.SweepBans(time.Now()); err == nil {
		t.Fatal("sweep: the IPv6 bitmap's write should have failed")
	}
	if err := d.Ban(Ban{Prefix: pfx("198.18.9.9/32")}); err != nil {
		t.Fatal(err)
	}
	if f := prefilterOf(t, d, pfBanIndex(false)); !pfHas4(f, addr("198.18.9.9")) {
		t.Fatal("a ban went into the trie with its bit clear after a failed rebuild")
	}
}

// A ban renewed while the sweeper runs stays: SweepBans must not delete a
// ban it read as expired once Ban has replaced it with one in force. (The
// daemon serializes the two under its own lock; the loader must not rely on
// every caller doing so.) Thousands of expired bans keep the sweep busy
// while they are renewed, each renewal either before or after it.
func TestSweepKeepsBansRenewedMeanwhile(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	const n = 3000
	past, later := time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	prefixes := make([]netip.Prefix, n)
	for i := range prefixes {
		prefixes[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 32)
		if err := d.Ban(Ban{Prefix: prefixes[i], Expires: past}); err != nil {
			t.Fatal(err)
		}
	}
	swept := make(chan error, 1)
	go func() {
		_, err := d.SweepBans(time.Now())
		swept <- err
	}()
	for i := n - 1; i >= 0; i-- { // against the sweep's order, to meet it half-way
		if err := d.Ban(Ban{Prefix: prefixes[i], Expires: later}); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-swept; err != nil {
		t.Fatal(err)
	}
	lost := 0
	for _, p := range prefixes {
		if b, err := d.LookupBan(p); err != nil || !b.Expires.After(time.Now()) {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d bans renewed during a sweep were deleted by it", lost, n)
	}
}
