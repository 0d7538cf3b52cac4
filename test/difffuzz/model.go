// Package difffuzz checks apiguard's kernel datapath against a model of its
// verdict written from the documentation alone: policies/README.md ("How a
// packet is judged", "How a frame is read", "Fragments") and README.md ("How it
// decides"), never from bpf/. Random and mutated frames go through both, under
// random policies; every disagreement is a bug in one of them, or in the docs.
//
// The model covers what decides a verdict without state: parsing, the allow and
// deny lists, bans, neighbour discovery, ICMP, TCP flag sanity, the service
// match, DHCP replies, defaultAction, allowFrom and monitor mode, plus the one
// piece of state that is deterministic, which first fragments were let through.
// Rate limits and connection caps are left out: the policies it draws have
// none, so no bucket or connection table can decide.
package difffuzz

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// Policy is a policy in the terms of policies/README.md.
type Policy struct {
	Monitor       bool // mode: monitor
	DefaultDrop   bool // defaultAction: drop
	TCPFlagSanity bool
	Allow, Deny   []netip.Prefix
	Services      []Service
}

// Service is one entry of spec.services (without limits).
type Service struct {
	Name      string
	Protocol  string // "tcp" or "udp"
	Ports     [][2]uint16
	Monitor   bool
	AllowFrom []netip.Prefix // empty: every source
}

// Ban is a ban in force (or one whose expiry has passed).
type Ban struct {
	Prefix  netip.Prefix
	Expired bool
}

// Verdict is what happened to a frame: the action and reason labels of
// apiguard_packets_total.
type Verdict struct {
	Action string // pass, drop or monitor
	Reason string
}

// Model judges frames one after the other, as the datapath does.
type Model struct {
	Policy Policy
	Bans   []Ban
	// first fragments let through: "its datagram enters the table with its
	// protocol and ports"
	frags map[fragKey]fragEntry
	// orphans let through, which also take room in the table
	orphans map[fragKey]time.Time
	// entries made so far: "16,384, the least recently used go first"
	inserts int
}

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8 // IPv4 only: "for IPv4 protocol (IPv6 reassembles without it)"
}

type fragEntry struct {
	proto        uint8
	sport, dport uint16
	at           time.Time
	seq          int // inserts before this one
}

// FragmentTTL is how long a first fragment leads its later ones: "enters the
// table with its protocol and ports for 60 seconds".
const FragmentTTL = 60 * time.Second

// Protocol numbers, ethertypes and TCP flags the documentation names.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58

	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	etherARP  = 0x0806
	tag8021Q  = 0x8100
	tag8021AD = 0x88a8
	tagQinQ   = 0x9100

	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
	flagURG = 0x20
)

type fragKind int

const (
	whole fragKind = iota
	firstFrag
	laterFrag
)

// frame is what "How a frame is read" gets out of a frame.
type frame struct {
	fail      string // the reason a frame that cannot be read is dropped under
	notIP     bool
	arp       bool
	arpSender netip.Addr // valid when the ARP frame names its sender
	family    int
	src, dst  netip.Addr
	proto     uint8
	frag      fragKind
	fragID    uint32
	sport     uint16
	dport     uint16
	flags     uint8
	icmpType  uint8
}

// read follows "How a frame is read".
func read(b []byte) frame {
	if len(b) < 14 {
		return frame{fail: "truncated"}
	}
	etype := binary.BigEndian.Uint16(b[12:])
	at := 14
	for tags := 0; tags < 2 && (etype == tag8021Q || etype == tag8021AD); tags++ {
		if len(b) < at+4 {
			return frame{fail: "truncated"}
		}
		etype = binary.BigEndian.Uint16(b[at+2:])
		at += 4
	}
	switch etype {
	case tag8021Q, tag8021AD, tagQinQ:
		return frame{fail: "vlan_stack"}
	case etherIPv4:
		return readIPv4(b[at:])
	case etherIPv6:
		return readIPv6(b[at:])
	case etherARP:
		f := frame{notIP: true, arp: true}
		a := b[at:]
		// the 8-byte header, then sender hardware (6) and protocol (4) addresses
		if len(a) >= 8+6+4 && a[4] == 6 && a[5] == 4 {
			f.arpSender = netip.AddrFrom4([4]byte(a[14:18]))
		}
		return f
	}
	return frame{notIP: true}
}

func readIPv4(b []byte) frame {
	if len(b) < 20 {
		return frame{fail: "truncated"}
	}
	if b[0]>>4 != 4 || b[0]&0x0f < 5 {
		return frame{fail: "malformed"}
	}
	hl := int(b[0]&0x0f) * 4
	if len(b) < hl {
		return frame{fail: "truncated"}
	}
	// "one longer than the total length says is malformed"; "a total length
	// of 0 is malformed" (the fuzzer's frames are no GSO skbs: 0 is never
	// "no limit"); "the transport header is read within the total length"
	total := int(binary.BigEndian.Uint16(b[2:]))
	if hl > total {
		return frame{fail: "malformed"}
	}
	f := frame{family: 4, proto: b[9],
		src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20]))}
	fo := binary.BigEndian.Uint16(b[6:])
	offset, more := fo&0x1fff, fo&0x2000 != 0
	f.fragID = uint32(binary.BigEndian.Uint16(b[4:]))
	switch {
	case offset != 0:
		f.frag = laterFrag
		return f
	case more:
		f.frag = firstFrag
	}
	if total < len(b) {
		b = b[:total]
	}
	return readTransport(b[hl:], f)
}

func readIPv6(b []byte) frame {
	if len(b) < 40 {
		return frame{fail: "truncated"}
	}
	if b[0]>>4 != 6 {
		return frame{fail: "malformed"}
	}
	f := frame{family: 6, src: netip.AddrFrom16([16]byte(b[8:24])), dst: netip.AddrFrom16([16]byte(b[24:40]))}
	if f.src.Is4In6() {
		return frame{fail: "malformed"}
	}
	next := b[6]
	rest := b[40:]
	walked, seenFrag := 0, false
	// "an IPv6 transport header is read within the payload length", "and so
	// is one after a payload length of 0" (no frame here is a GSO skb): what
	// the extension headers leave of it
	left := int(binary.BigEndian.Uint16(b[4:]))
	for {
		cur := next
		var size int
		switch cur {
		case 0, 43, 60: // Hop-by-Hop, Routing, Destination Options
			size = -8
		case 51: // Authentication
			size = -4
		case 44: // Fragment
			size = 8
		default:
			f.proto = cur
			if left < transportLen(f) {
				return frame{fail: "truncated"}
			}
			return readTransport(rest, f)
		}
		if walked == 6 {
			return frame{fail: "ipv6_ext_limit"}
		}
		walked++
		if size < 0 { // the length is in the header's second byte
			if len(rest) < 2 {
				return frame{fail: "truncated"}
			}
			if size == -8 {
				size = 8 * (int(rest[1]) + 1)
			} else {
				size = 4 * (int(rest[1]) + 2)
			}
		}
		if len(rest) < size {
			return frame{fail: "truncated"}
		}
		h := rest[:size]
		rest = rest[size:]
		left = max(left-size, 0)
		next = h[0]
		if cur != 44 {
			continue
		}
		if seenFrag {
			return frame{fail: "malformed"}
		}
		seenFrag = true
		fo := binary.BigEndian.Uint16(h[2:])
		offset, more := fo>>3, fo&1 != 0
		switch {
		case offset != 0:
			f.frag = laterFrag
			f.fragID = binary.BigEndian.Uint32(h[4:])
			f.proto = next
			return f
		case more:
			f.frag = firstFrag
			f.fragID = binary.BigEndian.Uint32(h[4:])
		}
	}
}

func readTransport(b []byte, f frame) frame {
	switch {
	case f.proto == protoTCP:
		if len(b) < 20 {
			return frame{fail: "truncated"}
		}
		if b[12]>>4 < 5 {
			return frame{fail: "malformed"}
		}
		f.sport, f.dport, f.flags = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:]), b[13]
	case f.proto == protoUDP:
		if len(b) < 8 {
			return frame{fail: "truncated"}
		}
		f.sport, f.dport = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
	case isICMP(f.family, f.proto):
		if len(b) < 4 {
			return frame{fail: "truncated"}
		}
		f.icmpType = b[0]
	}
	return f
}

// transportLen is the header readTransport reads of f's protocol.
func transportLen(f frame) int {
	switch {
	case f.proto == protoTCP:
		return 20
	case f.proto == protoUDP:
		return 8
	case isICMP(f.family, f.proto):
		return 4
	}
	return 0
}

// "ICMP (protocol 1 in IPv4) and ICMPv6 (58 in IPv6)"
func isICMP(family int, proto uint8) bool {
	return family == 4 && proto == protoICMP || family == 6 && proto == protoICMPv6
}

// NewModel starts with no first fragment seen.
func NewModel(p Policy, bans []Ban) *Model {
	return &Model{Policy: p, Bans: bans, frags: map[fragKey]fragEntry{}, orphans: map[fragKey]time.Time{}}
}

// Judge returns the verdict for one frame arriving at now, and remembers what
// the datapath remembers (first fragments let through).
func (m *Model) Judge(b []byte, now time.Time) Verdict {
	f := read(b)
	v := m.judge(&f, now)
	// "In monitor mode a drop is counted as monitor and the packet passes:
	// global monitor mode covers every drop"
	if v.Action == "drop" && m.Policy.Monitor {
		v.Action = "monitor"
	}
	// "When it is let through (passed, or counted as monitor) and its source
	// is not allow-listed, its datagram enters the table"
	if f.frag == firstFrag && f.fail == "" && v.Action != "drop" && v.Reason != "allow" {
		m.frags[keyOf(&f)] = fragEntry{proto: f.proto, sport: f.sport, dport: f.dport, at: now, seq: m.inserts}
		delete(m.orphans, keyOf(&f))
		m.inserts++
	}
	// "A passed orphan's packet and bytes are charged to its first fragment
	// when that arrives": it is entered too, unless its datagram is
	if v.Reason == "fragment" && v.Action != "drop" {
		k := keyOf(&f)
		if at, ok := m.orphans[k]; !ok || now.Sub(at) >= FragmentTTL {
			if e, ok := m.frags[k]; !ok || now.Sub(e.at) >= FragmentTTL {
				m.orphans[k] = now
				m.inserts++
			}
		}
	}
	return v
}

// Ambiguous reports whether b is a fragment whose datagram's first fragment
// the kernel may or may not still remember: about FragmentTTL old at now (the
// kernel's clock and the caller's may disagree), or entered more than recent
// inserts ago (the table is an LRU; its order is the kernel's).
func (m *Model) Ambiguous(b []byte, now time.Time, margin time.Duration, recent int) bool {
	f := read(b)
	if f.fail != "" || f.frag == whole {
		return false
	}
	e, ok := m.frags[keyOf(&f)]
	if !ok {
		return false
	}
	age := now.Sub(e.at)
	if age > FragmentTTL-margin && age < FragmentTTL+margin {
		return true
	}
	return age < FragmentTTL && m.inserts-e.seq > recent
}

func keyOf(f *frame) fragKey {
	k := fragKey{src: f.src, dst: f.dst, id: f.fragID}
	if f.family == 4 {
		k.proto = f.proto
	}
	return k
}

func pass(reason string) Verdict { return Verdict{"pass", reason} }
func drop(reason string) Verdict { return Verdict{"drop", reason} }

// judge follows "How a packet is judged", step by step.
func (m *Model) judge(f *frame, now time.Time) Verdict {
	p := &m.Policy
	// 1. not IP passes, an ARP frame only unless a deny entry names its sender
	if f.fail != "" {
		return drop(f.fail)
	}
	if f.notIP {
		if f.arp && f.arpSender.IsValid() && m.list(f.arpSender) == "deny" {
			return drop("deny")
		}
		return pass("not_ip")
	}
	// 2. and 3.
	switch m.list(f.src) {
	case "allow":
		return pass("allow")
	case "deny":
		return drop("deny")
	}
	// 4. neighbour discovery: ICMPv6 types 133 to 137
	if f.family == 6 && f.proto == protoICMPv6 && f.frag != laterFrag && f.icmpType >= 133 && f.icmpType <= 137 {
		return pass("ndp")
	}
	// 5.
	if m.banned(f.src) {
		return drop("ban")
	}
	// 6. a later fragment takes its first fragment's protocol and ports, or
	// belongs to no service; then ICMP passes
	if f.frag == laterFrag {
		e, ok := m.frags[keyOf(f)]
		if !ok || now.Sub(e.at) >= FragmentTTL {
			return m.noService("fragment")
		}
		f.proto, f.sport, f.dport = e.proto, e.sport, e.dport
	}
	// "A first fragment of a datagram in the table whose first fragment had
	// another protocol or other ports is dropped (reason fragment)"
	if f.frag == firstFrag {
		if e, ok := m.frags[keyOf(f)]; ok && now.Sub(e.at) < FragmentTTL &&
			(e.proto != f.proto || e.sport != f.sport || e.dport != f.dport) {
			return drop("fragment")
		}
	}
	if isICMP(f.family, f.proto) {
		return pass("icmp")
	}
	// 7. (a later fragment has no flags to check)
	if f.proto == protoTCP && f.frag != laterFrag && p.TCPFlagSanity && badFlags(f.flags) {
		return drop("tcp_flags")
	}
	// 8.
	svc := m.service(f.proto, f.dport)
	if svc == nil {
		if f.proto == protoUDP && (f.sport == 67 && f.dport == 68 || f.sport == 547 && f.dport == 546) {
			return pass("host_essential")
		}
		return m.noService("no_service")
	}
	// 9. "a service's monitor mode [covers] its limits, its allowFrom and its
	// maxConnections"
	if len(svc.AllowFrom) > 0 && !contains(svc.AllowFrom, f.src) {
		if svc.Monitor {
			return Verdict{"monitor", "acl"}
		}
		return drop("acl")
	}
	// 10. and 11.: no limits, no caps
	return pass("ok")
}

func (m *Model) noService(reason string) Verdict {
	if m.Policy.DefaultDrop {
		return drop(reason)
	}
	return pass(reason)
}

// list says which list decides for a: "allow is checked first", and "an
// allow entry inside a deny entry is an exception to it".
func (m *Model) list(a netip.Addr) string {
	switch {
	case contains(m.Policy.Allow, a):
		return "allow"
	case contains(m.Policy.Deny, a):
		return "deny"
	}
	return ""
}

func (m *Model) banned(a netip.Addr) bool {
	for _, b := range m.Bans {
		if !b.Expired && b.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

func (m *Model) service(proto uint8, port uint16) *Service {
	want := map[uint8]string{protoTCP: "tcp", protoUDP: "udp"}[proto]
	for i := range m.Policy.Services {
		s := &m.Policy.Services[i]
		if s.Protocol != want {
			continue
		}
		for _, r := range s.Ports {
			if port >= r[0] && port <= r[1] {
				return s
			}
		}
	}
	return nil
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// badFlags: "no SYN/ACK/FIN/RST at all (NULL scans), SYN with FIN or RST, FIN
// with RST, FIN/PSH/URG without ACK (XMAS scans)"
func badFlags(f uint8) bool {
	has := func(x uint8) bool { return f&x != 0 }
	switch {
	case !has(flagSYN | flagACK | flagFIN | flagRST):
		return true
	case has(flagSYN) && has(flagFIN|flagRST):
		return true
	case has(flagFIN) && has(flagRST):
		return true
	case has(flagFIN|flagPSH|flagURG) && !has(flagACK):
		return true
	}
	return false
}
