package loader

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/test/packet"
)

// The egress program reads a server segment with the ingress parser (issue
// 15): what that parser refuses proves no source, expects no handshake and
// adopts no connection. Before, a parser of its own (ct_parse) read a TCP
// header past the IPv4 total length, under a total length shorter than the IP
// header, and behind a second IPv6 fragment header, which ingress refuses.
// The kernel neither sends nor forwards such segments as they are (ip_rcv
// drops or trims them), so nothing real is lost; the intact segment is the
// control.
func TestEgressParsesAsIngress(t *testing.T) {
	d := newDatapath(t, Options{})
	p := ctPolicy()
	p.ProveSources = true
	mustApply(t, d, p)
	setTotLen := func(f []byte, tot uint16) []byte {
		binary.BigEndian.PutUint16(f[14+2:], tot)
		return f
	}
	seg := func(c tconn, flags uint8, ext []uint8) []byte {
		return packet.Build(packet.Spec{Src: c.server(), Dst: c.client, Proto: packet.TCP, SrcPort: c.sport,
			DstPort: c.cport, TCPFlags: flags, Seq: 5001, Ack: 101, Payload: 100, IPv6Ext: ext})
	}
	for i, c := range []struct {
		name  string
		v6    bool
		frame func(c tconn, flags uint8) []byte
		reads bool
	}{
		{"intact IPv4", false, func(c tconn, fl uint8) []byte { return seg(c, fl, nil) }, true},
		{"intact IPv6, one atomic fragment header", true, func(c tconn, fl uint8) []byte {
			return seg(c, fl, []uint8{packet.Fragment})
		}, true},
		{"IPv4 total length inside the TCP header", false, func(c tconn, fl uint8) []byte {
			return setTotLen(seg(c, fl, nil), 20+14)
		}, false},
		{"IPv4 total length below the IP header", false, func(c tconn, fl uint8) []byte {
			return setTotLen(seg(c, fl, nil), 1)
		}, false},
		{"IPv6 with two fragment headers", true, func(c tconn, fl uint8) []byte {
			return seg(c, fl, []uint8{packet.Fragment, packet.Fragment})
		}, false},
	} {
		client := netip.AddrFrom4([4]byte{10, 60, byte(i), 1})
		if c.v6 {
			client = netip.MustParseAddr(fmt.Sprintf("2001:db8:60:%x::1", i))
		}
		conn := tconn{client: client, cport: 40000, sport: 8443}
		// data: proves the source and adopts the connection
		runEgress(t, d, c.frame(conn, packet.ACK|packet.PSH))
		key := netip.PrefixFrom(client, 32)
		if c.v6 {
			key = netip.PrefixFrom(client, 64).Masked()
		}
		if _, ok := sourceProof(t, d, key.String()); ok != c.reads {
			t.Errorf("%s: source proven %v, want %v", c.name, ok, c.reads)
		}
		if st := flowOf(t, d, conn).State; (st != 0) != c.reads {
			t.Errorf("%s: flow state %v after the server's data, want one only if the segment is read", c.name, st)
		}
		// a SYN-ACK on another port: the handshake table expects its ACK
		syn := conn.port(40001)
		runEgress(t, d, c.frame(syn, packet.SYN|packet.ACK))
		idx, tag := handshakeSlot(syn.client, syn.cport, syn.sport)
		var slot GuardAgHandshake
		if err := d.objs.Handshakes.Lookup(idx, &slot); err != nil {
			t.Fatal(err)
		}
		if (slot.Tag == tag) != c.reads {
			t.Errorf("%s: handshake expected %v, want %v", c.name, slot.Tag == tag, c.reads)
		}
	}
}
