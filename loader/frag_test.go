package loader

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/test/packet"
)

// Service ids of the fragment policy.
const (
	fragBytes  = 1 // udp 9100: client 1000 B/s, burst 3028 (two full frames)
	fragTCP    = 2 // tcp 80, no limits
	fragBudget = 3 // udp 9200: a budget of 3 fragments
	fragACL    = 4 // udp 9300: only 10.30.0.0/16, in monitor mode
)

func fragPolicy(defaultDrop bool) *Policy {
	return &Policy{
		TCPFlagSanity: true,
		DefaultDrop:   defaultDrop,
		Allow:         []netip.Prefix{pfx("192.0.2.0/28")},
		Deny:          []netip.Prefix{pfx("198.51.100.0/24")},
		Services: []Service{
			{ID: fragBytes, Name: "bytes", Proto: ProtoUDP, Ports: []PortRange{{9100, 9100}},
				Client: Limits{Bytes: Rate{PerSecond: 1000, Burst: 3028}}},
			{ID: fragTCP, Name: "tcp", Proto: ProtoTCP, Ports: []PortRange{{80, 80}}},
			{ID: fragBudget, Name: "budget", Proto: ProtoUDP, Ports: []PortRange{{9200, 9200}},
				Fragments: Rate{PerSecond: 1, Burst: 3}},
			{ID: fragACL, Name: "acl", Proto: ProtoUDP, Ports: []PortRange{{9300, 9300}}, Monitor: true,
				ACL: []netip.Prefix{pfx("10.30.0.0/16")}},
		},
	}
}

// first is the first fragment of datagram id: its L4 header and payload bytes.
func first(s packet.Spec, id uint32, payload int) packet.Spec {
	s.FragID, s.MoreFragments, s.Payload = id, true, payload
	return s
}

// later is a later fragment of datagram id at offset off (8-byte units), of
// frame bytes in all (an IPv4 frame without options).
func later(s packet.Spec, id uint32, off uint16, frame int) packet.Spec {
	s.FragID, s.FragOffset, s.MoreFragments = id, off, true
	s.Payload = frame - 14 - 20 - l4Len(s.Proto)
	if s.Src.Is6() {
		s.Payload -= 20 + 8 // a longer IP header and the fragment header
	}
	return s
}

func l4Len(proto uint8) int {
	switch proto {
	case packet.TCP:
		return 20
	case packet.UDP, packet.ICMP, packet.ICMPv6:
		return 8
	}
	return 0
}

func v6frag(s packet.Spec) packet.Spec {
	s.IPv6Ext = append(s.IPv6Ext, packet.Fragment)
	return s
}

// A later fragment is judged by its first fragment: it follows it to its
// service and is charged there in full; without a first fragment let through
// it belongs to no service and defaultAction decides.
func TestFragments(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, fragPolicy(false))
	ok, orphan := Reason(GuardAgReasonAG_R_OK), Reason(GuardAgReasonAG_R_FRAGMENT)
	a := udp("10.20.0.1", 9100, 0)

	checkVerdicts(t, d, []verdictCase{
		vc("a tiny first fragment passes", packet.Build(first(a, 1, 8)), pass, ok),
		vc("a full later fragment follows it", packet.Build(later(a, 1, 100, 1514)), pass, ok),
	})
	// the client paid for both, the later one in full
	small := uint64(len(packet.Build(first(a, 1, 8))))
	if c := findClient(t, d, addr("10.20.0.1"), fragBytes); c.Packets != 2 || c.Bytes != small+1514 {
		t.Fatalf("client state %d packets %d bytes, want 2 and %d", c.Packets, c.Bytes, small+1514)
	}
	other := func(s packet.Spec, fn func(*packet.Spec)) []byte { fn(&s); return packet.Build(s) }
	checkVerdicts(t, d, []verdictCase{
		// 3028 B of burst: the first fragment and one full one fit, two do not
		vc("the next full fragment is over the client's bytes", packet.Build(later(a, 1, 285, 1514)), drop, Reason(GuardAgReasonAG_R_CLIENT_BPS)),
		// the key is exact: nobody borrows (or pays for) another's datagram
		vc("same id from another source", other(later(a, 1, 100, 1514), func(s *packet.Spec) { s.Src = addr("10.20.0.2") }), pass, orphan),
		vc("same id to another destination", other(later(a, 1, 100, 1514), func(s *packet.Spec) { s.Dst = addr("192.0.2.201") }), pass, orphan),
		vc("same id, another IPv4 protocol", other(later(a, 1, 100, 1514), func(s *packet.Spec) { s.Proto = packet.TCP }), pass, orphan),
		vc("another id", packet.Build(later(a, 2, 100, 1514)), pass, orphan),
		vc("a denied source's later fragment", packet.Build(later(udp("198.51.100.1", 9100, 0), 1, 100, 100)), drop, Reason(GuardAgReasonAG_R_DENY)),
		// IPv4 first fragments carry their L4 header in full, or are refused
		vc("a first fragment cut inside its TCP header", packet.Build(first(tcp("10.20.0.3", 80, packet.SYN), 3, 0))[:14+20+8], drop, Reason(GuardAgReasonAG_R_TRUNCATED)),
		// RFC 1858's tiny fragment: the header is cut by the total length,
		// and the frame goes on with bytes that read as an ACK
		vc("a first fragment whose total length cuts its TCP header", totalLen(packet.Build(first(tcp("10.20.0.3", 80, packet.ACK), 4, 0)), 20+8), drop, Reason(GuardAgReasonAG_R_TRUNCATED)),
		vc("a whole packet whose total length cuts its TCP header", totalLen(packet.Build(tcp("10.20.0.3", 80, packet.ACK)), 20+19), drop, Reason(GuardAgReasonAG_R_TRUNCATED)),
		vc("a total length shorter than the IP header", totalLen(packet.Build(tcp("10.20.0.3", 80, packet.ACK)), 19), drop, Reason(GuardAgReasonAG_R_MALFORMED)),
		vc("a total length that holds the header exactly", totalLen(packet.Build(tcp("10.20.0.3", 80, packet.ACK)), 20+20), pass, ok),
		vc("a UDP first fragment of 8 bytes holds its header", packet.Build(first(udp("10.20.0.9", 9100, 0), 14, 0)), pass, ok),
		// 0 is a GRO aggregate's only on a TC GSO skb (TestZeroLengthOnlyForGSO);
		// at XDP the header is longer than it, as ip_rcv finds
		vc("a total length of 0 at XDP", totalLen(packet.Build(tcp("10.20.0.3", 80, packet.ACK)), 0), drop, Reason(GuardAgReasonAG_R_MALFORMED)),
	})

	// IPv6: reassembled by addresses and id alone
	b := udp("2001:db8:20::1", 9100, 0)
	bl := v6frag(later(b, 7, 100, 600))
	bl.Proto = 59 // RFC 8200: only the first fragment's next header counts
	atomic := v6frag(udp("2001:db8:21::2", 9100, 10))
	before := stats(t, d).FragInserts
	checkVerdicts(t, d, []verdictCase{
		vc("ipv6 first fragment", packet.Build(v6frag(first(b, 7, 16))), pass, ok),
		vc("ipv6 later fragment with another next header follows it", packet.Build(bl), pass, ok),
		vc("ipv6 atomic fragment is a whole packet", packet.Build(atomic), pass, ok),
		vc("ipv6 fragment header twice", packet.Build(withExt(first(udp("2001:db8:22::3", 9100, 0), 8, 16), packet.Fragment, packet.Fragment)), drop, Reason(GuardAgReasonAG_R_MALFORMED)),
		vc("an allow-listed source's first fragment", packet.Build(first(udp("192.0.2.5", 9100, 0), 9, 16)), pass, Reason(GuardAgReasonAG_R_ALLOW)),
		vc("and its later fragment", packet.Build(later(udp("192.0.2.5", 9100, 0), 9, 100, 200)), pass, Reason(GuardAgReasonAG_R_ALLOW)),
	})
	if n := stats(t, d).FragInserts - before; n != 1 {
		t.Errorf("%d datagrams entered in the fragment table, want 1 (the ipv6 one: atomic and allow-listed ones need none)", n)
	}
	if c := findClient(t, d, addr("2001:db8:20::1"), fragBytes); c.Packets != 2 {
		t.Errorf("ipv6 client paid for %d packets, want 2", c.Packets)
	}

	// under defaultAction: drop, an orphan is dropped; ICMP keeps passing
	mustApply(t, d, fragPolicy(true))
	ping := packet.Spec{Src: addr("10.20.0.4"), Dst: guarded4, Proto: packet.ICMP, ICMPType: 8}
	checkVerdicts(t, d, []verdictCase{
		vc("orphan under defaultAction drop", packet.Build(later(a, 5, 100, 1514)), drop, orphan),
		vc("icmp first fragment", packet.Build(first(ping, 6, 1000)), pass, Reason(GuardAgReasonAG_R_ICMP)),
		vc("icmp later fragment follows it", packet.Build(later(ping, 6, 126, 800)), pass, Reason(GuardAgReasonAG_R_ICMP)),
		vc("a first fragment with bad flags", packet.Build(first(tcp("10.20.0.5", 80, 0), 10, 8)), drop, Reason(GuardAgReasonAG_R_TCP_FLAGS)),
		vc("leads none of its later fragments", packet.Build(later(tcp("10.20.0.5", 80, 0), 10, 100, 600)), drop, orphan),
		vc("a first fragment to no service", packet.Build(first(udp("10.20.0.6", 7, 0), 11, 8)), drop, Reason(GuardAgReasonAG_R_NO_SERVICE)),
		vc("leads none either", packet.Build(later(udp("10.20.0.6", 7, 0), 11, 100, 600)), drop, orphan),
		// a monitored drop lets the datagram through: its fragments follow
		vc("a first fragment outside a monitored ACL", packet.Build(first(udp("10.20.0.7", 9300, 0), 12, 8)), monitor, Reason(GuardAgReasonAG_R_ACL)),
		vc("its later fragment is judged like it", packet.Build(later(udp("10.20.0.7", 9300, 0), 12, 100, 600)), monitor, Reason(GuardAgReasonAG_R_ACL)),
	})

	// a later fragment takes its first fragment's ports under the policy in
	// force: with the service gone, defaultAction decides
	mustApply(t, d, fragPolicy(false))
	checkVerdicts(t, d, []verdictCase{
		vc("first fragment to the tcp service", packet.Build(first(tcp("10.20.0.8", 80, packet.ACK), 13, 8)), pass, ok),
	})
	p := fragPolicy(true)
	p.Services = p.Services[:1]
	mustApply(t, d, p)
	checkVerdicts(t, d, []verdictCase{
		vc("its later fragment once the service is gone", packet.Build(later(tcp("10.20.0.8", 80, packet.ACK), 13, 100, 600)), drop, Reason(GuardAgReasonAG_R_NO_SERVICE)),
	})
}

// totalLen rewrites an IPv4 frame's total length (the frame keeps its bytes).
func totalLen(frame []byte, n uint16) []byte {
	binary.BigEndian.PutUint16(frame[14+2:], n)
	return frame
}

func withExt(s packet.Spec, hs ...uint8) packet.Spec { s.IPv6Ext = hs; return s }

// Sending the large fragments first and the small first fragment last buys
// nothing: the first fragment pays for those that went ahead of it.
func TestFragmentsAheadOfTheirFirst(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, fragPolicy(false))
	ok, orphan := Reason(GuardAgReasonAG_R_OK), Reason(GuardAgReasonAG_R_FRAGMENT)
	a := udp("10.21.0.1", 9100, 0)
	checkVerdicts(t, d, []verdictCase{
		vc("a full later fragment, ahead of its first", packet.Build(later(a, 1, 185, 1514)), pass, orphan),
		vc("another one", packet.Build(later(a, 1, 370, 1514)), pass, orphan),
		// 60 + 2 x 1514 bytes: over the 3028 of burst
		vc("the first fragment pays for them", packet.Build(first(a, 1, 8)), drop, Reason(GuardAgReasonAG_R_CLIENT_BPS)),
	})
	// and only once: the next datagram's first fragment pays its own way
	b := udp("10.21.0.2", 9100, 0)
	checkVerdicts(t, d, []verdictCase{
		vc("one later fragment ahead", packet.Build(later(b, 2, 185, 1514)), pass, orphan),
		vc("its first fragment pays for both", packet.Build(first(b, 2, 8)), pass, ok),
		vc("a duplicate first fragment pays its own length", packet.Build(first(b, 2, 8)), pass, ok),
	})
	small := uint64(len(packet.Build(first(b, 2, 8))))
	if c := findClient(t, d, addr("10.21.0.2"), fragBytes); c.Packets != 3 || c.Bytes != 2*small+1514 {
		t.Fatalf("client state %d packets %d bytes, want 3 and %d", c.Packets, c.Bytes, 2*small+1514)
	}
}

// A service's fragment budget bounds its fragments, first and later, from
// every client together; whole packets do not touch it.
func TestFragmentBudget(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, fragPolicy(false))
	ok, over := Reason(GuardAgReasonAG_R_OK), Reason(GuardAgReasonAG_R_FRAG_BUDGET)
	from := func(src string) packet.Spec { return udp(src, 9200, 0) }
	checkVerdicts(t, d, []verdictCase{
		vc("first fragment", packet.Build(first(from("10.22.0.1"), 1, 8)), pass, ok),
		vc("its later fragment", packet.Build(later(from("10.22.0.1"), 1, 100, 600)), pass, ok),
		vc("another client's first fragment", packet.Build(first(from("10.22.0.2"), 1, 8)), pass, ok),
		vc("a fourth fragment", packet.Build(later(from("10.22.0.2"), 1, 100, 600)), drop, over),
		vc("a whole packet", packet.Build(from("10.22.0.3")), pass, ok),
		vc("a fragment from a third client", packet.Build(first(from("10.22.0.3"), 2, 8)), drop, over),
	})
}

// A datagram's first fragment, once let through, stays its first fragment: the
// kernel keeps the first it gets (another that fits inside it is a duplicate
// and dropped; one that does not discards the whole datagram). A second first
// fragment with other ports, let through and remembered, would lend those to
// the later fragments the host delivers to the first one's port: a tiny first
// fragment to a limited service, then its twin to a port without limits, and
// every full-size later fragment escaped the service's bytes limit.
func TestFragmentFirstCannotBeReplaced(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, fragPolicy(false))
	ok, frag := Reason(GuardAgReasonAG_R_OK), Reason(GuardAgReasonAG_R_FRAGMENT)
	a := udp("10.23.0.1", 9100, 0)
	twin := udp("10.23.0.1", 9999, 0) // no service: passes under defaultAction pass
	b := tcp("2001:db8:23::1", 80, packet.ACK)
	bTwin := udp("2001:db8:23::1", 9100, 0) // IPv6: another protocol, the same datagram
	checkVerdicts(t, d, []verdictCase{
		vc("a tiny first fragment to the limited service", packet.Build(first(a, 1, 8)), pass, ok),
		vc("its twin to a port without a service", packet.Build(first(twin, 1, 8)), drop, frag),
		vc("a full later fragment is charged to the first", packet.Build(later(a, 1, 100, 1514)), pass, ok),
		vc("the next is over the client's bytes", packet.Build(later(a, 1, 285, 1514)), drop, Reason(GuardAgReasonAG_R_CLIENT_BPS)),
		vc("a duplicate with the same ports is no twin", packet.Build(first(a, 1, 8)), pass, ok),
		vc("ipv6 first fragment (tcp)", packet.Build(v6frag(first(b, 2, 8))), pass, ok),
		vc("ipv6 twin with another protocol", packet.Build(v6frag(first(bTwin, 2, 8))), drop, frag),
		vc("another datagram's first fragment is no twin", packet.Build(first(twin, 3, 8)), pass, Reason(GuardAgReasonAG_R_NO_SERVICE)),
	})
}
