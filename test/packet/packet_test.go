package packet

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestChecksum: the worked example of RFC 1071 (section 3), an odd length
// padded with a zero byte, a carry that needs folding twice, and a sum started
// by a pseudo-header.
func TestChecksum(t *testing.T) {
	for _, tc := range []struct {
		name string
		acc  uint32
		b    []byte
		want uint16
	}{
		{"RFC 1071", 0, []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, ^uint16(0xddf2)},
		{"odd length", 0, []byte{0x12, 0x34, 0x56}, ^uint16(0x1234 + 0x5600)},
		{"all ones", 0, []byte{0xff, 0xff, 0xff, 0xff}, 0},
		{"carry folded twice", 0x1ffff, []byte{0xff, 0xff}, ^uint16(0x0001)}, // 0x2fffe, 0x10000, 0x0001
		{"empty", 0, nil, 0xffff},
	} {
		if got := Checksum(tc.acc, tc.b); got != tc.want {
			t.Errorf("%s: Checksum = %#04x, want %#04x", tc.name, got, tc.want)
		}
	}
	// a sum in two pieces is the sum of the whole when the first has even length
	b := []byte{1, 2, 3, 4, 5, 6, 7}
	if Sum(Sum(0, b[:4]), b[4:]) != Sum(0, b) {
		t.Error("Sum of pieces differs from Sum of the whole")
	}
}

// TestBuiltChecksumsVerify: the frames Build makes carry checksums that
// Checksum verifies (0 over a header with its checksum in place).
func TestBuiltChecksumsVerify(t *testing.T) {
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")
	for _, proto := range []uint8{TCP, UDP} {
		f := Build(Spec{Src: src, Dst: dst, Proto: proto, SrcPort: 40000, DstPort: 443, TCPFlags: SYN, Payload: 13})
		ip := f[14:]
		if got := Checksum(0, ip[:20]); got != 0 {
			t.Errorf("proto %d: IPv4 header checksum verifies to %#04x", proto, got)
		}
		l4 := ip[20:binary.BigEndian.Uint16(ip[2:])]
		pseudo := Sum(0, ip[12:20]) + uint32(proto) + uint32(len(l4))
		if got := Checksum(pseudo, l4); got != 0 {
			t.Errorf("proto %d: L4 checksum verifies to %#04x", proto, got)
		}
	}
}
