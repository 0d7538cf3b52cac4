package loader

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
)

func TestApplyIsIncremental(t *testing.T) {
	d := newDatapath(t, Options{})
	a := basePolicy()
	r1, err := d.Apply(a)
	if err != nil || !r1.Changed || r1.Generation != 1 {
		t.Fatalf("first apply: %+v %v", r1, err)
	}
	r2, err := d.Apply(basePolicy())
	if err != nil || r2.Changed || r2.Generation != 1 || r2.PrefixWrites+r2.PortWrites+r2.ServiceWrites != 0 {
		t.Fatalf("same policy again must change nothing: %+v %v", r2, err)
	}
	b := basePolicy()
	b.Deny = append(b.Deny, pfx("100.64.0.0/10"))
	r3, err := d.Apply(b)
	if err != nil || !r3.Changed || r3.Generation != 2 {
		t.Fatalf("apply b: %+v %v", r3, err)
	}
	c := basePolicy()
	c.Deny = append(c.Deny, pfx("100.64.0.0/10"), pfx("2001:db8:beef::/48"))
	r4, err := d.Apply(c)
	if err != nil || r4.Generation != 3 {
		t.Fatalf("apply c: %+v %v", r4, err)
	}
	// slot 1 was brought up to b in the background; c is b plus one prefix
	if r4.PrefixWrites != 1 || r4.PortWrites != 0 || r4.ServiceWrites != 0 {
		t.Errorf("a one-line change wrote %d prefixes, %d ports, %d services; want 1, 0, 0", r4.PrefixWrites, r4.PortWrites, r4.ServiceWrites)
	}
	checkVerdicts(t, d, []verdictCase{
		vc("new deny in force", packet.Build(udp("100.64.1.1", 53, 0)), drop, Reason(GuardAgReasonAG_R_DENY)),
		vc("new ipv6 deny in force", packet.Build(udp("2001:db8:beef::1", 53, 0)), drop, Reason(GuardAgReasonAG_R_DENY)),
	})
	// a removed service stops matching
	c.Services = c.Services[1:]
	if _, err := d.Apply(c); err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, d, []verdictCase{
		vc("removed service", packet.Build(tcp("10.7.0.1", 80, packet.SYN)), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),
	})
}

func TestApplyRefusesBadPolicyAndKeepsOld(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	bad := basePolicy()
	bad.Deny = nil
	bad.Services = append(bad.Services, Service{ID: 7, Name: "clash", Proto: ProtoTCP, Ports: []PortRange{{80, 80}}})
	if _, err := d.Apply(bad); err == nil {
		t.Fatal("policy with two services on tcp/80 applied")
	}
	if d.Generation() != 1 {
		t.Fatalf("generation %d after refused apply", d.Generation())
	}
	checkVerdicts(t, d, []verdictCase{
		vc("old deny still in force", packet.Build(udp("198.51.100.77", 53, 0)), drop, Reason(GuardAgReasonAG_R_DENY)),
	})
}

// No packet sees half a policy: two policies that disagree on both the deny list
// and the default action are swapped while packets flow. Either whole policy
// drops the probe; only a mix of old deny list and new config would pass it.
func TestApplyIsAtomicUnderTraffic(t *testing.T) {
	d := newDatapath(t, Options{})
	denyPolicy := &Policy{Deny: []netip.Prefix{pfx("10.9.0.0/16")}}
	dropPolicy := &Policy{DefaultDrop: true}
	mustApply(t, d, denyPolicy)

	// 60 swaps, however long a slow machine takes (bounded at 10 s); the
	// traffic runs until the swapper is done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	swaps := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		for i := 0; ctx.Err() == nil && i < 60; i++ {
			p := dropPolicy
			if i%2 == 1 {
				p = denyPolicy
			}
			if _, err := d.Apply(p); err != nil {
				t.Error(err)
				return
			}
			swaps++
		}
	}()
	frame := packet.Build(tcp("10.9.0.1", 22, packet.SYN))
	for ctx.Err() == nil {
		if _, err := d.XDP().Run(&ebpf.RunOptions{Data: frame, Repeat: 2000}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	cs := counterMap(t, d)
	mixed := cs[[2]uint8{uint8(ActionPass), uint8(GuardAgReasonAG_R_NO_SERVICE)}]
	byDeny := cs[[2]uint8{uint8(ActionDrop), uint8(GuardAgReasonAG_R_DENY)}]
	byDefault := cs[[2]uint8{uint8(ActionDrop), uint8(GuardAgReasonAG_R_NO_SERVICE)}]
	t.Logf("%d swaps; dropped by deny %d, by default %d; mixed %d", swaps, byDeny, byDefault, mixed)
	if swaps < 20 || byDeny == 0 || byDefault == 0 {
		t.Fatalf("the test did not exercise swaps under traffic (swaps %d, deny %d, default %d)", swaps, byDeny, byDefault)
	}
	if mixed != 0 {
		t.Fatalf("%d packets saw half of one policy and half of the other", mixed)
	}
}

func tempPinDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("apiguard-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// A restarted loader adopts pinned state: the policy in force, bans, counters.
func TestAdoptPinnedState(t *testing.T) {
	dir := tempPinDir(t)
	d := newDatapath(t, Options{PinDir: dir})
	if d.Adopted() {
		t.Fatal("fresh pin dir reported as adopted")
	}
	mustApply(t, d, basePolicy())
	if err := d.Ban(Ban{Prefix: pfx("203.0.113.77/32"), Reason: 42}); err != nil {
		t.Fatal(err)
	}
	runXDP(t, d, packet.Build(udp("198.51.100.1", 53, 0)))
	d.Close()

	d2 := newDatapath(t, Options{PinDir: dir})
	if !d2.Adopted() || d2.Generation() != 1 {
		t.Fatalf("adopted %v generation %d, want true and 1", d2.Adopted(), d2.Generation())
	}
	r, err := d2.Apply(basePolicy())
	if err != nil || r.Changed {
		t.Fatalf("re-applying the adopted policy changed something: %+v %v", r, err)
	}
	bans, err := d2.Bans()
	if err != nil || len(bans) != 1 || bans[0].Reason != 42 {
		t.Fatalf("bans after adoption: %+v %v", bans, err)
	}
	cs := counterMap(t, d2)
	if cs[[2]uint8{uint8(ActionDrop), uint8(GuardAgReasonAG_R_DENY)}] != 1 {
		t.Fatalf("counters not carried over: %v", cs)
	}
	// a different map size is a different build: refuse rather than lose state
	if _, err := Load(Options{PinDir: dir, ClientCapacity: 999}); err == nil {
		t.Fatal("loaded against pinned maps of another size")
	}
	d2.Close()
	if err := Detach(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("pin dir still there after Detach: %v", err)
	}
}

func TestMissingConstantIsAnError(t *testing.T) {
	spec, err := LoadGuard()
	if err != nil {
		t.Fatal(err)
	}
	delete(spec.Variables, "consts")
	if err := setConstants(spec, Options{}); err == nil {
		t.Fatal("no error for a spec without the consts variable")
	}
}

func TestGCRAParams(t *testing.T) {
	for _, c := range []struct{ rate, burst, interval, tolerance uint64 }{
		{0, 10, 0, 0},
		{1, 1, uint64(time.Second) << 16, uint64(time.Second)},
		{1000, 10, uint64(time.Millisecond) << 16, 10 * uint64(time.Millisecond)},
		{10_000_000_000, 3000, 6553, 300}, // 10 GB/s: 0.1 ns per byte
	} {
		i, tol := gcraParams(c.rate, c.burst)
		if i != c.interval || tol != c.tolerance {
			t.Errorf("gcraParams(%d, %d) = %d, %d; want %d, %d", c.rate, c.burst, i, tol, c.interval, c.tolerance)
		}
	}
}

// Allow is checked before deny; the combined trie must give the same verdicts,
// so a deny inside an allow is dead and not loaded.
func TestDenyInsideAllowIsDead(t *testing.T) {
	d := newDatapath(t, Options{})
	r, err := d.Apply(&Policy{
		Allow: []netip.Prefix{pfx("10.0.0.0/8"), pfx("198.51.100.128/25")},
		Deny:  []netip.Prefix{pfx("10.1.0.0/16"), pfx("198.51.100.0/24"), pfx("10.0.0.0/8")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.DeadDeny != 2 {
		t.Fatalf("dead deny entries %d, want 2 (10.1.0.0/16 and 10.0.0.0/8)", r.DeadDeny)
	}
	checkVerdicts(t, d, []verdictCase{
		vc("deny inside allow: allow wins", packet.Build(udp("10.1.2.3", 53, 0)), pass, Reason(GuardAgReasonAG_R_ALLOW)),
		vc("allow inside deny: allow wins", packet.Build(udp("198.51.100.200", 53, 0)), pass, Reason(GuardAgReasonAG_R_ALLOW)),
		vc("rest of the deny", packet.Build(udp("198.51.100.20", 53, 0)), drop, Reason(GuardAgReasonAG_R_DENY)),
	})
}
