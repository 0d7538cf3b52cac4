// Package packet builds Ethernet frames for tests, benchmarks and traffic
// generators: IPv4 and IPv6, VLAN tags, IPv4 options, IPv6 extension headers,
// fragments, TCP, UDP and ICMP, with correct checksums.
package packet

import (
	"encoding/binary"
	"net/netip"
)

// Protocol numbers.
const (
	ICMP   = 1
	TCP    = 6
	UDP    = 17
	ICMPv6 = 58
)

// TCP flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
	URG = 0x20
	ECE = 0x40
	CWR = 0x80
)

// IPv6 extension header types.
const (
	HopByHop = 0
	Routing  = 43
	Fragment = 44
	DestOpts = 60
)

// Spec describes one frame. Zero values give a plain frame without options.
type Spec struct {
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
	TCPFlags         uint8
	Seq, Ack         uint32 // TCP sequence and acknowledgment numbers; Seq 0 means 1
	TCPOptions       []byte // after the TCP header, padded with zeros (end of options) to 4 bytes
	ICMPType         uint8
	Payload          int
	VLANs            []uint16 // tag control (VLAN ID and priority) of each tag, outermost first
	VLANTypes        []uint16 // the tag's ethertype, per tag; missing or 0 means 0x8100 (802.1Q)
	IPv4Options      int      // bytes of NOP options, a multiple of 4 up to 40
	IPv6Ext          []uint8  // extension headers in order, before L4
	FragOffset       uint16   // in 8-byte units; non-zero makes a non-first fragment
	MoreFragments    bool
	FragID           uint32 // IPv4 identification (low 16 bits; 0 means 0x1234) or IPv6 fragment id
	SrcMAC, DstMAC   [6]byte
}

// VLAN ethertypes.
const (
	Dot1Q  = 0x8100 // 802.1Q
	Dot1AD = 0x88a8 // 802.1ad service tag
	QinQ   = 0x9100 // pre-standard QinQ
)

// Build returns the frame.
func Build(s Spec) []byte {
	l4 := buildL4(s)
	var l3 []byte
	var ethType uint16
	if s.Src.Is4() {
		ethType = 0x0800
		l3 = buildIPv4(s, l4)
	} else {
		ethType = 0x86dd
		l3 = buildIPv6(s, l4)
	}
	frame := make([]byte, 0, 14+4*len(s.VLANs)+len(l3))
	frame = append(frame, s.DstMAC[:]...)
	frame = append(frame, s.SrcMAC[:]...)
	for i, v := range s.VLANs {
		tpid := uint16(Dot1Q)
		if i < len(s.VLANTypes) && s.VLANTypes[i] != 0 {
			tpid = s.VLANTypes[i]
		}
		frame = binary.BigEndian.AppendUint16(frame, tpid)
		frame = binary.BigEndian.AppendUint16(frame, v)
	}
	frame = binary.BigEndian.AppendUint16(frame, ethType)
	return append(frame, l3...)
}

func buildL4(s Spec) []byte {
	payload := make([]byte, s.Payload)
	switch s.Proto {
	case TCP:
		opts := append([]byte(nil), s.TCPOptions...)
		for len(opts)%4 != 0 {
			opts = append(opts, 0)
		}
		h := make([]byte, 20, 20+len(opts)+len(payload))
		binary.BigEndian.PutUint16(h[0:], s.SrcPort)
		binary.BigEndian.PutUint16(h[2:], s.DstPort)
		seq := s.Seq
		if seq == 0 {
			seq = 1
		}
		binary.BigEndian.PutUint32(h[4:], seq)
		binary.BigEndian.PutUint32(h[8:], s.Ack)
		h[12] = byte(5+len(opts)/4) << 4
		h[13] = s.TCPFlags
		binary.BigEndian.PutUint16(h[14:], 65535)
		h = append(h, opts...)
		h = append(h, payload...)
		binary.BigEndian.PutUint16(h[16:], l4Checksum(s, TCP, h))
		return h
	case UDP:
		h := make([]byte, 8, 8+len(payload))
		binary.BigEndian.PutUint16(h[0:], s.SrcPort)
		binary.BigEndian.PutUint16(h[2:], s.DstPort)
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
		h = append(h, payload...)
		binary.BigEndian.PutUint16(h[6:], l4Checksum(s, UDP, h))
		return h
	case ICMP, ICMPv6:
		h := make([]byte, 8, 8+len(payload))
		h[0] = s.ICMPType
		h = append(h, payload...)
		if s.Proto == ICMP {
			binary.BigEndian.PutUint16(h[2:], Checksum(0, h))
		} else {
			binary.BigEndian.PutUint16(h[2:], l4Checksum(s, ICMPv6, h))
		}
		return h
	}
	return payload
}

func buildIPv4(s Spec, l4 []byte) []byte {
	hl := 20 + s.IPv4Options
	h := make([]byte, hl, hl+len(l4))
	h[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(h[2:], uint16(hl+len(l4)))
	id := uint16(s.FragID)
	if id == 0 {
		id = 0x1234
	}
	binary.BigEndian.PutUint16(h[4:], id)
	frag := s.FragOffset & 0x1fff
	if s.MoreFragments {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8] = 64
	h[9] = s.Proto
	src, dst := s.Src.As4(), s.Dst.As4()
	copy(h[12:], src[:])
	copy(h[16:], dst[:])
	for i := 20; i < hl; i++ {
		h[i] = 1 // NOP
	}
	binary.BigEndian.PutUint16(h[10:], Checksum(0, h))
	return append(h, l4...)
}

func buildIPv6(s Spec, l4 []byte) []byte {
	var ext []byte
	next := s.Proto
	// build the chain back to front so each header names the one after it
	for i := len(s.IPv6Ext) - 1; i >= 0; i-- {
		t := s.IPv6Ext[i]
		var e []byte
		if t == Fragment {
			e = make([]byte, 8)
			off := s.FragOffset << 3
			if s.MoreFragments {
				off |= 1
			}
			binary.BigEndian.PutUint16(e[2:], off)
			binary.BigEndian.PutUint32(e[4:], s.FragID)
		} else {
			e = make([]byte, 8) // hdr ext len 0: 8 bytes, PadN filled
			e[2], e[3] = 1, 4
		}
		e[0] = next
		next = t
		ext = append(e, ext...)
	}
	h := make([]byte, 40, 40+len(ext)+len(l4))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(l4)))
	h[6] = next
	h[7] = 64
	src, dst := s.Src.As16(), s.Dst.As16()
	copy(h[8:], src[:])
	copy(h[24:], dst[:])
	h = append(h, ext...)
	return append(h, l4...)
}

func l4Checksum(s Spec, proto uint8, seg []byte) uint16 {
	var sum uint32
	if s.Src.Is4() {
		a, b := s.Src.As4(), s.Dst.As4()
		sum = Sum(sum, a[:])
		sum = Sum(sum, b[:])
	} else {
		a, b := s.Src.As16(), s.Dst.As16()
		sum = Sum(sum, a[:])
		sum = Sum(sum, b[:])
	}
	sum += uint32(proto) + uint32(len(seg))
	return Checksum(sum, seg)
}

// Sum adds b to the running ones'-complement sum acc, 16-bit big-endian words
// with an odd last byte padded with zero (RFC 1071), without folding: sums of
// pieces (a pseudo-header, then the segment) add up before Checksum folds.
func Sum(acc uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	return acc
}

// Checksum is the Internet checksum of b on top of the running sum acc: the
// value to write in a zeroed checksum field, or 0 when b holds a correct one.
func Checksum(acc uint32, b []byte) uint16 {
	sum := Sum(acc, b)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// FragmentIPv4 splits an IPv4 packet (from its IP header on) into fragments
// carrying sizes bytes of its payload each, in order, and the rest in a last
// fragment. Every size but the last must be a multiple of 8.
func FragmentIPv4(ip []byte, sizes ...int) [][]byte {
	hl := int(ip[0]&0x0f) * 4
	payload := ip[hl:]
	var out [][]byte
	for off := 0; off < len(payload); {
		n := len(payload) - off
		if len(out) < len(sizes) && sizes[len(out)] < n {
			n = sizes[len(out)]
		}
		f := make([]byte, hl, hl+n)
		copy(f, ip[:hl])
		f = append(f, payload[off:off+n]...)
		binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
		fo := uint16(off / 8)
		if off+n < len(payload) {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(f[6:], fo)
		f[10], f[11] = 0, 0
		binary.BigEndian.PutUint16(f[10:], Checksum(0, f[:hl]))
		out = append(out, f)
		off += n
	}
	return out
}
