package loader

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
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

// The handshake proves its client: the egress program remembers the ISN of
// the SYN-ACK, and the client's ACK of exactly ISN+1 proves it, through
// either ingress program; an ACK of anything else, from another port, with
// SYN or RST, or one the guard drops, proves nothing, and neither does any of
// it with the proof off.
func TestHandshakeProof(t *testing.T) {
	d := newDatapath(t, Options{})
	p := proofPolicy(true, 0, 0)
	p.Deny = []netip.Prefix{netip.MustParsePrefix("10.66.0.0/16")}
	mustApply(t, d, p)
	prog := map[string]func(frame []byte){
		"xdp": func(frame []byte) { runXDP(t, d, frame) },
		"tc": func(frame []byte) {
			if _, err := d.TC().Run(&ebpf.RunOptions{Data: frame}); err != nil {
				t.Fatal(err)
			}
		},
	}
	for i, name := range []string{"xdp", "tc"} {
		in := prog[name]
		c := newConn(fmt.Sprintf("10.2.%d.1", i), 80)
		key := fmt.Sprintf("10.2.%d.1/32", i)
		runEgress(t, d, c.out(fSYNACK, 5000, 101))
		for _, no := range []struct {
			what  string
			frame []byte
		}{
			{"an ACK of ISN+2", c.in(fACK, 101, 5002)},
			{"an ACK of ISN", c.in(fACK, 101, 5000)},
			{"an ACK from another port", c.port(40001).in(fACK, 101, 5001)},
			{"a RST with the right number", c.in(packet.RST|packet.ACK, 101, 5001)},
			{"a SYN with the right number", c.in(packet.SYN|packet.ACK, 101, 5001)},
		} {
			in(no.frame)
			if _, ok := sourceProof(t, d, key); ok {
				t.Fatalf("%s: %s proved the client", name, no.what)
			}
		}
		in(c.in(fACK, 101, 5001))
		if _, ok := sourceProof(t, d, key); !ok {
			t.Fatalf("%s: the handshake's ACK did not prove the client", name)
		}
	}
	// a denied client's ACK never reaches the check
	denied := newConn("10.66.0.1", 80)
	runEgress(t, d, denied.out(fSYNACK, 7000, 101))
	runXDP(t, d, denied.in(fACK, 101, 7001))
	if _, ok := sourceProof(t, d, "10.66.0.1/32"); ok {
		t.Fatal("a dropped ACK proved its client")
	}
	// IPv6, and the proof off
	c6 := newConn("2001:db8:2:9::1", 80)
	runEgress(t, d, c6.out(fSYNACK, 9000, 101))
	runXDP(t, d, c6.in(fACK, 101, 9001))
	if _, ok := sourceProof(t, d, "2001:db8:2:9::/64"); !ok {
		t.Fatal("an IPv6 handshake did not prove its client")
	}
	mustApply(t, d, proofPolicy(false, 0, 0))
	off := newConn("10.2.77.1", 80)
	runEgress(t, d, off.out(fSYNACK, 5000, 101))
	runXDP(t, d, off.in(fACK, 101, 5001))
	if _, ok := sourceProof(t, d, "10.2.77.1/32"); ok {
		t.Fatal("a handshake proved its client with the proof off")
	}
}

// handshakeSlot is proof.h's handshake_hash, as the egress and ingress
// programs compute it: the slot index and the tag of a 4-tuple.
func handshakeSlot(client netip.Addr, cport, sport uint16) (idx uint32, tag uint32) {
	a := client.As16()
	h := (uint64(cport)<<16 | uint64(sport)) * 0x9e3779b97f4a7c15
	for i, c := range [4]uint64{0xc2b2ae3d27d4eb4f, 0x165667b19e3779f9, 0x27d4eb2f165667c5, 0x94d049bb133111eb} {
		h ^= uint64(binary.NativeEndian.Uint32(a[4*i:])) * c
	}
	h ^= h >> 29
	return uint32(h) & (1<<11 - 1), uint32(h>>32) | 1
}

// collidingAddr finds an address in the /64 of prefix whose 4-tuple (cport,
// sport) has the slot and tag of target's: the hash has no secret, so a
// client can compute one offline. Meet in the middle over the two words of
// the interface identifier, on the 42 bits of the unmixed hash that decide
// the slot and the tag (the low 11 bits of h ^ h>>29, and its high 31 bits).
func collidingAddr(t *testing.T, target netip.AddrPort, prefix netip.Addr, cport, sport uint16) netip.Addr {
	t.Helper()
	const c0, c2, c3 = 0x9e3779b97f4a7c15, 0x27d4eb2f165667c5, 0x94d049bb133111eb
	pre := func(a netip.Addr, cport uint16) uint64 { // the hash before its final mix
		b := a.As16()
		h := (uint64(cport)<<16 | uint64(sport)) * c0
		for i, c := range [4]uint64{0xc2b2ae3d27d4eb4f, 0x165667b19e3779f9, c2, c3} {
			h ^= uint64(binary.NativeEndian.Uint32(b[4*i:])) * c
		}
		return h
	}
	// two unmixed hashes give the same slot and tag exactly when their
	// difference d has bits 33..63 and 4..10 clear and bits 0..3 equal to
	// bits 29..32: q is 0 on those differences, and XOR-linear
	q := func(x uint64) uint64 { return x>>33<<11 | (x>>4&0x7f)<<4 | (x^x>>29)&0xf }
	base := prefix.As16()
	clear(base[8:])
	want := q(pre(target.Addr(), target.Port()) ^ pre(netip.AddrFrom16(base), cport))
	const half = 1 << 20
	words := make(map[uint64]uint32, half)
	for w2 := uint32(1); w2 <= half; w2++ {
		words[q(uint64(w2)*c2)] = w2
	}
	for w3 := uint32(1); w3 < 1<<27; w3++ {
		w2, ok := words[q(uint64(w3)*c3)^want]
		if !ok {
			continue
		}
		a := base
		binary.NativeEndian.PutUint32(a[8:], w2)
		binary.NativeEndian.PutUint32(a[12:], w3)
		return netip.AddrFrom16(a)
	}
	t.Fatal("no colliding address found")
	return netip.Addr{}
}

// A client that knows its own SYN-ACK's ISN cannot spend it on another
// address: the slot remembers the whole 4-tuple, not a hash of it. The hash
// has no secret, so an IPv6 client computes in a second an address of any
// /64 whose 4-tuple has its slot and tag, and acknowledges its own ISN from
// there.
func TestHandshakeProofCollision(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, proofPolicy(true, 0, 0))
	attacker := tconn{client: netip.MustParseAddr("2001:db8:a::1"), cport: 40000, sport: 80}
	victim := tconn{cport: 40001, sport: 80}
	victim.client = collidingAddr(t, netip.AddrPortFrom(attacker.client, attacker.cport),
		netip.MustParseAddr("2001:db8:b::"), victim.cport, victim.sport)
	ai, at := handshakeSlot(attacker.client, attacker.cport, attacker.sport)
	vi, vt := handshakeSlot(victim.client, victim.cport, victim.sport)
	if ai != vi || at != vt {
		t.Fatalf("not a collision: slot %d tag %#x, and slot %d tag %#x", ai, at, vi, vt)
	}
	runEgress(t, d, attacker.out(fSYNACK, 5000, 101))
	runXDP(t, d, victim.in(fACK, 101, 5001))
	if _, ok := sourceProof(t, d, "2001:db8:b::/64"); ok {
		t.Fatalf("%v proved by acknowledging the SYN-ACK sent to %v", victim.client, attacker.client)
	}
	runXDP(t, d, attacker.in(fACK, 101, 5001))
	if _, ok := sourceProof(t, d, "2001:db8:a::/64"); !ok {
		t.Fatal("the attacker's own handshake did not prove it")
	}
}

// skbHead is struct __sk_buff up to ifindex: the fields of a context that
// BPF_PROG_TEST_RUN lets a test set include where the packet came in
// (skb_iif) and the device it leaves by (0 or 1: the loopback device).
type skbHead struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority uint32
	IngressIfindex, Ifindex                                                               uint32
}

// A segment without a socket that came in through a guarded interface (the
// one it leaves by, or another) was routed through by a host that forwards:
// a neighbour on that link wrote it, with a service's source port and any
// destination. It proves nothing, neither as data nor as a SYN-ACK whose ISN
// its writer chose; a segment forwarded from another interface (a
// container's) still does, and so does one that came in through none (a SYN
// cookie's SYN-ACK).
func TestSourceProofHairpin(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, proofPolicy(true, 0, 0))
	const lo = 1 // prog.Run sends its skbs out of the loopback device
	// interface 5 is guarded, as Attach records each interface it hooks
	if err := d.guardIface(5); err != nil {
		t.Fatal(err)
	}
	egress := func(frame []byte, ingress uint32) {
		t.Helper()
		if _, err := d.Egress().Run(&ebpf.RunOptions{Data: frame, Context: skbHead{IngressIfindex: ingress, Ifindex: lo}}); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range []struct {
		name    string
		ingress uint32
		proves  bool
	}{
		{"routed back out of the interface it came in by", lo, false},
		{"routed out of another guarded interface", 5, false},
		{"forwarded from another interface", 7, true},
		{"from no interface", 0, true},
	} {
		data := newConn(fmt.Sprintf("10.2.%d.1", i), 80)
		egress(serverSays(data, packet.ACK|packet.PSH, 100), c.ingress)
		if _, ok := sourceProof(t, d, data.client.String()+"/32"); ok != c.proves {
			t.Errorf("data %s: proven %v, want %v", c.name, ok, c.proves)
		}
		hs := newConn(fmt.Sprintf("10.3.%d.1", i), 80)
		egress(hs.out(fSYNACK, 5000, 101), c.ingress)
		runXDP(t, d, hs.in(fACK, 101, 5001))
		if _, ok := sourceProof(t, d, hs.client.String()+"/32"); ok != c.proves {
			t.Errorf("a SYN-ACK %s, acknowledged: proven %v, want %v", c.name, ok, c.proves)
		}
	}
}
