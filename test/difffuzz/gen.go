package difffuzz

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
)

// Guarded addresses: the destination of most frames.
var (
	Guarded4 = netip.MustParseAddr("192.0.2.200")
	Guarded6 = netip.MustParseAddr("2001:db8:ffff::1")
)

// Sources come from a few networks, so that frames hit the prefixes the
// policies name, and the policies name prefixes around them.
var (
	nets4 = []netip.Prefix{
		netip.MustParsePrefix("10.1.1.0/24"), netip.MustParsePrefix("10.1.2.0/24"),
		netip.MustParsePrefix("10.2.0.0/16"), netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/28"),
	}
	nets6 = []netip.Prefix{
		netip.MustParsePrefix("2001:db8:1::/64"), netip.MustParsePrefix("2001:db8:1:2::/64"),
		netip.MustParsePrefix("2001:db8:2::/48"), netip.MustParsePrefix("fe80::/64"),
	}
	// ports the policies use and frames go to
	portPool = []uint16{22, 53, 67, 68, 80, 443, 546, 547, 8000, 8050, 8100, 9000, 65535}
)

// Gen draws policies, bans and frames from one random source.
type Gen struct {
	rng *rand.Rand
	// the policy in force: frames go to its ports and come from its
	// allowFrom networks more often than chance would have them
	ports   []uint16
	sources []netip.Prefix
	// datagrams whose first fragment was drawn lately: later fragments are
	// drawn to match them
	firsts []datagram
}

type datagram struct {
	family   int
	src, dst netip.Addr
	proto    uint8
	id       uint32
}

// NewGen seeds a generator.
func NewGen(seed uint64) *Gen {
	return &Gen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (g *Gen) chance(p float64) bool { return g.rng.Float64() < p }

func (g *Gen) pick(n int) int { return g.rng.IntN(n) }

// Use makes the frames drawn next favour p's ports and allowFrom networks.
func (g *Gen) Use(p Policy) {
	g.ports, g.sources = g.ports[:0], g.sources[:0]
	for _, s := range p.Services {
		for _, r := range s.Ports {
			g.ports = append(g.ports, r[0], r[1])
		}
		g.sources = append(g.sources, s.AllowFrom...)
	}
}

// Addr draws a source address from the pools (now and then any address).
func (g *Gen) Addr(family int) netip.Addr {
	if g.chance(0.05) {
		return g.anyAddr(family)
	}
	nets := nets4
	if family == 6 {
		nets = nets6
	}
	var mine []netip.Prefix
	for _, n := range g.sources {
		if n.Addr().Is4() == (family == 4) {
			mine = append(mine, n)
		}
	}
	if len(mine) > 0 && g.chance(0.3) {
		nets = mine
	}
	n := nets[g.pick(len(nets))]
	b := n.Addr().AsSlice()
	// fill the host bits, mostly small numbers so hosts repeat
	for i := n.Bits(); i < len(b)*8; i++ {
		if i >= len(b)*8-4 || g.chance(0.1) {
			if g.chance(0.5) {
				b[i/8] |= 0x80 >> (i % 8)
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (g *Gen) anyAddr(family int) netip.Addr {
	if family == 4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], g.rng.Uint32())
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], g.rng.Uint64())
	binary.BigEndian.PutUint64(b[8:], g.rng.Uint64())
	return netip.AddrFrom16(b)
}

// Prefix draws a prefix around the pools' addresses. Lengths next to a
// prefilter bit's (an IPv4 /16, an IPv6 /32: bpf/include/prefilter.h) come
// up often, and a few IPv4 prefixes are wider than a /8.
func (g *Gen) Prefix() netip.Prefix {
	if g.chance(0.5) {
		a := g.Addr(4)
		bits := 8 + g.pick(25)
		switch {
		case g.chance(0.3):
			bits = 32
		case g.chance(0.2):
			bits = 15 + g.pick(3)
		case g.chance(0.05):
			bits = g.pick(8)
		}
		return netip.PrefixFrom(a, bits).Masked()
	}
	a := g.Addr(6)
	bits := 16 + g.pick(113)
	switch {
	case g.chance(0.3):
		bits = 64
	case g.chance(0.2):
		bits = 31 + g.pick(3)
	}
	return netip.PrefixFrom(a, bits).Masked()
}

// Policy draws a valid policy without limits.
func (g *Gen) Policy() Policy {
	p := Policy{
		Monitor:       g.chance(0.15),
		DefaultDrop:   g.chance(0.4),
		TCPFlagSanity: g.chance(0.75),
	}
	for i, n := 0, g.pick(5); i < n; i++ {
		p.Allow = append(p.Allow, g.Prefix())
	}
	for i, n := 0, g.pick(6); i < n; i++ {
		d := g.Prefix()
		// a deny entry inside an allow entry is refused: it could never match
		if covered(p.Allow, d) {
			continue
		}
		p.Deny = append(p.Deny, d)
	}
	var claimed []struct {
		proto  string
		ranges [][2]uint16
	}
	taken := func(proto string, r [2]uint16) bool {
		for _, c := range claimed {
			if c.proto != proto {
				continue
			}
			for _, o := range c.ranges {
				if r[0] <= o[1] && o[0] <= r[1] {
					return true
				}
			}
		}
		return false
	}
	for i, n := 0, g.pick(7); i < n; i++ {
		s := Service{Name: fmt.Sprintf("s%d", i), Protocol: "tcp", Monitor: g.chance(0.2)}
		if g.chance(0.45) {
			s.Protocol = "udp"
		}
		for j, m := 0, 1+g.pick(3); j < m; j++ {
			first := portPool[g.pick(len(portPool))]
			if g.chance(0.1) {
				first = uint16(1 + g.pick(65535))
			}
			r := [2]uint16{first, first}
			if g.chance(0.2) && first < 65000 {
				r[1] = first + uint16(g.pick(200))
			}
			if taken(s.Protocol, r) {
				continue
			}
			s.Ports = append(s.Ports, r)
			claimed = append(claimed, struct {
				proto  string
				ranges [][2]uint16
			}{s.Protocol, [][2]uint16{r}})
		}
		if len(s.Ports) == 0 {
			continue
		}
		if g.chance(0.35) {
			for j, m := 0, 1+g.pick(3); j < m; j++ {
				s.AllowFrom = append(s.AllowFrom, g.Prefix())
			}
		}
		p.Services = append(p.Services, s)
	}
	return p
}

func covered(ps []netip.Prefix, p netip.Prefix) bool {
	for _, o := range ps {
		if o.Addr().Is4() == p.Addr().Is4() && o.Bits() <= p.Bits() && o.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// Bans draws bans, some of them expired.
func (g *Gen) Bans() []Ban {
	var out []Ban
	for i, n := 0, g.pick(5); i < n; i++ {
		out = append(out, Ban{Prefix: g.Prefix(), Expired: g.chance(0.25)})
	}
	return out
}

// YAML writes the policy as a policy file.
func (p Policy) YAML() string {
	var b strings.Builder
	b.WriteString("apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: difffuzz}\nspec:\n")
	mode := func(m bool) string {
		if m {
			return "monitor"
		}
		return "enforce"
	}
	def := "pass"
	if p.DefaultDrop {
		def = "drop"
	}
	fmt.Fprintf(&b, "  mode: %s\n  defaultAction: %s\n  tcpFlagSanity: %v\n", mode(p.Monitor), def, p.TCPFlagSanity)
	list := func(ps []netip.Prefix) string {
		s := make([]string, len(ps))
		for i, x := range ps {
			s[i] = fmt.Sprintf("%q", x.String())
		}
		return "[" + strings.Join(s, ", ") + "]"
	}
	if len(p.Allow) > 0 {
		fmt.Fprintf(&b, "  allow: %s\n", list(p.Allow))
	}
	if len(p.Deny) > 0 {
		fmt.Fprintf(&b, "  deny: %s\n", list(p.Deny))
	}
	if len(p.Services) > 0 {
		b.WriteString("  services:\n")
	}
	for _, s := range p.Services {
		ports := make([]string, len(s.Ports))
		for i, r := range s.Ports {
			ports[i] = fmt.Sprintf("\"%d-%d\"", r[0], r[1])
		}
		fmt.Fprintf(&b, "    - name: %s\n      protocol: %s\n      ports: [%s]\n      mode: %s\n",
			s.Name, s.Protocol, strings.Join(ports, ", "), mode(s.Monitor))
		if len(s.AllowFrom) > 0 {
			fmt.Fprintf(&b, "      allowFrom: %s\n", list(s.AllowFrom))
		}
	}
	return b.String()
}

// Frame draws one frame, at least 14 bytes long (BPF_PROG_TEST_RUN needs an
// Ethernet header): built from parts, then now and then mutated.
func (g *Gen) Frame() []byte {
	f := g.build()
	if g.chance(0.25) {
		f = g.mutate(f)
	}
	if len(f) < 14 {
		f = append(f, make([]byte, 14-len(f))...)
	}
	return f
}

// zeroIPLen sets the IPv4 total length or IPv6 payload length of f, behind
// up to two VLAN tags, to 0.
func zeroIPLen(f []byte) []byte {
	at := 12
	for tags := 0; tags < 2 && len(f) >= at+2; tags++ {
		if e := binary.BigEndian.Uint16(f[at:]); e != tag8021Q && e != tag8021AD {
			break
		}
		at += 4
	}
	if len(f) < at+2 {
		return f
	}
	ip := at + 2
	switch binary.BigEndian.Uint16(f[at:]) {
	case etherIPv4:
		if len(f) >= ip+4 {
			binary.BigEndian.PutUint16(f[ip+2:], 0)
		}
	case etherIPv6:
		if len(f) >= ip+6 {
			binary.BigEndian.PutUint16(f[ip+4:], 0)
		}
	}
	return f
}

func (g *Gen) mutate(f []byte) []byte {
	switch g.pick(5) {
	case 4: // an IP length field of 0, which only a GSO skb's may say
		return zeroIPLen(f)
	case 0: // cut anywhere
		return f[:g.pick(len(f)+1)]
	case 1: // flip a few bytes
		for i, n := 0, 1+g.pick(3); i < n && len(f) > 0; i++ {
			f[g.pick(len(f))] ^= byte(1 + g.pick(255))
		}
		return f
	case 2: // cut inside the first 80 bytes, where the headers are
		if len(f) > 14 {
			return f[:14+g.pick(min(len(f)-14, 80))]
		}
		return f
	}
	// garbage at the end
	tail := make([]byte, g.pick(32))
	for i := range tail {
		tail[i] = byte(g.rng.Uint32())
	}
	return append(f, tail...)
}

func (g *Gen) build() []byte {
	f := make([]byte, 12, 128)
	for i := range f {
		f[i] = byte(g.rng.Uint32())
	}
	// VLAN tags: mostly none, up to five
	tags := 0
	if g.chance(0.2) {
		tags = []int{1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5}[g.pick(11)]
	}
	for i := 0; i < tags; i++ {
		tpid := []uint16{tag8021Q, tag8021Q, tag8021AD, tagQinQ, 0x9200}[g.pick(5)]
		f = binary.BigEndian.AppendUint16(f, tpid)
		tci := uint16(0)
		if g.chance(0.3) {
			tci = uint16(g.rng.Uint32())
		}
		f = binary.BigEndian.AppendUint16(f, tci)
	}
	switch x := g.rng.Float64(); {
	case x < 0.46:
		f = binary.BigEndian.AppendUint16(f, etherIPv4)
		return append(f, g.ipv4()...)
	case x < 0.92:
		f = binary.BigEndian.AppendUint16(f, etherIPv6)
		return append(f, g.ipv6()...)
	case x < 0.96:
		f = binary.BigEndian.AppendUint16(f, etherARP)
		return append(f, g.arp()...)
	default:
		et := []uint16{0x88cc, 0x8847, 0x8864, 0x0600, 0x05dc, 0x9300, uint16(g.rng.Uint32())}[g.pick(7)]
		f = binary.BigEndian.AppendUint16(f, et)
		return append(f, g.payload(60)...)
	}
}

func (g *Gen) payload(max int) []byte {
	p := make([]byte, g.pick(max+1))
	for i := range p {
		p[i] = byte(g.rng.Uint32())
	}
	return p
}

func (g *Gen) arp() []byte {
	a := make([]byte, 28)
	binary.BigEndian.PutUint16(a, 1)
	binary.BigEndian.PutUint16(a[2:], etherIPv4)
	a[4], a[5] = 6, 4
	if g.chance(0.1) {
		a[4] = byte(g.pick(8))
	}
	if g.chance(0.1) {
		a[5] = byte(g.pick(8))
	}
	binary.BigEndian.PutUint16(a[6:], uint16(1+g.pick(2)))
	src := g.Addr(4).As4()
	copy(a[14:], src[:])
	dst := Guarded4.As4()
	copy(a[24:], dst[:])
	return a
}

// proto draws a transport protocol for a family, mostly the right ones.
func (g *Gen) proto(family int) uint8 {
	icmp := uint8(protoICMP)
	if family == 6 {
		icmp = protoICMPv6
	}
	return []uint8{protoTCP, protoTCP, protoTCP, protoUDP, protoUDP, protoUDP, icmp, icmp,
		protoICMP, protoICMPv6, 47, 50, 0, 4, 41, 59, uint8(g.rng.Uint32())}[g.pick(17)]
}

func (g *Gen) port() uint16 {
	if len(g.ports) > 0 && g.chance(0.4) {
		return g.ports[g.pick(len(g.ports))]
	}
	if g.chance(0.15) {
		return uint16(g.rng.Uint32())
	}
	return portPool[g.pick(len(portPool))]
}

// transport draws a TCP, UDP or ICMP header with a payload; other protocols
// get a payload alone.
func (g *Gen) transport(proto uint8) []byte {
	var h []byte
	switch proto {
	case protoTCP:
		h = make([]byte, 20)
		binary.BigEndian.PutUint16(h, g.port())
		binary.BigEndian.PutUint16(h[2:], g.port())
		doff := 5
		if g.chance(0.1) {
			doff = g.pick(16)
		}
		h[12] = byte(doff << 4)
		h[13] = []uint8{flagSYN, flagSYN, flagACK, flagACK | flagPSH, flagSYN | flagACK, flagFIN | flagACK,
			flagRST, flagRST | flagACK, 0, flagFIN | flagPSH | flagURG, flagSYN | flagFIN, flagSYN | flagRST,
			flagFIN, flagPSH, flagURG | flagACK, flagFIN | flagRST | flagACK, uint8(g.rng.Uint32())}[g.pick(17)]
	case protoUDP:
		h = make([]byte, 8)
		sport, dport := g.port(), g.port()
		if g.chance(0.1) {
			sport, dport = 67, 68
			if g.chance(0.5) {
				sport, dport = 547, 546
			}
		}
		binary.BigEndian.PutUint16(h, sport)
		binary.BigEndian.PutUint16(h[2:], dport)
	case protoICMP, protoICMPv6:
		h = make([]byte, 8)
		h[0] = []uint8{8, 0, 3, 128, 129, 133, 134, 135, 136, 137, 138, 132, uint8(g.rng.Uint32())}[g.pick(13)]
	}
	return append(h, g.payload(40)...)
}

// fragment decides how a datagram is cut: whole, first or later; later
// fragments mostly belong to a datagram whose first fragment was drawn lately.
func (g *Gen) fragment(d *datagram) (kind fragKind) {
	switch x := g.rng.Float64(); {
	case x < 0.6:
		return whole
	case x < 0.78:
		d.id = g.fragID()
		// now and then a second first fragment of a datagram drawn
		// lately, with ports of its own (a duplicate, or a twin)
		if len(g.firsts) > 0 && g.chance(0.1) {
			if o := g.firsts[g.pick(len(g.firsts))]; o.family == d.family {
				*d = o
			}
		}
		if len(g.firsts) > 64 {
			g.firsts = g.firsts[1:]
		}
		g.firsts = append(g.firsts, *d)
		return firstFrag
	}
	if len(g.firsts) > 0 && g.chance(0.7) {
		o := g.firsts[g.pick(len(g.firsts))]
		if o.family == d.family {
			*d = o
			if g.chance(0.1) { // the same datagram but for one field
				switch g.pick(4) {
				case 0:
					d.src = g.Addr(d.family)
				case 1:
					d.id ^= 1
				case 2:
					d.proto = g.proto(d.family)
				case 3:
					d.dst = g.anyAddr(d.family)
				}
			}
			return laterFrag
		}
	}
	d.id = g.fragID()
	return laterFrag
}

func (g *Gen) fragID() uint32 {
	if g.chance(0.5) {
		return uint32(1 + g.pick(4))
	}
	return g.rng.Uint32()
}

func (g *Gen) ipv4() []byte {
	d := datagram{family: 4, src: g.Addr(4), dst: Guarded4, proto: g.proto(4)}
	if g.chance(0.05) {
		d.dst = g.anyAddr(4)
	}
	kind := g.fragment(&d)
	opts := 0
	if g.chance(0.2) {
		opts = 4 * (1 + g.pick(10))
	}
	h := make([]byte, 20+opts)
	ihl := byte(5 + opts/4)
	if g.chance(0.03) {
		ihl = byte(g.pick(16))
	}
	version := byte(4)
	if g.chance(0.03) {
		version = byte(g.pick(16))
	}
	h[0] = version<<4 | ihl
	binary.BigEndian.PutUint16(h[4:], uint16(d.id))
	var fo uint16
	switch kind {
	case firstFrag:
		fo = 0x2000
	case laterFrag:
		fo = uint16(1+g.pick(0x1fff)) | uint16(g.pick(2))<<13
	default:
		if g.chance(0.5) {
			fo = 0x4000 // DF
		}
	}
	binary.BigEndian.PutUint16(h[6:], fo)
	h[8] = 64
	h[9] = d.proto
	s, t := d.src.As4(), d.dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], t[:])
	for i := 20; i < len(h); i++ {
		h[i] = 1 // NOP
	}
	var body []byte
	if kind == laterFrag {
		body = g.payload(100)
	} else {
		body = g.transport(d.proto)
	}
	total := len(h) + len(body)
	switch x := g.rng.Float64(); {
	case x < 0.06: // shorter than the frame: what lies past it is no part of the packet
		total = g.pick(total + 1)
	case x < 0.08: // 0: a GSO aggregate's only, malformed in these frames
		total = 0
	case x < 0.1: // longer than the frame
		total += 1 + g.pick(64)
	}
	binary.BigEndian.PutUint16(h[2:], uint16(total))
	return append(h, body...)
}

func (g *Gen) ipv6() []byte {
	d := datagram{family: 6, src: g.Addr(6), dst: Guarded6, proto: g.proto(6)}
	if g.chance(0.03) {
		d.src = netip.AddrFrom16(netip.AddrFrom4([4]byte{10, 1, 1, byte(g.pick(256))}).As16()) // v4-mapped
	}
	if g.chance(0.05) {
		d.dst = g.anyAddr(6)
	}
	kind := g.fragment(&d)
	// the chain: extension headers, with the fragment header somewhere in it
	var chain []uint8
	for i, n := 0, []int{0, 0, 0, 1, 1, 2, 3, 5, 6, 7}[g.pick(10)]; i < n; i++ {
		chain = append(chain, []uint8{0, 43, 60, 60, 51, 44}[g.pick(6)])
	}
	if kind != whole || g.chance(0.05) { // or an atomic fragment
		at := g.pick(len(chain) + 1)
		chain = append(chain[:at], append([]uint8{44}, chain[at:]...)...)
	}
	var ext []byte
	for i, t := range chain {
		next := d.proto
		if i+1 < len(chain) {
			next = chain[i+1]
		}
		var e []byte
		switch t {
		case 44:
			e = make([]byte, 8)
			var fo uint16
			switch kind {
			case firstFrag:
				fo = 1
			case laterFrag:
				fo = uint16(1+g.pick(0x1fff))<<3 | uint16(g.pick(2))
			}
			binary.BigEndian.PutUint16(e[2:], fo)
			binary.BigEndian.PutUint32(e[4:], d.id)
			if kind == laterFrag && g.chance(0.2) {
				next = g.proto(6) // RFC 8200: only the first fragment's counts
			}
		case 51:
			l := g.pick(3)
			e = make([]byte, 4*(l+2))
			e[1] = byte(l)
		default:
			l := g.pick(3)
			e = make([]byte, 8*(l+1))
			e[1] = byte(l)
		}
		e[0] = next
		ext = append(ext, e...)
		if t == 44 && kind == laterFrag {
			break
		}
	}
	first := d.proto
	if len(chain) > 0 {
		first = chain[0]
	}
	h := make([]byte, 40)
	h[0] = 0x60
	if g.chance(0.03) {
		h[0] = byte(g.pick(16)) << 4
	}
	h[6] = first
	h[7] = 64
	s, t := d.src.As16(), d.dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], t[:])
	var body []byte
	if kind == laterFrag {
		body = g.payload(100)
	} else {
		body = g.transport(d.proto)
	}
	binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(body)))
	return append(append(h, ext...), body...)
}
