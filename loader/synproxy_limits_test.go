package loader

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
)

// A proxied handshake is a new connection of its client: the client's and its
// prefix's new-connection limits refuse the validated ACK when over (no
// hand-over), with the reason and the event the limits use for a SYN, and
// bans, deny lists and allowFrom apply to the handshake as without the proxy.
func TestSynProxyAppliesClientLimits(t *testing.T) {
	s := newSpNetns(t)
	d, key := newSynProxy(t, spHost)
	p := synProxyPolicy()
	p.Services[0].Client.Conns = Rate{PerSecond: 1, Burst: 2}
	p.Services[0].Prefix.Conns = Rate{PerSecond: 1, Burst: 3}
	p.Services[0].ACL = []netip.Prefix{pfx("198.51.0.0/16"), pfx("203.0.113.0/24"), pfx("2001:db8:1::/48")}
	p.Deny = []netip.Prefix{pfx("198.51.100.250/32"), pfx("198.51.101.250/32")}
	mustApply(t, d, p)
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}

	for _, prog := range guardHooks {
		// sources of their own (events are throttled per client)
		net4 := map[bool]string{false: "198.51.100.", true: "198.51.101."}[prog.tc]
		t.Run(prog.name, func(t *testing.T) {
			clearTable(t, d.objs.Clients)
			clearTable(t, d.objs.Prefixes)
			// each handshake from a port of its own: a new connection each
			ok := GuardAgReasonAG_R_OK
			step := func(what, src string, sport uint16, want uint32, wantReason GuardAgReason) {
				t.Helper()
				for try := 0; ; try++ {
					slot := coarseNow(t) >> ckSlotShift
					frame := ackCase{src: src, sport: sport, offer: linux}.frame(key, slot)
					st0, err := d.SynProxyStats()
					if err != nil {
						t.Fatal(err)
					}
					before := counterMap(t, d)
					got := s.run(t, prog.get(d), frame)
					_, reason, n := counterDelta(t, before, counterMap(t, d))
					st1, err := d.SynProxyStats()
					if err != nil {
						t.Fatal(err)
					}
					if coarseNow(t)>>ckSlotShift != slot && try < 3 {
						continue // the cookie's slot turned during the run
					}
					if got != want || reason != Reason(wantReason) || n != 1 {
						t.Fatalf("%s: verdict %d (%v, counted %d), want %d (%v, once)", what, got, reason, n, want, Reason(wantReason))
					}
					attempts := int(st1.Accepted - st0.Accepted + st1.AcceptFailed - st0.AcceptFailed)
					if !prog.tc {
						attempts = 0
					}
					if want == prog.pass && prog.tc && attempts != 1 || want != prog.pass && attempts != 0 {
						t.Fatalf("%s: %d hand-over attempts", what, attempts)
					}
					// cookie_ok counts handshakes let on; a refused one is its verdict
					judged := wantReason == ok || wantReason == GuardAgReasonAG_R_CLIENT_CPS || wantReason == GuardAgReasonAG_R_PREFIX_CPS
					if okd := st1.CookieOK - st0.CookieOK; judged && (okd == 1) != (want == prog.pass) {
						t.Fatalf("%s: cookie_ok moved by %d", what, okd)
					}
					return
				}
			}
			readEvents(t, d, 64) // what earlier subtests left
			for i := range 2 {
				step(fmt.Sprintf("handshake %d within the client's burst", i), net4+"70", 41000+uint16(i), prog.pass, ok)
			}
			step("third handshake over the client's limit", net4+"70", 41002, prog.drop, GuardAgReasonAG_R_CLIENT_CPS)
			// the prefix: 2 above, 1 more from a neighbour, then refused
			step("a neighbour within the prefix's burst", net4+"71", 41000, prog.pass, ok)
			step("a neighbour over the prefix's limit", net4+"72", 41000, prog.drop, GuardAgReasonAG_R_PREFIX_CPS)
			// one event each, as the limits raise for a SYN: the client, then the prefix
			var got []string
			for _, e := range readEvents(t, d, 8) {
				got = append(got, fmt.Sprintf("%d %d %s %d", e.Type, e.Reason, SourceAddr(&e), e.Count))
			}
			want := []string{
				fmt.Sprintf("%d %d "+net4+"70 1", GuardAgEventTypeAG_EV_SYN_LIMITED, GuardAgReasonAG_R_CLIENT_CPS),
				fmt.Sprintf("%d %d "+net4+"0 1", GuardAgEventTypeAG_EV_SYN_LIMITED, GuardAgReasonAG_R_PREFIX_CPS),
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("events %q, want %q", got, want)
			}
			step("another prefix", "203.0.113.9", 41000, prog.pass, ok)
			step("ipv6 within", "2001:db8:1::7"+net4[8:9], 41000, prog.pass, ok)
			step("ipv6 within", "2001:db8:1::7"+net4[8:9], 41001, prog.pass, ok)
			step("ipv6 over the client's limit", "2001:db8:1::7"+net4[8:9], 41002, prog.drop, GuardAgReasonAG_R_CLIENT_CPS)
			// refusals before the limits, as for an unproxied connection
			step("denied source", net4+"250", 41000, prog.drop, GuardAgReasonAG_R_DENY)
			step("outside allowFrom", "192.0.2.7", 41000, prog.drop, GuardAgReasonAG_R_ACL)
			if err := d.Ban(Ban{Prefix: pfx("203.0.113.9/32")}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Unban(pfx("203.0.113.9/32")) })
			step("banned source", "203.0.113.9", 41001, prog.drop, GuardAgReasonAG_R_BAN)
			if err := d.Unban(pfx("203.0.113.9/32")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// clearTable empties a hash or LRU table between subtests.
func clearTable(t *testing.T, m *ebpf.Map) {
	t.Helper()
	var keys [][]byte
	var k []byte
	var v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, append([]byte(nil), k...))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
}

// maxConnections holds for proxied connections: the SYN never reaches
// connection tracking (the proxy answers it), so the validated handshake takes
// the connection's slot, and one over a cap is dropped before the hand-over
// with the cap's reason, as an unproxied SYN would be.
func TestSynProxyAppliesConnectionCaps(t *testing.T) {
	s := newSpNetns(t)
	d, key := newSynProxy(t, spHost)
	p := synProxyPolicy()
	p.Services[0].MaxConns = ConnLimits{ClientEstablished: 2, TotalEstablished: 3}
	mustApply(t, d, p)
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}
	for _, prog := range guardHooks {
		net4 := map[bool]string{false: "198.51.100.", true: "198.51.101."}[prog.tc]
		t.Run(prog.name, func(t *testing.T) {
			clearTable(t, d.objs.Flows)
			clearTable(t, d.objs.ConnClients)
			if err := d.objs.ConnTotals.Update(uint32(1), uint64(0), ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
			step := func(what, src string, sport uint16, want uint32, wantReason GuardAgReason) {
				t.Helper()
				for try := 0; ; try++ {
					slot := coarseNow(t) >> ckSlotShift
					frame := ackCase{src: src, sport: sport, offer: linux}.frame(key, slot)
					before := counterMap(t, d)
					got := s.run(t, prog.get(d), frame)
					_, reason, n := counterDelta(t, before, counterMap(t, d))
					if coarseNow(t)>>ckSlotShift != slot && try < 3 {
						continue
					}
					if got != want || reason != Reason(wantReason) || n != 1 {
						t.Fatalf("%s: verdict %d (%v, counted %d), want %d (%v, once)", what, got, reason, n, want, Reason(wantReason))
					}
					return
				}
			}
			ok := GuardAgReasonAG_R_OK
			step("first connection", net4+"80", 43000, prog.pass, ok)
			step("the same handshake again holds no second slot", net4+"80", 43000, prog.pass, ok)
			step("second connection", net4+"80", 43001, prog.pass, ok)
			step("third connection over the client's cap", net4+"80", 43002, prog.drop, GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED)
			step("another client", net4+"81", 43000, prog.pass, ok)
			step("over the service's cap", net4+"82", 43000, prog.drop, GuardAgReasonAG_R_CONN_SERVICE_ESTABLISHED)
		})
	}
}

// A segment with ACK the proxy cannot read (IPv4 options, IPv6 extension
// headers, a first fragment) skipped the judge and reached the listener, which
// answered a forged one with a RST: the proxy never answers such a SYN, so one
// only the listener would take is dropped, and an established connection's
// passes.
func TestSynProxyUnreadableACKs(t *testing.T) {
	s := newSpNetns(t)
	d, _ := newSynProxy(t, spHost)
	forged := func(src string, mut func(*packet.Spec)) []byte {
		sp := packet.Spec{Src: addr(src), Dst: guarded4, Proto: packet.TCP, SrcPort: 40500, DstPort: spPort,
			TCPFlags: packet.ACK, Seq: 1000, Ack: 0x12345678, SrcMAC: spClientMAC, DstMAC: spServerMAC}
		if addr(src).Is6() {
			sp.Dst = guarded6
		}
		mut(&sp)
		return packet.Build(sp)
	}
	established := func(mut func(*packet.Spec)) []byte {
		sp := packet.Spec{Src: addr("127.0.0.1"), Dst: addr("127.0.0.1"), Proto: packet.TCP, SrcPort: s.conn.Port(),
			DstPort: spPort, TCPFlags: packet.ACK, Seq: 5, Ack: 5, SrcMAC: spClientMAC, DstMAC: spServerMAC}
		mut(&sp)
		return packet.Build(sp)
	}
	ipOpts := func(sp *packet.Spec) { sp.IPv4Options = 4 }
	ext := func(sp *packet.Spec) { sp.IPv6Ext = []uint8{packet.HopByHop} }
	firstFrag := func(sp *packet.Spec) { sp.MoreFragments = true; sp.Payload = 64 }
	for _, prog := range guardHooks {
		for _, c := range []struct {
			name   string
			frame  []byte
			drop   bool
			reason GuardAgReason
		}{
			{"forged ACK with IPv4 options", forged("198.51.100.95", ipOpts), true, GuardAgReasonAG_R_BAD_COOKIE},
			{"forged ACK with an IPv6 extension header", forged("2001:db8:1::95", ext), true, GuardAgReasonAG_R_BAD_COOKIE},
			{"forged ACK as a first fragment", forged("198.51.100.96", firstFrag), true, GuardAgReasonAG_R_BAD_COOKIE},
			{"established segment with IPv4 options", established(ipOpts), false, GuardAgReasonAG_R_OK},
			{"established segment as a first fragment", established(firstFrag), false, GuardAgReasonAG_R_OK},
		} {
			t.Run(prog.name+"/"+c.name, func(t *testing.T) {
				before := counterMap(t, d)
				got := s.run(t, prog.get(d), c.frame)
				_, reason, n := counterDelta(t, before, counterMap(t, d))
				want := prog.pass
				if c.drop {
					want = prog.drop
				}
				if got != want || reason != Reason(c.reason) || n != 1 {
					t.Fatalf("verdict %d (%v, counted %d), want %d (%v, once)", got, reason, n, want, Reason(c.reason))
				}
			})
		}
	}
}

// A flood of forged handshake ACKs (random sources, random cookies) is judged
// before the limits: each is dropped as bad_cookie and none creates or charges
// a client or prefix entry. The tables are not blind: a valid handshake and an
// established connection's segment each make their client's entry.
func TestSynProxyForgedACKsMakeNoClientState(t *testing.T) {
	s := newSpNetns(t)
	d, key := newSynProxy(t, spHost)
	p := synProxyPolicy()
	p.Services[0].Client.Packets = Rate{PerSecond: 1000, Burst: 1000}
	p.Services[0].Prefix.Packets = Rate{PerSecond: 1000, Burst: 1000}
	mustApply(t, d, p)
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}
	count := func(m *ebpf.Map) int {
		t.Helper()
		var k, v []byte
		n := 0
		it := m.Iterate()
		for it.Next(&k, &v) {
			n++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rng := rand.New(rand.NewPCG(16, 2))
	for _, prog := range guardHooks {
		t.Run(prog.name, func(t *testing.T) {
			clearTable(t, d.objs.Clients)
			clearTable(t, d.objs.Prefixes)
			const flood = 300
			for i := range flood {
				var src, dst netip.Addr
				if i%2 == 0 {
					src, dst = netip.AddrFrom4([4]byte{10, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}), guarded4
				} else {
					var a [16]byte
					a[0], a[1] = 0x20, 0x01
					for j := 2; j < 16; j++ {
						a[j] = byte(rng.Uint32())
					}
					src, dst = netip.AddrFrom16(a), guarded6
				}
				spec := packet.Spec{Src: src, Dst: dst, Proto: packet.TCP, SrcPort: uint16(1024 + rng.IntN(60000)),
					DstPort: spPort, TCPFlags: packet.ACK, Seq: rng.Uint32(), Ack: rng.Uint32(),
					TCPOptions: ackOptions(i%3 != 0, rng.Uint32(), rng.Uint32())}
				if i%5 == 0 && src.Is4() {
					spec.IPv4Options = 4 // unreadable to the proxy: judged from the guard's parse
				}
				before := counterMap(t, d)
				got := s.run(t, prog.get(d), packet.Build(spec))
				act, reason, n := counterDelta(t, before, counterMap(t, d))
				if got != prog.drop || act != ActionDrop || reason != Reason(GuardAgReasonAG_R_BAD_COOKIE) || n != 1 {
					t.Fatalf("forged ACK %d from %v: verdict %d, counted %v %v (%d); want one bad_cookie drop", i, src, got, act, reason, n)
				}
			}
			if c, pf := count(d.objs.Clients), count(d.objs.Prefixes); c != 0 || pf != 0 {
				t.Fatalf("%d forged ACKs made %d client and %d prefix entries, want none", flood, c, pf)
			}
			// a valid handshake: its client's entry, once the limits passed it
			for try := 0; ; try++ {
				slot := coarseNow(t) >> ckSlotShift
				got := s.run(t, prog.get(d), ackCase{src: "198.51.100.90", offer: linux}.frame(key, slot))
				if coarseNow(t)>>ckSlotShift != slot && try < 3 {
					continue // the cookie's slot turned during the run
				}
				if got != prog.pass {
					t.Fatalf("a valid handshake: verdict %d, want %d", got, prog.pass)
				}
				break
			}
			if c := count(d.objs.Clients); c != 1 {
				t.Fatalf("a valid handshake: %d client entries, want 1", c)
			}
			// an established connection's segment meets the limits as ever
			est := packet.Build(packet.Spec{Src: s.conn.Addr(), Dst: s.conn.Addr(), Proto: packet.TCP, SrcPort: s.conn.Port(),
				DstPort: spPort, TCPFlags: packet.ACK, Seq: 5, Ack: 6, TCPOptions: ackOptions(true, 5, 6)})
			if got := s.run(t, prog.get(d), est); got != prog.pass {
				t.Fatalf("established segment: verdict %d, want %d", got, prog.pass)
			}
			if c := count(d.objs.Clients); c != 2 {
				t.Fatalf("an established segment: %d client entries, want 2", c)
			}
		})
	}
}

// A flood of forged handshake ACKs far over its service's packet total meets
// the total's read-only check before the handshake is judged, as any flood
// does: past the total's burst (which the forged ACKs themselves use up,
// as every packet of the service does) each is dropped as service_pps, the
// limit the detector sees (one event for the whole service), without the
// socket lookup and hash a judgement costs, and none creates or charges a
// client or prefix entry. A valid handshake ACK is then refused by the total
// too: the flood costs the service what any flood over its total costs.
func TestSynProxyForgedACKFloodMeetsTheTotal(t *testing.T) {
	s := newSpNetns(t)
	d, key := newSynProxy(t, spHost)
	p := synProxyPolicy()
	const burst = 40
	p.Services[0].Client.Packets = Rate{PerSecond: 1000, Burst: 1000}
	p.Services[0].Prefix.Packets = Rate{PerSecond: 1000, Burst: 1000}
	// a rate far below what the loop sends: the burst is all it gets
	p.Services[0].Total.Packets = Rate{PerSecond: 1, Burst: burst}
	mustApply(t, d, p)
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}
	rng := rand.New(rand.NewPCG(16, 3))
	for _, prog := range guardHooks {
		t.Run(prog.name, func(t *testing.T) {
			clearTable(t, d.objs.Clients)
			clearTable(t, d.objs.Prefixes)
			// a full total for each subtest
			if err := d.objs.ServiceState.Put(uint32(1), GuardAgServiceState{}); err != nil {
				t.Fatal(err)
			}
			readEvents(t, d, 64) // what earlier subtests left
			// and the per-CPU throttle that held back this subtest's event
			zero := make([]GuardEvSlot, ebpf.MustPossibleCPU())
			for i := range uint32(d.objs.EventThrottle.MaxEntries()) {
				if err := d.objs.EventThrottle.Put(i, zero); err != nil {
					t.Fatal(err)
				}
			}
			const flood = 300
			reasons := map[Reason]int{}
			for i := range flood {
				src := netip.AddrFrom4([4]byte{10, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
				spec := packet.Spec{Src: src, Dst: guarded4, Proto: packet.TCP, SrcPort: uint16(1024 + rng.IntN(60000)),
					DstPort: spPort, TCPFlags: packet.ACK, Seq: rng.Uint32(), Ack: rng.Uint32(),
					TCPOptions: ackOptions(true, rng.Uint32(), rng.Uint32())}
				before := counterMap(t, d)
				got := s.run(t, prog.get(d), packet.Build(spec))
				act, reason, n := counterDelta(t, before, counterMap(t, d))
				if got != prog.drop || act != ActionDrop || n != 1 {
					t.Fatalf("forged ACK %d: verdict %d, counted %v %v (%d); want one drop", i, got, act, reason, n)
				}
				reasons[reason]++
			}
			bad, total := reasons[Reason(GuardAgReasonAG_R_BAD_COOKIE)], reasons[Reason(GuardAgReasonAG_R_SERVICE_PPS)]
			// the burst's worth judged (and refused) one by one, the rest by the total
			if bad+total != flood || bad > burst+1 || total < flood-burst-1 {
				t.Fatalf("%d forged ACKs dropped as %v; want at most %d bad_cookie, the rest service_pps", flood, reasons, burst+1)
			}
			if c, pf := tableLen(t, d.objs.Clients), tableLen(t, d.objs.Prefixes); c != 0 || pf != 0 {
				t.Fatalf("%d forged ACKs made %d client and %d prefix entries, want none", flood, c, pf)
			}
			// the total's limit, as the detector sees it: one event for the service
			var limited int
			for _, e := range readEvents(t, d, 64) {
				if e.Type == uint8(GuardAgEventTypeAG_EV_LIMITED) && e.Reason == uint8(GuardAgReasonAG_R_SERVICE_PPS) {
					limited++
				}
			}
			if limited == 0 {
				t.Fatal("no limit event for the service's total")
			}
			// a valid handshake now meets the same total
			for try := 0; ; try++ {
				slot := coarseNow(t) >> ckSlotShift
				before := counterMap(t, d)
				got := s.run(t, prog.get(d), ackCase{src: "198.51.100.91", offer: linux}.frame(key, slot))
				_, reason, _ := counterDelta(t, before, counterMap(t, d))
				if coarseNow(t)>>ckSlotShift != slot && try < 3 {
					continue // the cookie's slot turned during the run
				}
				if got != prog.drop || reason != Reason(GuardAgReasonAG_R_SERVICE_PPS) {
					t.Fatalf("a valid handshake over the total: verdict %d (%v), want %d (service_pps)", got, reason, prog.drop)
				}
				break
			}
			if c := tableLen(t, d.objs.Clients); c != 0 {
				t.Fatalf("a handshake refused by the total made %d client entries, want none", c)
			}
		})
	}
}

// tableLen counts a table's entries.
func tableLen(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	var k, v []byte
	n := 0
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// guardHooks are the two entry points of the guard with their pass and drop
// verdicts, for tests that run one table through both.
var guardHooks = []struct {
	name       string
	get        func(*Datapath) *ebpf.Program
	pass, drop uint32
	tc         bool
}{
	{"xdp", (*Datapath).XDP, xdpPass, xdpDrop, false},
	{"tc", (*Datapath).TC, tcActOK, tcActShot, true},
}

// A judged handshake's ACK is one packet to each of its limits: its cookie is
// checked between the limits' read-only stage and their charging stage
// (synproxy.h sp_judge), and neither the check nor the handshake's own
// connection charge after it charges a packet bucket again. With bursts of
// 2 (client), 3 (prefix) and 5 (total) packets and a refill of one a minute,
// the limits refuse exactly the handshake a single charge each predicts: a
// second charge anywhere would refuse an earlier one. A refused ACK charges
// nothing past the bucket that refused it. The client's entry counts one
// packet per handshake.
func TestSynProxyHandshakeChargedOnce(t *testing.T) {
	s := newSpNetns(t)
	d, key := newSynProxy(t, spHost)
	p := synProxyPolicy()
	p.Services[0].Client.Packets = Rate{PerMinute: 1, Burst: 2}
	p.Services[0].Prefix.Packets = Rate{PerMinute: 1, Burst: 3}
	p.Services[0].Total.Packets = Rate{PerMinute: 1, Burst: 5}
	mustApply(t, d, p)
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}
	ok := Reason(GuardAgReasonAG_R_OK)
	for _, prog := range guardHooks {
		// sources of their own: a refused one is remembered (refusals.h)
		net := map[bool]string{false: "198.51.100.", true: "198.51.101."}[prog.tc]
		third := map[bool]string{false: "203.0.113.", true: "203.0.116."}[prog.tc]
		t.Run(prog.name, func(t *testing.T) {
			clearTable(t, d.objs.Clients)
			clearTable(t, d.objs.Prefixes)
			if err := d.objs.ServiceState.Put(uint32(1), GuardAgServiceState{}); err != nil {
				t.Fatal(err)
			}
			step := func(what, src string, sport uint16, want Reason) {
				t.Helper()
				for try := 0; ; try++ {
					slot := coarseNow(t) >> ckSlotShift
					before := counterMap(t, d)
					got := s.run(t, prog.get(d), ackCase{src: src, sport: sport, offer: linux}.frame(key, slot))
					_, reason, n := counterDelta(t, before, counterMap(t, d))
					if coarseNow(t)>>ckSlotShift != slot && try < 3 {
						continue // the cookie's slot turned during the run
					}
					wantVerdict := prog.drop
					if want == ok {
						wantVerdict = prog.pass
					}
					if got != wantVerdict || reason != want || n != 1 {
						t.Fatalf("%s: verdict %d (%v, counted %d), want %d (%v)", what, got, reason, n, wantVerdict, want)
					}
					return
				}
			}
			step("client's first handshake", net+"80", 41000, ok)
			var (
				k  GuardAgClientKey
				cs GuardAgClientState
				n  int
			)
			it := d.objs.Clients.Iterate()
			for it.Next(&k, &cs) {
				n++
			}
			if err := it.Err(); err != nil {
				t.Fatal(err)
			}
			if n != 1 || cs.Packets != 1 {
				t.Fatalf("one handshake: %d client entries, the last counting %d packets; want 1 counting 1", n, cs.Packets)
			}
			step("client's second handshake", net+"80", 41001, ok)
			step("client's third, over its burst of 2", net+"80", 41002, Reason(GuardAgReasonAG_R_CLIENT_PPS))
			step("a neighbour, the prefix's third", net+"81", 41000, ok)
			step("the neighbour again, over the prefix's burst of 3", net+"81", 41001, Reason(GuardAgReasonAG_R_PREFIX_PPS))
			step("another prefix, the total's fourth", third+"80", 41000, ok)
			step("a third prefix, the total's fifth", "2001:db8:1::80", 41000, ok)
			step("a fourth prefix, over the total's burst of 5", "2001:db8:2::80", 41000, Reason(GuardAgReasonAG_R_SERVICE_PPS))
		})
	}
}

// A forged handshake ACK is charged to its service's total, as every packet of
// the service is (synproxy.md), a fragment too: the judge checks a fragment's
// cookie before the limits' read-only stage (they charge its fragment budget
// there), and a bad one must still meet the total, or a flood of forged
// first fragments is the one packet of a judged service the total never sees.
func TestSynProxyForgedACKsChargeTheTotal(t *testing.T) {
	s := newSpNetns(t)
	d, _ := newSynProxy(t, spHost)
	p := synProxyPolicy()
	p.Services[0].Total.Packets = Rate{PerSecond: 1, Burst: 1000}
	mustApply(t, d, p)
	forged := func(src string, frag bool) []byte {
		sp := packet.Spec{Src: addr(src), Dst: guarded4, Proto: packet.TCP, SrcPort: 40600, DstPort: spPort,
			TCPFlags: packet.ACK, Seq: 1000, Ack: 0x12345678, SrcMAC: spClientMAC, DstMAC: spServerMAC}
		if addr(src).Is6() {
			sp.Dst = guarded6
		}
		if frag {
			sp.MoreFragments = true
			sp.Payload = 64
		}
		return packet.Build(sp)
	}
	for _, prog := range guardHooks {
		for _, c := range []struct {
			name  string
			frame []byte
		}{
			{"forged ACK", forged("198.51.100.97", false)},
			{"forged ACK as a first fragment", forged("198.51.100.98", true)},
			{"forged IPv6 ACK", forged("2001:db8:1::97", false)},
		} {
			t.Run(prog.name+"/"+c.name, func(t *testing.T) {
				if err := d.objs.ServiceState.Put(uint32(1), GuardAgServiceState{}); err != nil {
					t.Fatal(err)
				}
				before := counterMap(t, d)
				got := s.run(t, prog.get(d), c.frame)
				_, reason, n := counterDelta(t, before, counterMap(t, d))
				if got != prog.drop || reason != Reason(GuardAgReasonAG_R_BAD_COOKIE) || n != 1 {
					t.Fatalf("verdict %d (%v, counted %d), want %d (bad_cookie, once)", got, reason, n, prog.drop)
				}
				var ss GuardAgServiceState
				if err := d.objs.ServiceState.Lookup(uint32(1), &ss); err != nil {
					t.Fatal(err)
				}
				if ss.Tat[GuardAgKindAG_KIND_PPS] == 0 {
					t.Fatal("the forged ACK left the service's total packet bucket uncharged")
				}
			})
		}
	}
}
