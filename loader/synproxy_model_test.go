package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/test/packet"
	"golang.org/x/sys/unix"
)

// A model of the SYN proxy written from its contract (bpf/include/synproxy.h),
// not from its code: the tables check the kernel's frames against it.

// sipHash24 is SipHash-2-4 (Aumasson and Bernstein) of msg under the 16-byte
// key k0 || k1 (little-endian words), as the reference implementation.
func sipHash24(k0, k1 uint64, msg []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	compress := func(m uint64) {
		v3 ^= m
		round()
		round()
		v0 ^= m
	}
	n := len(msg)
	for ; len(msg) >= 8; msg = msg[8:] {
		compress(binary.LittleEndian.Uint64(msg))
	}
	var last [8]byte
	copy(last[:], msg)
	last[7] = byte(n)
	compress(binary.LittleEndian.Uint64(last[:]))
	v2 ^= 0xff
	for range 4 {
		round()
	}
	return v0 ^ v1 ^ v2 ^ v3
}

// The reference implementation's first test vectors (key 00..0f, messages
// 00, 00 01, ...): the model's hash is SipHash-2-4 itself.
func TestSipHashReference(t *testing.T) {
	key := make([]byte, 16)
	for i := range key {
		key[i] = byte(i)
	}
	k0, k1 := binary.LittleEndian.Uint64(key), binary.LittleEndian.Uint64(key[8:])
	for _, c := range []struct {
		len  int
		want uint64
	}{
		{0, 0x726fdb47dd0e0e31},
		{1, 0x74f839c593dc67fd},
		{8, 0x93f5f5799a932462},
		{15, 0xa129ca6149be45e5},
		{32, 0x7127512f72f27cce}, // the proxy's message size
	} {
		msg := make([]byte, c.len)
		for i := range msg {
			msg[i] = byte(i)
		}
		if got := sipHash24(k0, k1, msg); got != c.want {
			t.Errorf("SipHash-2-4 of %d bytes = %#x, want %#x", c.len, got, c.want)
		}
	}
}

// Cookie layout (synproxy.h): | 23 bits of hash | ECN | TS | SACK | MSS:2 | WScale:4 |
const (
	ckHashShift = 9
	ckWScaleNo  = 0xf
	ckMSSShift  = 4
	ckSACK      = 1 << 6
	ckTS        = 1 << 7
	ckECN       = 1 << 8
	ckSlotShift = 36
)

var (
	ckMSS4 = [4]uint16{536, 1300, 1440, 1460}
	ckMSS6 = [4]uint16{1220, 1420, 1440, 8940}
)

// synOffer is what a SYN asks for; wscale -1 is none.
type synOffer struct {
	mss    uint16 // 0: no option
	wscale int
	sack   bool
	ts     bool
	ecn    bool // ECE and CWR set
}

// cookieOpts is the option bits the proxy records for a SYN under host h,
// and the MSS they stand for.
func cookieOpts(v4 bool, o synOffer, h SynProxyHost) (uint32, uint16) {
	tab, want := ckMSS6, o.mss
	if v4 {
		tab = ckMSS4
	}
	if want == 0 {
		want = map[bool]uint16{true: 536, false: 1220}[v4]
	}
	idx := 0
	for i := 3; i > 0; i-- {
		if want >= tab[i] {
			idx = i
			break
		}
	}
	opts := uint32(idx) << ckMSSShift
	if o.wscale >= 0 && h.WindowScaling {
		opts |= uint32(min(o.wscale, 14))
	} else {
		opts |= ckWScaleNo
	}
	if o.sack && h.SACK {
		opts |= ckSACK
	}
	if o.ts && h.Timestamps {
		opts |= ckTS
	}
	if o.ecn && h.ECN {
		opts |= ckECN
	}
	return opts, tab[idx]
}

// cookieHash is the hash behind a cookie: SipHash-2-4 of the client address
// (16 bytes, v4-mapped), then ISN<<32|sport<<16|dport and slot<<9|opts as
// little-endian words.
func cookieHash(key [2]uint64, client netip.Addr, isn uint32, sport, dport uint16, slot uint64, opts uint32) uint64 {
	a := client.As16()
	msg := make([]byte, 32)
	copy(msg, a[:])
	binary.LittleEndian.PutUint64(msg[16:], uint64(isn)<<32|uint64(sport)<<16|uint64(dport))
	binary.LittleEndian.PutUint64(msg[24:], slot<<ckHashShift|uint64(opts))
	return sipHash24(key[0], key[1], msg)
}

func cookieOf(hash uint64, opts uint32) uint32 { return uint32(hash>>41)<<ckHashShift | opts }
func tsHashOf(hash uint64) uint8               { return uint8(hash >> 24) }

// coarseNow is CLOCK_MONOTONIC_COARSE, the clock behind the cookie's slot
// (bpf_ktime_get_coarse_ns).
func coarseNow(tb testing.TB) uint64 {
	tb.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		tb.Fatalf("read the coarse clock: %v", err)
	}
	return uint64(ts.Nano())
}

// tcpOpts is a segment's TCP options as read back; WScale -1 is none.
type tcpOpts struct {
	MSS          uint16
	WScale       int
	SACK         bool
	TS           bool
	TSval, TSecr uint32
	Kinds        string // the option kinds in order, e.g. "2 4 8 1 3"
}

// segment is a decoded frame, every field a table compares.
type segment struct {
	SrcMAC, DstMAC [6]byte
	VLANs          []uint16
	Src, Dst       netip.Addr
	TTL            uint8
	DF             bool
	IPCsumOK       bool
	SrcPort        uint16
	DstPort        uint16
	Seq, Ack       uint32
	Flags          uint8
	Window         uint16
	TCPCsumOK      bool
	Opts           tcpOpts
	Payload        int
}

// decode reads an Ethernet frame carrying TCP over IPv4 (no options) or IPv6
// (no extension headers): what the proxy sends.
func decode(f []byte) (segment, error) {
	var s segment
	if len(f) < 14 {
		return s, errors.New("frame shorter than Ethernet")
	}
	copy(s.DstMAC[:], f[0:6])
	copy(s.SrcMAC[:], f[6:12])
	off, typ := 12, binary.BigEndian.Uint16(f[12:])
	for typ == 0x8100 || typ == 0x88a8 {
		if len(f) < off+6 {
			return s, errors.New("truncated VLAN tag")
		}
		s.VLANs = append(s.VLANs, binary.BigEndian.Uint16(f[off+2:]))
		off += 4
		typ = binary.BigEndian.Uint16(f[off:])
	}
	off += 2
	var tcp []byte
	var pseudo uint32
	switch typ {
	case 0x0800:
		ip := f[off:]
		if len(ip) < 20 || ip[0] != 0x45 || ip[9] != 6 {
			return s, fmt.Errorf("not IPv4 without options carrying TCP: % x", ip[:min(len(ip), 20)])
		}
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if total > len(ip) || total < 20 {
			return s, fmt.Errorf("IPv4 total length %d, frame holds %d", total, len(ip))
		}
		s.Src, _ = netip.AddrFromSlice(ip[12:16])
		s.Dst, _ = netip.AddrFromSlice(ip[16:20])
		s.TTL = ip[8]
		s.DF = binary.BigEndian.Uint16(ip[6:]) == 0x4000
		s.IPCsumOK = packet.Checksum(0, ip[:20]) == 0
		tcp = ip[20:total]
		pseudo = packet.Sum(0, ip[12:20]) + packet.TCP + uint32(len(tcp))
	case 0x86dd:
		ip := f[off:]
		if len(ip) < 40 || ip[6] != 6 {
			return s, errors.New("not IPv6 carrying TCP")
		}
		plen := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+plen > len(ip) {
			return s, fmt.Errorf("IPv6 payload length %d, frame holds %d", plen, len(ip)-40)
		}
		s.Src, _ = netip.AddrFromSlice(ip[8:24])
		s.Dst, _ = netip.AddrFromSlice(ip[24:40])
		s.TTL = ip[7]
		s.IPCsumOK = binary.BigEndian.Uint32(ip[0:]) == 0x60000000 // no checksum: version, class and label as sent
		tcp = ip[40 : 40+plen]
		pseudo = packet.Sum(0, ip[8:40]) + packet.TCP + uint32(len(tcp))
	default:
		return s, fmt.Errorf("ethertype %#x", typ)
	}
	if len(tcp) < 20 {
		return s, errors.New("TCP header truncated")
	}
	hl := int(tcp[12]>>4) * 4
	if hl < 20 || hl > len(tcp) {
		return s, fmt.Errorf("TCP data offset %d, segment %d", hl, len(tcp))
	}
	s.SrcPort = binary.BigEndian.Uint16(tcp[0:])
	s.DstPort = binary.BigEndian.Uint16(tcp[2:])
	s.Seq = binary.BigEndian.Uint32(tcp[4:])
	s.Ack = binary.BigEndian.Uint32(tcp[8:])
	s.Flags = tcp[13]
	s.Window = binary.BigEndian.Uint16(tcp[14:])
	s.TCPCsumOK = packet.Checksum(pseudo, tcp) == 0
	s.Payload = len(tcp) - hl
	o, err := readOpts(tcp[20:hl])
	s.Opts = o
	return s, err
}

func readOpts(b []byte) (tcpOpts, error) {
	o := tcpOpts{WScale: -1}
	var kinds []string
	for i := 0; i < len(b); {
		k := b[i]
		kinds = append(kinds, fmt.Sprint(k))
		if k == 0 {
			break
		}
		if k == 1 {
			i++
			continue
		}
		if i+1 >= len(b) || b[i+1] < 2 || i+int(b[i+1]) > len(b) {
			return o, fmt.Errorf("malformed option at %d: % x", i, b)
		}
		n := int(b[i+1])
		switch {
		case k == 2 && n == 4:
			o.MSS = binary.BigEndian.Uint16(b[i+2:])
		case k == 3 && n == 3:
			o.WScale = int(b[i+2])
		case k == 4 && n == 2:
			o.SACK = true
		case k == 8 && n == 10:
			o.TS = true
			o.TSval = binary.BigEndian.Uint32(b[i+2:])
			o.TSecr = binary.BigEndian.Uint32(b[i+6:])
		}
		i += n
	}
	o.Kinds = strings.Join(kinds, " ")
	return o, nil
}

// synOptions encodes o as a SYN's options, in the order Linux sends them
// (MSS, SACK permitted, timestamps, NOP, window scale) or, without
// timestamps, as Windows does (MSS, NOP, WS, NOP, NOP, SACK permitted).
func synOptions(o synOffer, tsval uint32) []byte {
	var b []byte
	if o.mss != 0 {
		b = binary.BigEndian.AppendUint16(append(b, 2, 4), o.mss)
	}
	if o.ts {
		if o.sack {
			b = append(b, 4, 2)
		}
		b = binary.BigEndian.AppendUint32(append(b, 8, 10), tsval)
		b = binary.BigEndian.AppendUint32(b, 0)
		if o.wscale >= 0 {
			b = append(b, 1, 3, 3, byte(o.wscale))
		}
		return b
	}
	if o.wscale >= 0 {
		b = append(b, 1, 3, 3, byte(o.wscale))
	}
	if o.sack {
		b = append(b, 1, 1, 4, 2)
	}
	return b
}

// ackOptions is a handshake ACK's options: a timestamp echo, when any.
func ackOptions(ts bool, tsval, tsecr uint32) []byte {
	if !ts {
		return nil
	}
	b := binary.BigEndian.AppendUint32([]byte{1, 1, 8, 10}, tsval)
	return binary.BigEndian.AppendUint32(b, tsecr)
}

// diff names the fields of two values of one struct type that differ.
func diff(got, want any) string {
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	var out []string
	for i := range g.NumField() {
		name := g.Type().Field(i).Name
		gf, wf := g.Field(i).Interface(), w.Field(i).Interface()
		if g.Field(i).Kind() == reflect.Struct && g.Field(i).Type() != reflect.TypeOf(netip.Addr{}) {
			if d := diff(gf, wf); d != "" {
				out = append(out, name+"."+d)
			}
			continue
		}
		if !reflect.DeepEqual(gf, wf) {
			out = append(out, fmt.Sprintf("%s: got %v, want %v", name, gf, wf))
		}
	}
	return strings.Join(out, "; ")
}
