package trafgen_test

import (
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/test/bench/trafgen"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
)

const (
	edgeDrop = 1 // XDP_DROP
	edgePass = 2 // XDP_PASS
)

// The lab's edge passes what is for the lab's addresses, multicast, IPv6
// link-local and non-IP frames, and drops unicast to anywhere else: the
// SYN-ACKs a guard sends to a flood's spoofed sources.
func TestEdge(t *testing.T) {
	testenv.RequireRoot(t)
	e, err := trafgen.LoadEdge()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	lab4, lab6 := netip.MustParseAddr("10.78.1.1"), netip.MustParseAddr("fd00:4d::1:1")
	if err := e.Allow(lab4, lab6); err != nil {
		t.Fatal(err)
	}
	synack := func(src, dst string) []byte {
		return packet.Build(packet.Spec{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: packet.TCP,
			SrcPort: 8080, DstPort: 40000, TCPFlags: packet.SYN | packet.ACK})
	}
	arp := make([]byte, 60)
	arp[12], arp[13] = 0x08, 0x06
	for _, c := range []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"IPv4 to the lab", synack("10.77.0.2", "10.78.1.1"), edgePass},
		{"IPv4 to a spoofed source", synack("10.77.0.2", "10.78.1.2"), edgeDrop},
		{"IPv4 to a spoofed source elsewhere", synack("10.77.0.2", "10.3.2.1"), edgeDrop},
		{"IPv6 to the lab", synack("fd00:4d::2", "fd00:4d::1:1"), edgePass},
		{"IPv6 to a spoofed source", synack("fd00:4d::2", "fd00:4d:12:3456::1"), edgeDrop},
		{"IPv6 link-local", synack("fe80::2", "fe80::1"), edgePass},
		{"IPv6 multicast", packet.Build(packet.Spec{Src: netip.MustParseAddr("fe80::2"),
			Dst: netip.MustParseAddr("ff02::1:ff00:1"), Proto: packet.ICMPv6, ICMPType: 135}), edgePass},
		{"IPv4 multicast", packet.Build(packet.Spec{Src: netip.MustParseAddr("10.77.0.2"),
			Dst: netip.MustParseAddr("224.0.0.1"), Proto: packet.UDP, SrcPort: 1, DstPort: 2}), edgePass},
		{"IPv4 broadcast", packet.Build(packet.Spec{Src: netip.MustParseAddr("10.77.0.2"),
			Dst: netip.MustParseAddr("255.255.255.255"), Proto: packet.UDP, SrcPort: 1, DstPort: 2}), edgePass},
		{"ARP", arp, edgePass},
	} {
		got, err := trafgen.EdgeRun(e, c.frame)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
}
