package loader

import (
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/packet"
	"golang.org/x/sys/unix"
)

// Real kernel TCP over a veth pair, against the proof of sources: a blind
// spoofer gets SYN-ACKs, bare ACKs to a half-open connection's out-of-window
// segments, and RSTs, and none proves it; nor does a raw socket on the
// server's side forging a service's data, nor a packet socket writing it as a
// frame; nor a neighbour's segment that a forwarding server routes straight
// back out; nor does Fast Open without cookies,
// where the server answers a spoofed SYN's data before the handshake
// completes; nor does a spoofed ACK guessing the server's ISN. A real client
// proves itself with its handshake alone, holding a silent connection.
func TestSourceProofVeth(t *testing.T) {
	lab := newVethLab(t)
	d := newDatapath(t, Options{})
	// proven clients (proven.h) take part too: they share the test of who sent a segment
	mustApply(t, d, &Policy{ProveSources: true, ProvenTTL: 10 * time.Minute, Services: []Service{{ID: 1, Name: "api",
		Proto: ProtoTCP, Ports: []PortRange{{8443, 8444}},
		Client: Limits{Conns: Rate{PerSecond: 100, Burst: 100}},
		Total:  Limits{Conns: Rate{PerSecond: 1000, Burst: 1000}}}}})
	if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, AttachNative); return err }); err != nil {
		t.Fatal(err)
	}
	if err := lab.b.IP("route", "add", "10.200.0.0/16", "via", lab.la.Addr4.String()); err != nil {
		t.Fatal(err)
	}
	// Fast Open on the server without cookies: data in any SYN is accepted
	// and handed to the application at once (TFO_SERVER_ENABLE | TFO_SERVER_COOKIE_NOT_REQD)
	if err := lab.b.Sysctl("net.ipv4.tcp_fastopen", "514"); err != nil {
		t.Fatal(err)
	}
	silent := netip.AddrPortFrom(lab.lb.Addr4, 8443)
	startSilent(t, lab.b, silent)
	fastOpen := netip.AddrPortFrom(lab.lb.Addr4, 8444)
	startFastOpenEcho(t, lab.b, fastOpen)
	answers := captureTCP(t, lab, 8443)
	tfoAnswers := captureTCP(t, lab, 8444)

	rawIn := func(ns *netns.Namespace) int {
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
	spoofer := rawIn(lab.a)
	send := func(fd int, s packet.Spec) {
		t.Helper()
		if err := unix.Sendto(fd, packet.Build(s)[14:], 0, &unix.SockaddrInet4{Addr: s.Dst.As4()}); err != nil {
			t.Fatalf("send a raw segment: %v", err)
		}
	}
	spoof := func(src netip.Addr, dport uint16, flags uint8, seq, ack uint32, payload int) {
		send(spoofer, packet.Spec{Src: src, Dst: lab.lb.Addr4, Proto: packet.TCP, SrcPort: 20000, DstPort: dport,
			TCPFlags: flags, Seq: seq, Ack: ack, Payload: payload})
	}
	saw := func(list func() []answer, dst netip.Addr, match func(answer) bool) bool {
		for _, a := range list() {
			if a.dst == dst && match(a) {
				return true
			}
		}
		return false
	}

	// a half-open connection's out-of-window answers, and RSTs to segments
	// of no connection
	halfOpen := netip.MustParseAddr("10.200.5.5")
	const isn = 1000
	spoof(halfOpen, 8443, packet.SYN, isn, 0, 0)
	time.Sleep(50 * time.Millisecond)
	spoof(halfOpen, 8443, packet.SYN, isn+1<<30, 0, 0)
	spoof(halfOpen, 8443, 0, isn+1<<30, 0, 0)
	spoof(halfOpen, 8443, packet.FIN, isn+1<<30, 0, 0)
	// and the handshake's last ACK, guessing the server's ISN
	spoof(halfOpen, 8443, packet.ACK, isn+1, 12345, 0)
	noConn := netip.MustParseAddr("10.200.8.8")
	spoof(noConn, 8443, packet.ACK, 5, 7, 0)
	spoof(noConn, 8443, packet.ACK|packet.PSH, 5, 7, 50)
	waitUntil(t, "the server answers with a SYN-ACK, a bare ACK and RSTs", 5*time.Second, func() bool {
		return saw(answers, halfOpen, func(a answer) bool { return a.flags == packet.SYN|packet.ACK }) &&
			saw(answers, halfOpen, func(a answer) bool { return a.flags == packet.ACK && !a.data }) &&
			saw(answers, noConn, func(a answer) bool { return a.flags&packet.RST != 0 })
	})

	// Fast Open: the application reads a spoofed SYN's data and answers
	// before the handshake completes, then closes: the child goes on to
	// FIN_WAIT1, a state past the handshake, and sends its FIN from there
	tfo := netip.MustParseAddr("10.200.7.7")
	spoof(tfo, 8444, packet.SYN, isn, 0, 20)
	waitUntil(t, "the Fast Open child answers the spoofed data and closes", 5*time.Second, func() bool {
		return saw(tfoAnswers, tfo, func(a answer) bool { return a.data }) &&
			saw(tfoAnswers, tfo, func(a answer) bool { return a.flags == packet.FIN|packet.ACK })
	})

	// a raw socket on the server's side forging the service's data
	forged := netip.MustParseAddr("10.200.6.6")
	send(rawIn(lab.b), packet.Spec{Src: lab.lb.Addr4, Dst: forged, Proto: packet.TCP, SrcPort: 8443, DstPort: 20000,
		TCPFlags: packet.ACK | packet.PSH, Seq: 1, Ack: 1, Payload: 100})
	waitUntil(t, "the forged segment leaves", 5*time.Second, func() bool {
		return saw(answers, forged, func(a answer) bool { return a.data })
	})
	// a packet socket on the server's side writing the same segment as a
	// whole frame (CAP_NET_RAW is enough for it too)
	framed := netip.MustParseAddr("10.200.6.7")
	sendFrame(t, lab, packet.Spec{Src: lab.lb.Addr4, Dst: framed, Proto: packet.TCP, SrcPort: 8443, DstPort: 20000,
		TCPFlags: packet.ACK | packet.PSH, Seq: 1, Ack: 1, Payload: 100})
	waitUntil(t, "the framed segment leaves", 5*time.Second, func() bool {
		return saw(answers, framed, func(a answer) bool { return a.data })
	})

	// a host that forwards: a neighbour on the link writes the service's
	// data segment to another address, through the server, which routes it
	// straight back out of the guarded interface (hairpin)
	if err := lab.b.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	hairpin := netip.MustParseAddr("10.200.9.9")
	if err := lab.a.IP("route", "add", hairpin.String()+"/32", "via", lab.lb.Addr4.String()); err != nil {
		t.Fatal(err)
	}
	send(spoofer, packet.Spec{Src: netip.MustParseAddr("10.200.44.44"), Dst: hairpin, Proto: packet.TCP, SrcPort: 8443,
		DstPort: 20000, TCPFlags: packet.ACK | packet.PSH, Seq: 1, Ack: 1, Payload: 100})
	waitUntil(t, "the server routes the neighbour's segment back out", 5*time.Second, func() bool {
		return saw(answers, hairpin, func(a answer) bool { return a.data })
	})

	clients := provenKeys(t, d)
	for _, a := range []netip.Addr{halfOpen, noConn, tfo, forged, framed, hairpin} {
		if _, ok, err := d.SourceProof(netip.PrefixFrom(a, 32)); err != nil || ok {
			t.Errorf("%s proven (err %v)", a, err)
		}
		if clients[a] {
			t.Errorf("%s is a proven client", a)
		}
	}

	// a real client that connects and holds the connection, silent: its
	// handshake proves it, with no segment from the server after the SYN-ACK
	c, err := dialFrom(lab, silent)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitUntil(t, "the real client is proven", 2*time.Second, func() bool {
		_, ok, err := d.SourceProof(netip.PrefixFrom(lab.la.Addr4, 32))
		return err == nil && ok
	})
	if saw(answers, lab.la.Addr4, func(a answer) bool { return a.flags != packet.SYN|packet.ACK }) {
		t.Fatal("the server sent more than its SYN-ACK: the test shows nothing about the handshake")
	}
}

// sendFrame writes s as a whole Ethernet frame out of the server's side of
// the veth pair, through a packet socket there.
func sendFrame(t *testing.T, lab *vethLab, s packet.Spec) {
	t.Helper()
	dst, err := lab.la.MAC()
	if err != nil {
		t.Fatal(err)
	}
	src, err := lab.lb.MAC()
	if err != nil {
		t.Fatal(err)
	}
	s.DstMAC, s.SrcMAC = [6]byte(dst), [6]byte(src)
	if err := lab.b.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := net.InterfaceByName(lab.lb.Name)
		if err != nil {
			return err
		}
		return unix.Sendto(fd, packet.Build(s), 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte(append(dst, 0, 0))})
	}); err != nil {
		t.Fatalf("send a frame: %v", err)
	}
}

// startSilent accepts connections, never writes, and closes each once the
// client has.
func startSilent(t *testing.T, ns *netns.Namespace, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	serve(t, ln, func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	})
}

// startFastOpenEcho accepts Fast Open connections and answers what the first
// read brings.
func startFastOpenEcho(t *testing.T, ns *netns.Namespace, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 16)
		}); err != nil {
			return err
		}
		return serr
	}}
	if err := ns.Do(func() (err error) {
		ln, err = lc.Listen(t.Context(), "tcp", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	serve(t, ln, func(c net.Conn) {
		buf := make([]byte, 100)
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil && n > 0 {
			c.Write([]byte("hello"))
		}
		c.Close()
	})
}

// serve runs handle on every connection ln accepts until the test ends.
func serve(t *testing.T, ln net.Listener, handle func(net.Conn)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}
