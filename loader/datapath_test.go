package loader

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
)

// Service ids of the base policy.
const (
	svcHTTP  = 1 // tcp 80, 8080-8081: client 1 pps, burst 5
	svcDNS   = 2 // udp 53: client 1000 B/s, burst 3028 (two full frames)
	svcAPI   = 3 // tcp 443: client 1 new conn/s, burst 2
	svcPfx   = 4 // tcp 9000: prefix 1 pps, burst 3
	svcTotal = 5 // udp 9001: service total 1 pps, burst 4
	svcMon   = 6 // tcp 9002: client burst 1, service in monitor mode
)

func basePolicy() *Policy {
	slow := func(burst uint64) Rate { return Rate{PerSecond: 1, Burst: burst} }
	return &Policy{
		TCPFlagSanity: true,
		Allow:         []netip.Prefix{pfx("192.0.2.0/28"), pfx("2001:db8:a::/48")},
		Deny:          []netip.Prefix{pfx("192.0.2.0/24"), pfx("198.51.100.0/24"), pfx("2001:db8:dead::/48")},
		Services: []Service{
			{ID: svcHTTP, Name: "http", Proto: ProtoTCP, Ports: []PortRange{{80, 80}, {8080, 8081}},
				// 1/s: a test's packets must not earn a token back, however
				// slow the machine (10/s refilled within 100 ms)
				Client: Limits{Packets: Rate{PerSecond: 1, Burst: 5}}},
			{ID: svcDNS, Name: "dns", Proto: ProtoUDP, Ports: []PortRange{{53, 53}},
				Client: Limits{Bytes: Rate{PerSecond: 1000, Burst: 3028}}},
			{ID: svcAPI, Name: "api", Proto: ProtoTCP, Ports: []PortRange{{443, 443}},
				Client: Limits{Conns: slow(2)}},
			{ID: svcPfx, Name: "pfx", Proto: ProtoTCP, Ports: []PortRange{{9000, 9000}},
				Prefix: Limits{Packets: slow(3)}},
			{ID: svcTotal, Name: "total", Proto: ProtoUDP, Ports: []PortRange{{9001, 9001}},
				Total: Limits{Packets: slow(4)}},
			{ID: svcMon, Name: "mon", Proto: ProtoTCP, Ports: []PortRange{{9002, 9002}}, Monitor: true,
				Client: Limits{Packets: slow(1)}},
		},
	}
}

// arpFrame is an ARP request from sender (an IPv4 address).
func arpFrame(sender string) []byte {
	f := make([]byte, 14+28)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	binary.BigEndian.PutUint16(f[14:], 1)      // Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:], 1) // request
	a := addr(sender).As4()
	copy(f[14+14:], a[:])
	return f
}

// mangle returns the frame built from spec, changed by fn.
func mangle(spec packet.Spec, fn func([]byte) []byte) []byte { return fn(packet.Build(spec)) }

type verdictCase struct {
	name   string
	frame  []byte
	ret    uint32
	action Action
	reason Reason
}

func pass(r Reason) (uint32, Action, Reason)    { return xdpPass, ActionPass, r }
func drop(r Reason) (uint32, Action, Reason)    { return xdpDrop, ActionDrop, r }
func monitor(r Reason) (uint32, Action, Reason) { return xdpPass, ActionMonitor, r }

func vc(name string, frame []byte, want func(Reason) (uint32, Action, Reason), r Reason) verdictCase {
	ret, a, rr := want(r)
	return verdictCase{name: name, frame: frame, ret: ret, action: a, reason: rr}
}

func checkVerdicts(t *testing.T, d *Datapath, cases []verdictCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := counterMap(t, d)
			ret := runXDP(t, d, c.frame)
			a, r, n := counterDelta(t, before, counterMap(t, d))
			if ret != c.ret || a != c.action || r != c.reason || n != 1 {
				t.Fatalf("got ret %d %v/%v (+%d), want ret %d %v/%v (+1)", ret, a, r, n, c.ret, c.action, c.reason)
			}
		})
	}
}

// TestPipeline is the verdict table: one packet, the verdict the program
// returns and the one (action, reason) counter it moves.
func TestPipeline(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	if err := d.Ban(Ban{Prefix: pfx("203.0.113.9/32")}); err != nil {
		t.Fatal(err)
	}
	if err := d.Ban(Ban{Prefix: pfx("2001:db8:bad:1::/64"), Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := d.Ban(Ban{Prefix: pfx("203.0.113.10/32"), Expires: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}

	frag := func(s packet.Spec, off uint16, more bool) packet.Spec {
		s.FragOffset, s.MoreFragments = off, more
		return s
	}
	vlan := func(s packet.Spec, tags ...uint16) packet.Spec { s.VLANs = tags; return s }
	opts := func(s packet.Spec, n int) packet.Spec { s.IPv4Options = n; return s }
	ext := func(s packet.Spec, hs ...uint8) packet.Spec { s.IPv6Ext = hs; return s }
	icmp6 := func(src string, typ uint8) packet.Spec {
		return packet.Spec{Src: addr(src), Dst: guarded6, Proto: packet.ICMPv6, ICMPType: typ}
	}
	seven := []uint8{packet.HopByHop, packet.DestOpts, packet.Routing, packet.DestOpts, packet.DestOpts, packet.DestOpts, packet.DestOpts}

	checkVerdicts(t, d, []verdictCase{
		// parsing
		vc("arp passes", arpFrame("10.1.0.1"), pass, Reason(GuardAgReasonAG_R_NOT_IP)),
		vc("arp from a banned address passes", arpFrame("203.0.113.9"), pass, Reason(GuardAgReasonAG_R_NOT_IP)),
		vc("arp from a denied sender", arpFrame("198.51.100.9"), drop, Reason(GuardAgReasonAG_R_DENY)),
		vc("truncated arp passes", arpFrame("198.51.100.9")[:20], pass, Reason(GuardAgReasonAG_R_NOT_IP)),
		vc("runt frame", make([]byte, 14), pass, Reason(GuardAgReasonAG_R_NOT_IP)),
		vc("truncated ipv4", packet.Build(udp("10.1.0.1", 53, 0))[:14+12], drop, Reason(GuardAgReasonAG_R_TRUNCATED)),
		vc("ipv4 ihl below 5", mangle(udp("10.1.0.1", 53, 0), func(b []byte) []byte { b[14] = 0x44; return b }), drop, Reason(GuardAgReasonAG_R_MALFORMED)),
		vc("ipv4 options past the end", mangle(udp("10.1.0.1", 53, 0), func(b []byte) []byte { b[14] = 0x4f; return b }), drop, Reason(GuardAgReasonAG_R_TRUNCATED)),
		vc("truncated tcp", packet.Build(tcp("10.1.0.1", 80, packet.SYN))[:14+20+10], drop, Reason(GuardAgReasonAG_R_TRUNCATED)),
		vc("tcp doff below 5", mangle(tcp("10.1.0.1", 80, packet.SYN), func(b []byte) []byte { b[14+20+12] = 0x40; return b }), drop, Reason(GuardAgReasonAG_R_MALFORMED)),
		vc("truncated udp", packet.Build(udp("10.1.0.1", 53, 0))[:14+20+4], drop, Reason(GuardAgReasonAG_R_TRUNCATED)),
		vc("ipv4 with 40 bytes of options", packet.Build(opts(udp("10.1.0.2", 53, 10), 40)), pass, Reason(GuardAgReasonAG_R_OK)),
		vc("one vlan tag", packet.Build(vlan(tcp("10.1.0.3", 80, packet.SYN), 100)), pass, Reason(GuardAgReasonAG_R_OK)),
		vc("two vlan tags", packet.Build(vlan(tcp("10.1.0.4", 80, packet.SYN), 100, 200)), pass, Reason(GuardAgReasonAG_R_OK)),
		vc("vlan tagged deny", packet.Build(vlan(tcp("198.51.100.1", 80, packet.SYN), 100, 200)), drop, Reason(GuardAgReasonAG_R_DENY)),
		vc("truncated vlan", packet.Build(vlan(tcp("10.1.0.4", 80, packet.SYN), 100))[:16], drop, Reason(GuardAgReasonAG_R_TRUNCATED)),
		vc("ipv6 bad version", mangle(udp("2001:db8:1::1", 53, 0), func(b []byte) []byte { b[14] = 0x40; return b }), drop, Reason(GuardAgReasonAG_R_MALFORMED)),
		vc("ipv6 extension headers", packet.Build(ext(udp("2001:db8:1::2", 53, 10), packet.HopByHop, packet.DestOpts, packet.Routing)), pass, Reason(GuardAgReasonAG_R_OK)),
		vc("ipv6 too many extension headers", packet.Build(ext(udp("2001:db8:1::3", 53, 10), seven...)), drop, Reason(GuardAgReasonAG_R_EXT_LIMIT)),
		vc("ipv6 truncated extension header", packet.Build(ext(udp("2001:db8:1::3", 53, 0), packet.HopByHop))[:14+40+4], drop, Reason(GuardAgReasonAG_R_TRUNCATED)),
		// no stack sends one, and its keys would be those of the IPv4 address it names
		vc("ipv6 from an ipv4-mapped source", packet.Build(udp("::ffff:10.1.0.1", 53, 0)), drop, Reason(GuardAgReasonAG_R_MALFORMED)),

		// fragments: the first is judged on L4, later ones on L3 only
		vc("ipv4 later fragment", packet.Build(frag(udp("10.1.0.5", 4444, 8), 100, false)), pass, Reason(GuardAgReasonAG_R_FRAGMENT)),
		vc("ipv4 later fragment of a denied source", packet.Build(frag(udp("198.51.100.2", 4444, 8), 100, false)), drop, Reason(GuardAgReasonAG_R_DENY)),
		vc("ipv4 first fragment judged on L4", packet.Build(frag(tcp("10.1.0.6", 80, packet.SYN|packet.FIN), 0, true)), drop, Reason(GuardAgReasonAG_R_TCP_FLAGS)),
		vc("ipv6 later fragment", packet.Build(frag(ext(udp("2001:db8:1::4", 53, 8), packet.Fragment), 10, false)), pass, Reason(GuardAgReasonAG_R_FRAGMENT)),
		vc("ipv6 first fragment judged on L4", packet.Build(frag(ext(tcp("2001:db8:1::5", 80, 0), packet.Fragment), 0, true)), drop, Reason(GuardAgReasonAG_R_TCP_FLAGS)),

		// allow and deny
		vc("allow skips everything", packet.Build(tcp("192.0.2.5", 80, 0)), pass, Reason(GuardAgReasonAG_R_ALLOW)),
		vc("deny outside the allowed /28", packet.Build(tcp("192.0.2.16", 80, packet.SYN)), drop, Reason(GuardAgReasonAG_R_DENY)),
		vc("deny ipv4", packet.Build(udp("198.51.100.77", 53, 0)), drop, Reason(GuardAgReasonAG_R_DENY)),
		vc("deny ipv6", packet.Build(udp("2001:db8:dead:5::1", 53, 0)), drop, Reason(GuardAgReasonAG_R_DENY)),
		vc("allow ipv6", packet.Build(udp("2001:db8:a:1::1", 9999, 0)), pass, Reason(GuardAgReasonAG_R_ALLOW)),

		// bans
		vc("banned address", packet.Build(tcp("203.0.113.9", 80, packet.SYN)), drop, Reason(GuardAgReasonAG_R_BAN)),
		vc("banned ipv6 /64", packet.Build(tcp("2001:db8:bad:1::99", 443, packet.SYN)), drop, Reason(GuardAgReasonAG_R_BAN)),
		vc("outside the banned /64", packet.Build(tcp("2001:db8:bad:2::99", 22, packet.SYN)), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),
		vc("expired ban lapses in the kernel", packet.Build(tcp("203.0.113.10", 22, packet.SYN)), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),

		// ICMP and neighbour discovery
		vc("icmp echo", packet.Build(packet.Spec{Src: addr("10.1.0.7"), Dst: guarded4, Proto: packet.ICMP, ICMPType: 8}), pass, Reason(GuardAgReasonAG_R_ICMP)),
		vc("icmp from a banned address", packet.Build(packet.Spec{Src: addr("203.0.113.9"), Dst: guarded4, Proto: packet.ICMP, ICMPType: 8}), drop, Reason(GuardAgReasonAG_R_BAN)),
		vc("neighbour solicitation from a banned prefix", packet.Build(icmp6("2001:db8:bad:1::5", 135)), pass, Reason(GuardAgReasonAG_R_NDP)),
		vc("neighbour solicitation from a denied prefix", packet.Build(icmp6("2001:db8:dead::5", 135)), drop, Reason(GuardAgReasonAG_R_DENY)),
		vc("icmpv6 echo", packet.Build(icmp6("2001:db8:1::6", 128)), pass, Reason(GuardAgReasonAG_R_ICMP)),
		// ICMP is 1 in IPv4 and 58 in IPv6; the other way round the kernel has no handler
		vc("protocol 58 in ipv4 is no neighbour discovery", packet.Build(packet.Spec{Src: addr("203.0.113.9"), Dst: guarded4, Proto: packet.ICMPv6, ICMPType: 135}), drop, Reason(GuardAgReasonAG_R_BAN)),
		vc("protocol 58 in ipv4 is no icmp", packet.Build(packet.Spec{Src: addr("10.1.0.7"), Dst: guarded4, Proto: packet.ICMPv6, ICMPType: 128}), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),
		vc("protocol 1 in ipv6 is no icmp", packet.Build(packet.Spec{Src: addr("2001:db8:1::6"), Dst: guarded6, Proto: packet.ICMP, ICMPType: 8}), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),

		// TCP flag sanity
		vc("null scan", packet.Build(tcp("10.1.0.8", 80, 0)), drop, Reason(GuardAgReasonAG_R_TCP_FLAGS)),
		vc("xmas scan", packet.Build(tcp("10.1.0.8", 80, packet.FIN|packet.PSH|packet.URG)), drop, Reason(GuardAgReasonAG_R_TCP_FLAGS)),
		vc("syn+fin", packet.Build(tcp("10.1.0.8", 22, packet.SYN|packet.FIN)), drop, Reason(GuardAgReasonAG_R_TCP_FLAGS)),
		vc("syn+rst", packet.Build(tcp("10.1.0.8", 22, packet.SYN|packet.RST)), drop, Reason(GuardAgReasonAG_R_TCP_FLAGS)),
		vc("fin without ack", packet.Build(tcp("10.1.0.8", 22, packet.FIN)), drop, Reason(GuardAgReasonAG_R_TCP_FLAGS)),
		vc("fin+ack is fine", packet.Build(tcp("10.1.0.8", 22, packet.FIN|packet.ACK)), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),
		vc("rst alone is fine", packet.Build(tcp("10.1.0.8", 22, packet.RST)), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),

		// service match
		vc("no service", packet.Build(tcp("10.1.0.9", 22, packet.SYN)), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),
		vc("service port in a range", packet.Build(tcp("10.1.0.9", 8081, packet.SYN)), pass, Reason(GuardAgReasonAG_R_OK)),
		vc("right port, wrong protocol", packet.Build(udp("10.1.0.9", 80, 0)), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),
		vc("other ip protocol", packet.Build(packet.Spec{Src: addr("10.1.0.9"), Dst: guarded4, Proto: 47, Payload: 8}), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),
	})
}

func TestTCPFlagSanityOff(t *testing.T) {
	d := newDatapath(t, Options{})
	p := basePolicy()
	p.TCPFlagSanity = false
	mustApply(t, d, p)
	checkVerdicts(t, d, []verdictCase{
		vc("null scan passes", packet.Build(tcp("10.1.0.8", 80, 0)), pass, Reason(GuardAgReasonAG_R_OK)),
	})
}

func TestDefaultDrop(t *testing.T) {
	d := newDatapath(t, Options{})
	p := basePolicy()
	p.DefaultDrop = true
	mustApply(t, d, p)
	checkVerdicts(t, d, []verdictCase{
		vc("no service dropped", packet.Build(tcp("10.1.0.9", 22, packet.SYN)), drop, Reason(GuardAgReasonAG_R_NO_SERVICE)),
		vc("service still passes", packet.Build(tcp("10.1.0.9", 80, packet.SYN)), pass, Reason(GuardAgReasonAG_R_OK)),
		vc("dhcp reply passes", packet.Build(packet.Spec{Src: addr("10.1.0.254"), Dst: guarded4, Proto: packet.UDP, SrcPort: 67, DstPort: 68}), pass, Reason(GuardAgReasonAG_R_HOST)),
		vc("dhcpv6 reply passes", packet.Build(packet.Spec{Src: addr("fe80::1"), Dst: guarded6, Proto: packet.UDP, SrcPort: 547, DstPort: 546}), pass, Reason(GuardAgReasonAG_R_HOST)),
		vc("port 68 from elsewhere is dropped", packet.Build(packet.Spec{Src: addr("10.1.0.254"), Dst: guarded4, Proto: packet.UDP, SrcPort: 5353, DstPort: 68}), drop, Reason(GuardAgReasonAG_R_NO_SERVICE)),
		vc("icmp still passes", packet.Build(packet.Spec{Src: addr("10.1.0.7"), Dst: guarded4, Proto: packet.ICMP, ICMPType: 8}), pass, Reason(GuardAgReasonAG_R_ICMP)),
	})
}

func TestGlobalMonitor(t *testing.T) {
	d := newDatapath(t, Options{})
	p := basePolicy()
	p.Monitor = true
	mustApply(t, d, p)
	checkVerdicts(t, d, []verdictCase{
		vc("deny becomes monitor", packet.Build(udp("198.51.100.77", 53, 0)), monitor, Reason(GuardAgReasonAG_R_DENY)),
		vc("flags become monitor", packet.Build(tcp("10.1.0.8", 80, 0)), monitor, Reason(GuardAgReasonAG_R_TCP_FLAGS)),
		vc("malformed becomes monitor", packet.Build(udp("10.1.0.1", 53, 0))[:14+12], monitor, Reason(GuardAgReasonAG_R_TRUNCATED)),
	})
}

// burstCase sends frames in order and expects the listed verdicts, then checks
// the client's state in the map.
type burstCase struct {
	name    string
	frames  []packet.Spec
	verdict []Reason // ok, or the limit reason that dropped it
	action  Action   // for the drops
	client  string   // whose state to check ("" for none)
	service uint32
	drops   uint64
}

func repeat(s packet.Spec, n int) []packet.Spec {
	out := make([]packet.Spec, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestLimits(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	ok := Reason(GuardAgReasonAG_R_OK)
	srcs := func(s packet.Spec, addrs ...string) []packet.Spec {
		out := make([]packet.Spec, len(addrs))
		for i, a := range addrs {
			out[i] = s
			out[i].Src = addr(a)
			if out[i].Src.Is6() {
				out[i].Dst = guarded6
			}
		}
		return out
	}
	cases := []burstCase{
		{name: "client packets burst", frames: repeat(tcp("10.2.0.1", 80, packet.ACK), 6),
			verdict: []Reason{ok, ok, ok, ok, ok, Reason(GuardAgReasonAG_R_CLIENT_PPS)}, action: ActionDrop,
			client: "10.2.0.1", service: svcHTTP, drops: 1},
		{name: "client bytes burst", frames: repeat(udp("10.2.0.2", 53, 1472), 3),
			verdict: []Reason{ok, ok, Reason(GuardAgReasonAG_R_CLIENT_BPS)}, action: ActionDrop,
			client: "10.2.0.2", service: svcDNS, drops: 1},
		{name: "client new connections", frames: append(repeat(tcp("10.2.0.3", 443, packet.SYN), 3), tcp("10.2.0.3", 443, packet.ACK)),
			verdict: []Reason{ok, ok, Reason(GuardAgReasonAG_R_CLIENT_CPS), ok}, action: ActionDrop,
			client: "10.2.0.3", service: svcAPI, drops: 1},
		{name: "prefix bucket across addresses", frames: srcs(tcp("10.0.0.1", 9000, packet.ACK), "10.3.0.1", "10.3.0.2", "10.3.0.3", "10.3.0.4", "10.3.1.1"),
			verdict: []Reason{ok, ok, ok, Reason(GuardAgReasonAG_R_PREFIX_PPS), ok}, action: ActionDrop,
			client: "10.3.0.3", service: svcPfx, drops: 0},
		{name: "service total across addresses", frames: srcs(udp("10.0.0.1", 9001, 0), "10.4.0.1", "10.4.1.1", "10.4.2.1", "10.4.3.1", "10.4.4.1"),
			verdict: []Reason{ok, ok, ok, ok, Reason(GuardAgReasonAG_R_SERVICE_PPS)}, action: ActionDrop,
			client: "10.4.3.1", service: svcTotal, drops: 0},
		{name: "monitor service counts and passes", frames: repeat(tcp("10.5.0.1", 9002, packet.ACK), 2),
			verdict: []Reason{ok, Reason(GuardAgReasonAG_R_CLIENT_PPS)}, action: ActionMonitor,
			client: "10.5.0.1", service: svcMon, drops: 1},
		{name: "ipv6 client is its /64", frames: srcs(tcp("10.0.0.1", 80, packet.ACK), "2001:db8:5::1", "2001:db8:5::2", "2001:db8:5::3", "2001:db8:5::4", "2001:db8:5::5", "2001:db8:5::6", "2001:db8:5:1::1"),
			verdict: []Reason{ok, ok, ok, ok, ok, Reason(GuardAgReasonAG_R_CLIENT_PPS), ok}, action: ActionDrop,
			client: "2001:db8:5::", service: svcHTTP, drops: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i, s := range c.frames {
				before := counterMap(t, d)
				ret := runXDP(t, d, packet.Build(s))
				a, r, _ := counterDelta(t, before, counterMap(t, d))
				want := c.verdict[i]
				wantAction, wantRet := ActionPass, uint32(xdpPass)
				if want != ok {
					wantAction = c.action
					if c.action == ActionDrop {
						wantRet = xdpDrop
					}
				}
				if ret != wantRet || a != wantAction || r != want {
					t.Fatalf("packet %d from %v: got ret %d %v/%v, want ret %d %v/%v", i, s.Src, ret, a, r, wantRet, wantAction, want)
				}
			}
			if c.client == "" {
				return
			}
			cl := findClient(t, d, addr(c.client), c.service)
			if cl.Drops != c.drops {
				t.Errorf("client %s drops = %d, want %d", c.client, cl.Drops, c.drops)
			}
			if cl.LastSeen.Before(cl.FirstSeen) || time.Since(cl.LastSeen) > time.Minute {
				t.Errorf("client %s seen %v..%v: not now", c.client, cl.FirstSeen, cl.LastSeen)
			}
		})
	}
}

func findClient(t *testing.T, d *Datapath, a netip.Addr, service uint32) Client {
	t.Helper()
	var found *Client
	err := d.Clients(func(c Client) error {
		if c.Addr.Contains(a) && c.Service == service {
			found = &c
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == nil {
		t.Fatalf("no state for client %v service %d", a, service)
	}
	return *found
}

// A ban with an expiry lapses on time in the kernel, with nobody deleting it.
func TestBanExpiresInKernel(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	if err := d.Ban(Ban{Prefix: pfx("203.0.113.50/32"), Expires: time.Now().Add(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	frame := packet.Build(tcp("203.0.113.50", 22, packet.SYN))
	if got := runXDP(t, d, frame); got != xdpDrop {
		t.Fatalf("banned packet: ret %d, want drop", got)
	}
	deadline := time.Now().Add(3 * time.Second)
	for runXDP(t, d, frame) != xdpPass {
		if time.Now().After(deadline) {
			t.Fatal("ban did not lapse within 3s of a 300ms ttl")
		}
		time.Sleep(50 * time.Millisecond)
	}
	bans, err := d.Bans()
	if err != nil || len(bans) != 1 {
		t.Fatalf("bans before sweep: %v %v", bans, err)
	}
	gone, err := d.SweepBans(time.Now())
	if err != nil || len(gone) != 1 {
		t.Fatalf("sweep: %v %v", gone, err)
	}
	if err := d.Unban(pfx("203.0.113.50/32")); err == nil {
		t.Fatal("unban of a swept ban succeeded")
	}
}

// An address inside several bans is banned while any of them is in force: an
// expired ban the sweeper has not removed yet (the detector's host ban inside
// its prefix ban) does not hide a wider one.
func TestExpiredBanNeverHidesAWiderOne(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	past := time.Now().Add(-time.Minute)
	for _, b := range []Ban{
		{Prefix: pfx("198.18.0.0/15")},                                     // forever
		{Prefix: pfx("198.18.1.0/24"), Expires: time.Now().Add(time.Hour)}, // in force
		{Prefix: pfx("198.18.1.1/32"), Expires: past},
		{Prefix: pfx("198.18.2.0/24"), Expires: past},
		{Prefix: pfx("198.18.2.0/28"), Expires: past},
		{Prefix: pfx("198.18.2.1/32"), Expires: past},
		{Prefix: pfx("2001:db8:bad::/48")},
		{Prefix: pfx("2001:db8:bad:1::/64"), Expires: past},
		{Prefix: pfx("100.64.0.0/16"), Expires: past},
		{Prefix: pfx("100.64.1.1/32"), Expires: past},
	} {
		if err := d.Ban(b); err != nil {
			t.Fatal(err)
		}
	}
	ban, none := Reason(GuardAgReasonAG_R_BAN), Reason(GuardAgReasonAG_R_NO_SERVICE)
	checkVerdicts(t, d, []verdictCase{
		vc("expired host ban inside a ban in force", packet.Build(tcp("198.18.1.1", 22, packet.SYN)), drop, ban),
		vc("three expired bans inside one in force", packet.Build(tcp("198.18.2.1", 22, packet.SYN)), drop, ban),
		vc("expired ipv6 /64 inside a /48 in force", packet.Build(tcp("2001:db8:bad:1::5", 22, packet.SYN)), drop, ban),
		vc("nothing in force around an expired ban", packet.Build(tcp("100.64.1.1", 22, packet.SYN)), pass, none),
	})
}

func spoofedFlood(t *testing.T, d *Datapath, sources int) (passed int) {
	t.Helper()
	for i := 0; i < sources; i++ {
		s := udp("10.0.0.1", 9001, 0)
		s.Src = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if runXDP(t, d, packet.Build(s)) == xdpPass {
			passed++
		}
	}
	return passed
}

// A random-source flood over the service total is dropped by a read-only check
// before any per-client state exists: it cannot churn the client LRU at all.
func TestSpoofedFloodOverTotalCreatesNoState(t *testing.T) {
	const capacity = 1024
	d := newDatapath(t, Options{ClientCapacity: capacity})
	mustApply(t, d, &Policy{Services: []Service{{ID: 1, Name: "udp", Proto: ProtoUDP, Ports: []PortRange{{9001, 9001}},
		Client: Limits{Packets: Rate{PerSecond: 100, Burst: 100}},
		Total:  Limits{Packets: Rate{PerSecond: 1, Burst: 200}}}}})
	const sources = 8 * capacity
	passed := spoofedFlood(t, d, sources)
	if passed < 200 || passed > 202 {
		t.Fatalf("%d of %d spoofed packets passed, want the service total's burst of 200", passed, sources)
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.ClientInserts != uint64(passed) {
		t.Errorf("client inserts %d, want one per admitted packet (%d)", st.ClientInserts, passed)
	}
	if n := counterMap(t, d)[[2]uint8{uint8(ActionDrop), uint8(GuardAgReasonAG_R_SERVICE_PPS)}]; n != uint64(sources-passed) {
		t.Errorf("service_pps drops %d, want %d", n, sources-passed)
	}
}

// When a spoofed flood stays under the total, it churns the client LRU: the
// prefix buckets still hold, and the churn is counted and reported.
func TestSpoofedChurnKeepsPrefixLimit(t *testing.T) {
	const capacity = 1024
	d := newDatapath(t, Options{ClientCapacity: capacity})
	mustApply(t, d, &Policy{Services: []Service{{ID: 1, Name: "udp", Proto: ProtoUDP, Ports: []PortRange{{9001, 9001}},
		Client: Limits{Packets: Rate{PerSecond: 100, Burst: 100}},
		Prefix: Limits{Packets: Rate{PerSecond: 1, Burst: 50}}}}})
	const sources = 8 * capacity // 32 /24 prefixes of 256 sources
	passed := spoofedFlood(t, d, sources)
	if passed < 32*50 || passed > 32*52 {
		t.Fatalf("%d of %d spoofed packets passed, want 50 per /24 (1600)", passed, sources)
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.ClientInserts != uint64(passed) || st.ClientInserts <= capacity {
		t.Errorf("client inserts %d, want %d (more than the %d the map holds)", st.ClientInserts, passed, capacity)
	}
	var entries int
	if err := d.Clients(func(Client) error { entries++; return nil }); err != nil {
		t.Fatal(err)
	}
	if entries > capacity {
		t.Errorf("%d client entries in a map of %d", entries, capacity)
	}
	pressure := 0
	for _, e := range readEvents(t, d, 100_000) {
		if EventType(e.Type).String() == "map_pressure" {
			pressure++
		}
	}
	if pressure == 0 {
		st, _ := d.Stats()
		t.Errorf("no map_pressure event while the client LRU was evicting (stats %+v)", st)
	}
}

// The service's new-connection total holds for everyone: a source that sent
// data before (which a blind spoofer can do with one ACK) is refused like a new
// one once the total is exhausted.
func TestConnectionTotalHoldsForKnownSources(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, &Policy{Services: []Service{{ID: 1, Name: "api", Proto: ProtoTCP, Ports: []PortRange{{443, 443}},
		Total: Limits{Conns: Rate{PerSecond: 1, Burst: 2}}}}})
	ok, svcCPS := Reason(GuardAgReasonAG_R_OK), Reason(GuardAgReasonAG_R_SERVICE_CPS)
	checkVerdicts(t, d, []verdictCase{
		vc("primed source's ACK", packet.Build(tcp("10.9.1.1", 443, packet.ACK)), pass, ok),
		vc("new source 1", packet.Build(tcp("10.9.2.1", 443, packet.SYN)), pass, ok),
		vc("new source 2", packet.Build(tcp("10.9.2.2", 443, packet.SYN)), pass, ok),
		vc("new source 3: total exhausted", packet.Build(tcp("10.9.2.3", 443, packet.SYN)), drop, svcCPS),
		vc("primed source's SYN: refused too", packet.Build(tcp("10.9.1.1", 443, packet.SYN)), drop, svcCPS),
		vc("data still flows", packet.Build(tcp("10.9.1.1", 443, packet.ACK)), pass, ok),
	})
}

// A source a packet-rate bucket refused is dropped right after parsing until
// the bucket would accept it again; its drops still reach its client state,
// and a new policy forgets every refusal.
func TestRefusalMemory(t *testing.T) {
	testenv.OnOneCPU(t) // the memory is per CPU: the count below assumes one
	d := newDatapath(t, Options{})
	p := &Policy{Services: []Service{{ID: 1, Name: "udp", Proto: ProtoUDP, Ports: []PortRange{{9001, 9001}},
		Client: Limits{Packets: Rate{PerSecond: 1, Burst: 1}}}}}
	mustApply(t, d, p)
	frame := packet.Build(udp("10.11.0.1", 9001, 0))
	if runXDP(t, d, frame) != xdpPass {
		t.Fatal("first packet refused")
	}
	for i := 0; i < 50; i++ {
		if runXDP(t, d, frame) != xdpDrop {
			t.Fatalf("packet %d passed a bucket with no room", i+2)
		}
	}
	c := findClient(t, d, addr("10.11.0.1"), 1)
	if c.Packets != 51 || c.Drops != 50 {
		t.Fatalf("client state %d packets %d drops, want 51 and 50", c.Packets, c.Drops)
	}
	// the limiter refused the first drop; the memory made the other 49
	var per []GuardAgRefusal
	slot := refusalSlot(addr("10.11.0.1"), packet.UDP, 9001, d.objs.Refusals.MaxEntries())
	if err := d.objs.Refusals.Lookup(slot, &per); err != nil {
		t.Fatal(err)
	}
	var fromMemory uint64
	for _, r := range per {
		fromMemory += r.Packets
	}
	if fromMemory != 49 {
		t.Fatalf("the refusal memory dropped %d packets, want 49", fromMemory)
	}
	// 1/s: the bucket has room again a second after the first packet (and
	// not before, however slow the 50 runs above were)
	time.Sleep(1100 * time.Millisecond)
	if runXDP(t, d, frame) != xdpPass {
		t.Fatal("refused after the bucket had room again")
	}
	if runXDP(t, d, frame) != xdpDrop {
		t.Fatal("second packet of the new interval passed")
	}
	// a new policy without the limit: the remembered refusal must not outlive it
	p.Services[0].Client = Limits{}
	mustApply(t, d, p)
	if runXDP(t, d, frame) != xdpPass {
		t.Fatal("a refusal outlived the policy that made it")
	}
	c = findClient(t, d, addr("10.11.0.1"), 1)
	if c.Packets != 54 || c.Drops != 51 {
		t.Fatalf("client state %d packets %d drops, want 54 and 51", c.Packets, c.Drops)
	}
}

// refusalSlot mirrors the datapath's slot hash (bpf/include/addr.h addr_hash,
// seeded as refusals.h refusal_slot seeds it),
// only to build a source that shares a victim's slot.
func refusalSlot(a netip.Addr, proto uint8, dport uint16, slots uint32) uint32 {
	b := a.As16()
	w := func(i int) uint64 { return uint64(binary.LittleEndian.Uint32(b[4*i:])) }
	h := (uint64(proto)<<16 | uint64(dport)) * 0x9e3779b97f4a7c15
	h ^= w(0) * 0xc2b2ae3d27d4eb4f
	h ^= w(1) * 0x165667b19e3779f9
	h ^= w(2) * 0x27d4eb2f165667c5
	h ^= w(3) * 0x94d049bb133111eb
	return uint32((h ^ (h >> 29)) & uint64(slots-1))
}

// The refusal memory matches its source exactly: another source in the same
// slot is judged normally, and an allow-listed source is never refused, even
// while the service's total refuses everyone else.
func TestRefusalMemoryIsExact(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, &Policy{
		Allow: []netip.Prefix{pfx("198.51.100.7/32")},
		Services: []Service{{ID: 1, Name: "udp", Proto: ProtoUDP, Ports: []PortRange{{9001, 9001}},
			Client: Limits{Packets: Rate{PerSecond: 1, Burst: 1}},
			Total:  Limits{Packets: Rate{PerSecond: 1, Burst: 3}}}}})
	attacker := addr("10.12.0.1")
	slots := d.objs.Refusals.MaxEntries()
	slot := refusalSlot(attacker, packet.UDP, 9001, slots)
	var twin netip.Addr
	for i := 2; i < 1<<20; i++ {
		c := netip.AddrFrom4([4]byte{10, 13, byte(i >> 8), byte(i)})
		if refusalSlot(c, packet.UDP, 9001, slots) == slot {
			twin = c
			break
		}
	}
	if !twin.IsValid() {
		t.Fatal("no source found in the attacker's slot")
	}
	from := func(a netip.Addr) []byte { s := udp("10.0.0.1", 9001, 0); s.Src = a; return packet.Build(s) }
	ok := Reason(GuardAgReasonAG_R_OK)
	checkVerdicts(t, d, []verdictCase{
		vc("attacker's first", from(attacker), pass, ok),
		vc("attacker refused", from(attacker), drop, Reason(GuardAgReasonAG_R_CLIENT_PPS)),
	})
	// the mirrored hash found the slot the kernel uses: the twin really collides
	var per []GuardAgRefusal
	if err := d.objs.Refusals.Lookup(slot, &per); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range per {
		found = found || netip.AddrFrom16(r.Addr).Unmap() == attacker
	}
	if !found {
		t.Fatalf("the attacker's refusal is not in slot %d: the test's hash no longer mirrors the datapath's", slot)
	}
	checkVerdicts(t, d, []verdictCase{
		vc("attacker refused from memory", from(attacker), drop, Reason(GuardAgReasonAG_R_CLIENT_PPS)),
		vc("same slot, other source", from(twin), pass, ok),
		vc("third source exhausts the total", from(addr("10.14.0.1")), pass, ok),
		vc("total refuses a fourth", from(addr("10.14.0.2")), drop, Reason(GuardAgReasonAG_R_SERVICE_PPS)),
		vc("allow-listed source still passes", from(addr("198.51.100.7")), pass, Reason(GuardAgReasonAG_R_ALLOW)),
	})
}
