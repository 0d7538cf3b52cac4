package loader

import (
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
)

// RFC 1858's tiny fragment, with a twist only a parser that reads the frame
// rather than the packet falls for: a SYN whose first fragment carries 8
// bytes of TCP (ports and sequence number) and whose total length says so,
// with 12 more bytes behind it in the frame that read as the rest of a TCP
// header with ACK set. The kernel trims the packet to its total length and
// takes the flags from the next fragment: SYN. Judged on the frame, the SYN
// would be an ACK: never a new connection, so past the service's connection
// limit, past tcpFlagSanity and past maxConnections.
func TestTinyFirstFragmentVeth(t *testing.T) {
	lab := newVethLab(t)
	const port = 8081
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
	eth := func(ip []byte) []byte {
		f := append(append(append([]byte{}, dstMAC...), srcMAC...), 0x08, 0x00)
		return append(f, ip...)
	}
	var id uint32 = 500
	// synFrom sends a SYN from port p: whole, or cut after 8 bytes of TCP
	// with a forged tail behind the first fragment's total length
	synFrom := func(p uint16, tiny bool) {
		s := packet.Spec{Src: lab.la.Addr4, Dst: lab.lb.Addr4, Proto: packet.TCP, SrcPort: p, DstPort: port,
			TCPFlags: packet.SYN, Seq: 1000}
		if !tiny {
			send(eth(packet.Build(s)[14:]))
			return
		}
		id++
		s.FragID = id
		frags := packet.FragmentIPv4(packet.Build(s)[14:], 8)
		// the rest of a TCP header as the parser would read it: ack, data
		// offset 5, ACK, a window; not part of the packet
		tail := []byte{0, 0, 0, 1, 5 << 4, packet.ACK, 0xff, 0xff, 0, 0, 0, 0}
		send(append(eth(frags[0]), tail...))
		send(eth(frags[1]))
	}
	answered := func(p uint16) bool {
		for _, a := range answers() {
			if a.dport == p && a.flags == packet.SYN|packet.ACK {
				return true
			}
		}
		return false
	}

	// the kernel alone reassembles the SYN and answers it (a fresh link may
	// lose the first frames: sent again, as TCP would)
	waitUntil(t, "the kernel answers a SYN cut into a tiny first fragment", 5*time.Second, func() bool {
		synFrom(30999, true)
		time.Sleep(100 * time.Millisecond)
		return answered(30999)
	})

	for _, mode := range []AttachMode{AttachNative, AttachTCX} {
		t.Run(string(mode), func(t *testing.T) {
			d := newDatapath(t, Options{})
			// one new connection per client, then none for 1000 s
			mustApply(t, d, &Policy{TCPFlagSanity: true, Services: []Service{{ID: 1, Name: "api", Proto: ProtoTCP,
				Ports: []PortRange{{port, port}}, Client: Limits{Conns: Rate{PerSecond: 1, Burst: 1}}}}})
			if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			// the client's one connection, then at once a whole SYN (the
			// control: refused, the bucket refills in a second) and the same
			// SYN in fragments, which must be refused as well; a control
			// answered means the machine was too slow: again, a few times
			p := uint16(31000)
			if mode == AttachTCX {
				p = 32000
			}
			for try := 0; ; try++ {
				if try == 3 {
					t.Fatal("the control SYN was answered three times: the bucket refilled between two sends (a busy machine?)")
				}
				time.Sleep(1100 * time.Millisecond)
				p += 10
				synFrom(p, false)
				waitUntil(t, "the client's one connection is answered", 3*time.Second, func() bool { return answered(p) })
				synFrom(p+1, false)
				for i := uint16(2); i < 5; i++ {
					synFrom(p+i, true)
				}
				time.Sleep(300 * time.Millisecond)
				if answered(p + 1) {
					continue
				}
				for i := uint16(2); i < 5; i++ {
					if answered(p + i) {
						t.Errorf("the SYN from port %d, in fragments, over the connection limit, was answered (counters %v)", p+i, counterMap(t, d))
					}
				}
				break
			}
		})
	}
}
