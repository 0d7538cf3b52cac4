package loader

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/packet"
	"golang.org/x/sys/unix"
)

// Real kernel TCP over a veth pair: a blind spoofer makes the server answer a
// half-open connection with a bare ACK (an out-of-window SYN, a segment
// without flags, a FIN), and none of it proves the spoofed source; nor does a
// raw socket on the server's side forging the service's data; a real client
// the server sends data to is proven.
func TestProvenClientVeth(t *testing.T) {
	lab := newVethLab(t)
	d := newDatapath(t, Options{})
	mustApply(t, d, &Policy{ProvenTTL: 10 * time.Minute, Services: []Service{{ID: 1, Name: "api", Proto: ProtoTCP,
		Ports:  []PortRange{{8443, 8443}},
		Client: Limits{Conns: Rate{PerSecond: 100, Burst: 100}},
		Total:  Limits{Conns: Rate{PerSecond: 1000, Burst: 1000}}}}})
	if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, AttachNative); return err }); err != nil {
		t.Fatal(err)
	}
	// the server's replies to the spoofed range leave through the veth
	if err := lab.b.IP("route", "add", "10.200.0.0/16", "via", lab.la.Addr4.String()); err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(lab.lb.Addr4, 8443)
	startGreeter(t, lab, dst)

	// what reaches the spoofer's side: the server's answers
	answers := captureTCP(t, lab, 8443)

	spoofed := netip.MustParseAddr("10.200.5.5")
	raw := func(ns *netns.Namespace) int {
		var fd int
		if err := ns.Do(func() (err error) {
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	spoofer := raw(lab.a)
	send := func(fd int, s packet.Spec) {
		if err := unix.Sendto(fd, packet.Build(s)[14:], 0, &unix.SockaddrInet4{Addr: s.Dst.As4()}); err != nil {
			t.Fatalf("send a raw segment: %v", err)
		}
	}
	toServer := func(flags uint8, seq uint32) packet.Spec {
		return packet.Spec{Src: spoofed, Dst: lab.lb.Addr4, Proto: packet.TCP, SrcPort: 20000, DstPort: 8443, TCPFlags: flags, Seq: seq}
	}
	const isn = 1000
	send(spoofer, toServer(packet.SYN, isn))
	time.Sleep(50 * time.Millisecond)
	send(spoofer, toServer(packet.SYN, isn+1<<30)) // out of window: the half-open connection answers with an ACK
	send(spoofer, toServer(0, isn+1<<30))
	send(spoofer, toServer(packet.FIN, isn+1<<30))
	waitUntil(t, "the server answers the spoofer with a SYN-ACK and a bare ACK", 5*time.Second, func() bool {
		var synack, bareACK bool
		for _, a := range answers() {
			if a.dst == spoofed {
				synack = synack || a.flags == packet.SYN|packet.ACK
				bareACK = bareACK || (a.flags == packet.ACK && !a.data)
			}
		}
		return synack && bareACK
	})
	// a raw socket on the server's side forging a service's data
	forged := netip.MustParseAddr("10.200.6.6")
	send(raw(lab.b), packet.Spec{Src: lab.lb.Addr4, Dst: forged, Proto: packet.TCP, SrcPort: 8443, DstPort: 20000,
		TCPFlags: packet.ACK | packet.PSH, Seq: 1, Ack: 1, Payload: 100})
	waitUntil(t, "the forged segment leaves", 5*time.Second, func() bool {
		for _, a := range answers() {
			if a.dst == forged && a.data {
				return true
			}
		}
		return false
	})
	keys := provenKeys(t, d)
	if keys[spoofed] {
		t.Fatal("the spoofed source was proven by the server's answers to a half-open connection")
	}
	if keys[forged] {
		t.Fatal("a raw socket forging the service's data proved its destination")
	}

	// a real client: the server greets it with data
	c, err := dialFrom(lab, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("read the greeting: %v", err)
	}
	waitUntil(t, "the real client is proven", time.Second, func() bool { return provenKeys(t, d)[lab.la.Addr4] })
}

// startGreeter accepts connections and writes "hello" on each.
func startGreeter(t *testing.T, lab *vethLab, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := lab.b.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

func dialFrom(lab *vethLab, dst netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := lab.a.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", dst.String(), 2*time.Second)
		return err
	})
	return c, err
}

type answer struct {
	dst   netip.Addr
	dport uint16
	flags uint8
	data  bool
}

// captureTCP reads, on the client side of the veth, the IPv4 TCP segments
// from port sport for the rest of the test; the function returned lists
// those seen so far.
func captureTCP(t *testing.T, lab *vethLab, sport uint16) func() []answer {
	t.Helper()
	var fd int
	if err := lab.a.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(lab.la.Name)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 20000}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		got  []answer
		stop = make(chan struct{})
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		// bounded: 20 ms receive timeouts, at most ~30 minutes
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			p := buf[:n]
			if n < 40 || p[9] != unix.IPPROTO_TCP {
				continue
			}
			ihl := int(p[0]&0x0f) * 4
			if n < ihl+20 || uint16(p[ihl])<<8|uint16(p[ihl+1]) != sport {
				continue
			}
			total := int(p[2])<<8 | int(p[3])
			doff := int(p[ihl+12]>>4) * 4
			mu.Lock()
			got = append(got, answer{dst: netip.AddrFrom4([4]byte(p[16:20])), dport: uint16(p[ihl+2])<<8 | uint16(p[ihl+3]),
				flags: p[ihl+13], data: total > ihl+doff})
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		unix.Close(fd)
	})
	return func() []answer {
		mu.Lock()
		defer mu.Unlock()
		return append([]answer(nil), got...)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// provenKeys lists the client keys in the proven map as addresses.
func provenKeys(t *testing.T, d *Datapath) map[netip.Addr]bool {
	t.Helper()
	out := map[netip.Addr]bool{}
	for _, k := range provenKeysAll(t, d) {
		out[netip.AddrFrom16(k.Addr).Unmap()] = true
	}
	return out
}
