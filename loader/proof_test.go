package loader

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/test/packet"
)

// proofPolicy: plain TCP and UDP services without any limit, and sources
// proven when on.
func proofPolicy(on bool, clientBits4, clientBits6 uint8) *Policy {
	return &Policy{ProveSources: on, ClientBits4: clientBits4, ClientBits6: clientBits6, Services: []Service{
		{ID: 1, Name: "web", Proto: ProtoTCP, Ports: []PortRange{{80, 80}}},
		{ID: 2, Name: "dns", Proto: ProtoUDP, Ports: []PortRange{{53, 53}}},
	}}
}

func sourceProof(t *testing.T, d *Datapath, key string) (uint64, bool) {
	t.Helper()
	mono, ok, err := d.SourceProof(netip.MustParsePrefix(key))
	if err != nil {
		t.Fatal(err)
	}
	return mono, ok
}

// The egress program proves the source a TCP service sends data to, for any
// TCP service: no limit or cap is needed. prog.Run's skbs carry no socket, so
// these are forwarded segments, which prove only with data; nothing a blind
// spoofer can make the server send proves anything.
func TestSourceProof(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, proofPolicy(true, 0, 0))
	for i, c := range []struct {
		name   string
		frame  func(c tconn) []byte
		proves bool
	}{
		{"data", func(c tconn) []byte { return serverSays(c, packet.ACK|packet.PSH, 100) }, true},
		{"one byte of data", func(c tconn) []byte { return serverSays(c, packet.ACK, 1) }, true},
		{"data with a FIN", func(c tconn) []byte { return serverSays(c, packet.ACK|packet.FIN, 10) }, true},
		{"SYN-ACK", func(c tconn) []byte { return serverSays(c, packet.SYN|packet.ACK, 0) }, false},
		{"SYN-ACK with data", func(c tconn) []byte { return serverSays(c, packet.SYN|packet.ACK, 100) }, false},
		{"RST", func(c tconn) []byte { return serverSays(c, packet.RST|packet.ACK, 0) }, false},
		{"RST with data", func(c tconn) []byte { return serverSays(c, packet.RST|packet.ACK, 100) }, false},
		{"bare ACK", func(c tconn) []byte { return serverSays(c, packet.ACK, 0) }, false},
		{"FIN without data", func(c tconn) []byte { return serverSays(c, packet.FIN|packet.ACK, 0) }, false},
		{"data without ACK", func(c tconn) []byte { return serverSays(c, packet.PSH, 100) }, false},
		{"from a port no service claims", func(c tconn) []byte { return serverSays(c.port(40000), packet.ACK, 100) }, false},
		{"UDP from a service port", func(c tconn) []byte {
			return packet.Build(packet.Spec{Src: c.server(), Dst: c.client, Proto: packet.UDP, SrcPort: 53, DstPort: 40000, Payload: 100})
		}, false},
	} {
		// a client of its own per case, IPv4 and IPv6 (a /64 key)
		v4 := netip.AddrFrom4([4]byte{10, 2, byte(i), 1})
		v6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:2:%x::1", i))
		for _, client := range []netip.Addr{v4, v6} {
			conn := tconn{client: client, cport: 40000, sport: 80}
			if c.name == "from a port no service claims" {
				conn = tconn{client: client, cport: 80, sport: 40000}
			}
			runEgress(t, d, c.frame(conn))
			key := netip.PrefixFrom(client, 32)
			if client.Is6() {
				key = netip.PrefixFrom(client, 64).Masked()
			}
			if _, ok := sourceProof(t, d, key.String()); ok != c.proves {
				t.Errorf("%s from %s: proven %v, want %v", c.name, client, ok, c.proves)
			}
		}
	}
}

// The proof's key is the policy's client key; it is written at most once a
// second per key; and it is off unless the policy turns it on.
func TestSourceProofKeyAndRefresh(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, proofPolicy(false, 0, 0))
	runEgress(t, d, serverSays(newConn("10.2.0.1", 80), packet.ACK, 100))
	if _, ok := sourceProof(t, d, "10.2.0.1/32"); ok {
		t.Fatal("a source proven with the proof off")
	}

	mustApply(t, d, proofPolicy(true, 24, 48))
	runEgress(t, d, serverSays(newConn("10.2.0.1", 80), packet.ACK, 100))
	runEgress(t, d, serverSays(newConn("2001:db8:2:1::1", 80), packet.ACK, 100))
	first, ok := sourceProof(t, d, "10.2.0.0/24")
	if !ok {
		t.Fatal("the /24 client key was not proven")
	}
	if _, ok := sourceProof(t, d, "2001:db8:2::/48"); !ok {
		t.Fatal("the /48 client key was not proven")
	}
	// another address of the same key within the second: no write
	runEgress(t, d, serverSays(newConn("10.2.0.77", 80), packet.ACK, 100))
	if again, _ := sourceProof(t, d, "10.2.0.0/24"); again != first {
		t.Fatalf("rewritten within a second: %d then %d", first, again)
	}
	var all []netip.Addr
	if err := d.SourceProofs(func(a netip.Addr, _ uint64) error { all = append(all, a); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("proven sources %v, want the two keys", all)
	}
	// nothing the guard sees on ingress proves anything
	for _, f := range [][]byte{newConn("10.9.0.1", 80).in(packet.SYN, 1, 0), newConn("10.9.0.1", 80).in(packet.ACK|packet.PSH, 1, 1),
		packet.Build(udp("10.9.0.1", 53, 100))} {
		runXDP(t, d, f)
	}
	if _, ok := sourceProof(t, d, "10.9.0.0/24"); ok {
		t.Fatal("an ingress packet proved its source")
	}
}
