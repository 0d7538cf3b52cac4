package loader

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"golang.org/x/sys/unix"
)

// tagged is spec inside VLAN tags (VLAN ID 0, priority tags), with the given
// ethertypes, outermost first.
func tagged(s packet.Spec, types ...uint16) packet.Spec {
	s.VLANs = make([]uint16, len(types))
	s.VLANTypes = types
	return s
}

// A frame still tagged after the two tags the parser reads is dropped under
// its own reason, whatever is inside: the kernel strips priority tags however
// many there are and would deliver the packet unjudged.
func TestVLANStack(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, basePolicy())
	if err := d.Ban(Ban{Prefix: pfx("203.0.113.9/32")}); err != nil {
		t.Fatal(err)
	}
	const q, ad, qinq = packet.Dot1Q, packet.Dot1AD, packet.QinQ
	banned := tcp("203.0.113.9", 80, packet.SYN)
	clean := tcp("10.1.0.3", 80, packet.SYN)
	stack := Reason(GuardAgReasonAG_R_VLAN_STACK)
	raw := func(s packet.Spec, ethertype uint16) []byte {
		// the innermost ethertype rewritten: a tag type where IP was
		f := packet.Build(s)
		at := 12 + 4*len(s.VLANs)
		f[at], f[at+1] = byte(ethertype>>8), byte(ethertype)
		return f
	}
	checkVerdicts(t, d, []verdictCase{
		vc("banned SYN in three 802.1Q tags", packet.Build(tagged(banned, q, q, q)), drop, stack),
		vc("clean SYN in three 802.1Q tags", packet.Build(tagged(clean, q, q, q)), drop, stack),
		vc("three 802.1ad tags", packet.Build(tagged(clean, ad, ad, ad)), drop, stack),
		vc("802.1ad, 802.1Q, 802.1Q", packet.Build(tagged(clean, ad, q, q)), drop, stack),
		vc("four tags", packet.Build(tagged(banned, q, q, q, q)), drop, stack),
		vc("0x9100 outermost", packet.Build(tagged(clean, qinq)), drop, stack),
		vc("0x9100 inside a tag", packet.Build(tagged(clean, ad, qinq)), drop, stack),
		vc("two tags, then 0x9100", packet.Build(tagged(clean, ad, q, qinq)), drop, stack),
		// a third tag type with nothing behind it: still a tag the kernel would read
		vc("two tags, then a bare tag type", raw(tagged(clean, q, q), q)[:14+8+2], drop, stack),
		vc("two tags, then 802.1ad", raw(tagged(clean, q, q), ad), drop, stack),
		// what the parser reads is judged as before
		vc("banned SYN in two tags", packet.Build(tagged(banned, q, q)), drop, Reason(GuardAgReasonAG_R_BAN)),
		vc("802.1ad QinQ", packet.Build(tagged(clean, ad, q)), pass, Reason(GuardAgReasonAG_R_OK)),
		vc("two service tags", packet.Build(tagged(clean, ad, ad)), pass, Reason(GuardAgReasonAG_R_OK)),
		vc("one tag", packet.Build(tagged(clean, ad)), pass, Reason(GuardAgReasonAG_R_OK)),
		// 0x9200 and 0x9300 are no tag for Linux: nothing unwraps them
		vc("0x9200 is not IP", packet.Build(tagged(clean, 0x9200)), pass, Reason(GuardAgReasonAG_R_NOT_IP)),
		vc("arp in two tags", append(append(append([]byte{}, arpFrame("10.1.0.1")[:12]...), 0x81, 0, 0, 0, 0x88, 0xa8, 0, 0), arpFrame("10.1.0.1")[12:]...), pass, Reason(GuardAgReasonAG_R_NOT_IP)),
	})

	p := basePolicy()
	p.Monitor = true
	mustApply(t, d, p)
	checkVerdicts(t, d, []verdictCase{
		vc("monitor mode counts it", packet.Build(tagged(banned, q, q, q)), monitor, stack),
	})
}

// rawSender sends whole Ethernet frames out of the lab's client end.
func rawSender(t *testing.T, lab *vethLab) func([]byte) {
	t.Helper()
	var fd int
	var ifindex int
	if err := lab.a.Do(func() (err error) {
		ifc, err := net.InterfaceByName(lab.la.Name)
		if err != nil {
			return err
		}
		ifindex = ifc.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return func(frame []byte) {
		t.Helper()
		if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}); err != nil {
			t.Fatalf("send a raw frame: %v", err)
		}
	}
}

// The attack of issue 14 over a real veth pair: a SYN from a banned source in
// a stack of priority tags. The kernel here unwraps it and a real listener
// answers it when nothing is attached; with the guard attached, in every mode,
// it gets no answer, while a SYN in two tags from a source that is not banned
// still does (the tags themselves are no reason to refuse).
func TestVLANStackVeth(t *testing.T) {
	lab := newVethLab(t)
	const port = 8080
	dst := netip.AddrPortFrom(lab.lb.Addr4, port)
	startGreeter(t, lab, dst)
	answers := captureTCP(t, lab, port)
	send := rawSender(t, lab)
	srcMAC, err := lab.la.MAC()
	if err != nil {
		t.Fatal(err)
	}
	dstMAC, err := lab.lb.MAC()
	if err != nil {
		t.Fatal(err)
	}
	var sport uint16 = 31000
	// synFrom sends a SYN from the client's own address and port p in the
	// tags given; the server's answer goes to p
	synFrom := func(p uint16, types ...uint16) {
		s := packet.Spec{Src: lab.la.Addr4, Dst: lab.lb.Addr4, Proto: packet.TCP, SrcPort: p, DstPort: port,
			TCPFlags: packet.SYN, Seq: 1000}
		copy(s.SrcMAC[:], srcMAC)
		copy(s.DstMAC[:], dstMAC)
		send(packet.Build(tagged(s, types...)))
	}
	syn := func(types ...uint16) uint16 {
		sport++
		synFrom(sport, types...)
		return sport
	}
	answered := func(p uint16) bool {
		for _, a := range answers() {
			if a.dport == p && a.flags == packet.SYN|packet.ACK {
				return true
			}
		}
		return false
	}
	const q, ad = packet.Dot1Q, packet.Dot1AD

	// the kernel alone: three and four priority tags reach the listener (a
	// fresh link may lose the first frames: the SYN is sent again, as TCP would)
	for _, tags := range [][]uint16{{q, q, q}, {ad, q, q, q}} {
		p := syn(tags...)
		waitUntil(t, "the kernel answers a SYN in priority tags", 5*time.Second, func() bool {
			synFrom(p, tags...)
			time.Sleep(100 * time.Millisecond)
			return answered(p)
		})
	}

	for _, mode := range []AttachMode{AttachNative, AttachGeneric, AttachTCX, AttachTC} {
		t.Run(string(mode), func(t *testing.T) {
			d := newDatapath(t, Options{})
			mustApply(t, d, &Policy{Services: []Service{{ID: 1, Name: "api", Proto: ProtoTCP, Ports: []PortRange{{port, port}}}}})
			if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			banned := netip.PrefixFrom(lab.la.Addr4, 32)
			if err := d.Ban(Ban{Prefix: banned}); err != nil {
				t.Fatal(err)
			}
			var refused []uint16
			for _, tags := range [][]uint16{{q, q, q}, {ad, q, q}, {q, q, q, q}, {ad, ad, ad, ad, ad}, {q, q}} {
				refused = append(refused, syn(tags...))
			}
			// the control: the same path answers once the source is not banned
			if err := d.Unban(banned); err != nil {
				t.Fatal(err)
			}
			ok := syn(q, q)
			waitUntil(t, "a SYN in two tags from a source not banned is answered", 3*time.Second, func() bool { return answered(ok) })
			for _, p := range refused {
				if answered(p) {
					t.Errorf("the SYN from port %d (banned, in tags) was answered", p)
				}
			}
			// TC runs after the kernel moved the outer tag out of the frame:
			// it sees one tag fewer, and three tags are two and a ban there
			stack := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_VLAN_STACK)
			ban := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_BAN)
			wantStack := uint64(4)
			if mode == AttachTCX || mode == AttachTC {
				wantStack = 2
			}
			if stack != wantStack || stack+ban != uint64(len(refused)) {
				t.Errorf("drops: %d vlan_stack and %d ban, want %d vlan_stack of %d", stack, ban, wantStack, len(refused))
			}
		})
	}
}
