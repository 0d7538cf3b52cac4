package loader

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tcpServer accepts connections in a namespace and keeps them: it reads each
// until EOF and then closes its side, so a client's close is answered at once.
type tcpServer struct {
	ln      net.Listener
	mu      sync.Mutex
	conns   []net.Conn // open, in the order accepted
	accepts int
	// bytes received, from every connection, counted when each ends
	received atomic.Int64
	wg       sync.WaitGroup
}

func startTCPServer(t *testing.T, ns *netns.Namespace, addr netip.AddrPort) *tcpServer {
	t.Helper()
	s := &tcpServer{}
	err := ns.Do(func() (err error) {
		s.ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.accepts++
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				n, _ := io.Copy(io.Discard, c) // until the client closes (or we do)
				s.received.Add(n)
				c.Close()
				s.forget(c)
			}()
		}
	}()
	t.Cleanup(func() {
		s.ln.Close()
		s.closeAll()
		s.wg.Wait()
	})
	return s
}

func (s *tcpServer) forget(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, o := range s.conns {
		if o == c {
			s.conns = append(s.conns[:i], s.conns[i+1:]...)
			return
		}
	}
}

func (s *tcpServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepts
}

// closeN closes n of the server's open connections (the server's FIN goes first).
func (s *tcpServer) closeN(n int) {
	s.mu.Lock()
	open := append([]net.Conn(nil), s.conns[:min(n, len(s.conns))]...)
	s.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
}

func (s *tcpServer) closeAll() { s.closeN(1 << 30) }

// dialMany opens n connections at once from ns (from laddr when valid) and
// returns those that connected within timeout; the rest are counted.
func dialMany(t *testing.T, ns *netns.Namespace, laddr netip.Addr, to netip.AddrPort, n int, timeout time.Duration) ([]net.Conn, int) {
	t.Helper()
	var (
		mu     sync.Mutex
		conns  []net.Conn
		failed int
		wg     sync.WaitGroup
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c net.Conn
			err := ns.Do(func() (err error) {
				d := net.Dialer{Timeout: timeout}
				if laddr.IsValid() {
					d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(laddr, 0))
				}
				c, err = d.Dial("tcp", to.String())
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			conns = append(conns, c)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns, failed
}

func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func serviceHolds(t *testing.T, d *Datapath, svc uint32) ConnCount {
	t.Helper()
	sc, err := d.ServiceConns()
	if err != nil {
		t.Fatal(err)
	}
	return sc[svc]
}

// Real TCP over a veth pair, the guard attached in each mode: a client opening
// 200 connections to a service capped at 50 gets 50 and the rest are refused;
// closing from either side frees slots at once; idle connections free theirs
// after the (short) timeout.
func TestConnCapsVeth(t *testing.T) {
	for _, mode := range []AttachMode{AttachNative, AttachTCX, AttachTC, AttachGeneric} {
		t.Run(string(mode), func(t *testing.T) {
			lab := newVethLab(t)
			d := newDatapath(t, Options{})
			const capped = 50
			mustApply(t, d, &Policy{TCPFlagSanity: true,
				Conns: ConnTracking{EstablishedTimeout: 2 * time.Second, HalfOpenTimeout: 2 * time.Second},
				Services: []Service{{ID: 1, Name: "api", Proto: ProtoTCP, Ports: []PortRange{{8443, 8443}},
					MaxConns: ConnLimits{ClientEstablished: capped}}}})
			if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			dst := netip.AddrPortFrom(lab.lb.Addr4, 8443)
			srv := startTCPServer(t, lab.b, dst)

			conns, failed := dialMany(t, lab.a, netip.Addr{}, dst, 200, 1500*time.Millisecond)
			if len(conns) != capped || failed != 200-capped {
				t.Fatalf("200 dials: %d connected, %d failed; want %d and %d", len(conns), failed, capped, 200-capped)
			}
			waitUntil(t, "the server accepts 50", 2*time.Second, func() bool { return srv.accepted() == capped })
			if got := countOf(t, d, lab.la.Addr4, 1); got != (ConnCount{Established: capped}) {
				t.Fatalf("the client holds %+v, want %d established", got, capped)
			}
			if n := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED); n < 200-capped {
				t.Fatalf("%d SYNs counted as over the cap, want at least %d", n, 200-capped)
			}

			// the client closes 10: the server's FIN answers and frees them
			for _, c := range conns[:10] {
				c.Close()
			}
			conns = conns[10:]
			waitUntil(t, "client closes free slots", time.Second, func() bool {
				return countOf(t, d, lab.la.Addr4, 1).Established == capped-10
			})
			more, failed := dialMany(t, lab.a, netip.Addr{}, dst, 11, time.Second)
			if len(more) != 10 || failed != 1 {
				t.Fatalf("after 10 client closes: %d of 11 dials connected, want 10", len(more))
			}
			// the server closes 10: its FIN frees them
			srv.closeN(10)
			waitUntil(t, "server closes free slots", time.Second, func() bool {
				return countOf(t, d, lab.la.Addr4, 1).Established == capped-10
			})
			more, failed = dialMany(t, lab.a, netip.Addr{}, dst, 11, time.Second)
			if len(more) != 10 || failed != 1 {
				t.Fatalf("after 10 server closes: %d of 11 dials connected, want 10", len(more))
			}

			// idle: nobody sends for the 2s timeout; the sweeper frees them all
			waitUntil(t, "idle connections are released", 6*time.Second, func() bool {
				if _, err := d.SweepFlows(); err != nil {
					t.Fatal(err)
				}
				return serviceHolds(t, d, 1) == ConnCount{}
			})
			fresh, failed := dialMany(t, lab.a, netip.Addr{}, dst, capped, 1500*time.Millisecond)
			if len(fresh) != capped || failed != 0 {
				t.Fatalf("after the idle timeout: %d of %d dials connected", len(fresh), capped)
			}
			// the idle ones were never cut: the 30 the server did not close
			// still carry data (counted by the server when each ends)
			for _, c := range conns {
				c.Write([]byte("ping"))
				c.Close()
			}
			waitUntil(t, "30 idle connections still carry data", 2*time.Second, func() bool { return srv.received.Load() == 30*4 })
			st, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.FlowCountMissing != 0 || st.FlowTableFull != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// A service's ACL admits real TCP from inside its CIDRs and not from outside,
// over IPv4 and IPv6.
func TestServiceACLVeth(t *testing.T) {
	lab := newVethLab(t)
	// a second client address on the same link, outside the ACL
	out4 := netip.MustParseAddr("10.77.0.100")
	out6 := netip.MustParseAddr("fd00:4d::100")
	for _, a := range []string{out4.String() + "/24", out6.String() + "/64"} {
		args := []string{"addr", "add", a, "dev", lab.la.Name}
		if out6.String()+"/64" == a {
			args = append(args, "nodad")
		}
		if err := lab.a.IP(args...); err != nil {
			t.Fatal(err)
		}
	}
	d := newDatapath(t, Options{})
	mustApply(t, d, &Policy{Services: []Service{{ID: 1, Name: "admin", Proto: ProtoTCP, Ports: []PortRange{{9443, 9443}},
		ACL: []netip.Prefix{netip.PrefixFrom(lab.la.Addr4, 26).Masked(), netip.PrefixFrom(lab.la.Addr6, 120).Masked()}}}})
	if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, AttachNative); return err }); err != nil {
		t.Fatal(err)
	}
	for _, fam := range []struct {
		name         string
		in, out, dst netip.Addr
	}{{"ipv4", lab.la.Addr4, out4, lab.lb.Addr4}, {"ipv6", lab.la.Addr6, out6, lab.lb.Addr6}} {
		t.Run(fam.name, func(t *testing.T) {
			dst := netip.AddrPortFrom(fam.dst, 9443)
			startTCPServer(t, lab.b, dst)
			if conns, _ := dialMany(t, lab.a, fam.in, dst, 3, time.Second); len(conns) != 3 {
				t.Fatalf("from inside the ACL (%v): %d of 3 connected", fam.in, len(conns))
			}
			before := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_ACL)
			if conns, _ := dialMany(t, lab.a, fam.out, dst, 3, 1200*time.Millisecond); len(conns) != 0 {
				t.Fatalf("from outside the ACL (%v): %d of 3 connected", fam.out, len(conns))
			}
			if n := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_ACL) - before; n < 3 {
				t.Fatalf("acl drops moved by %d for 3 refused dials", n)
			}
		})
	}
}

// A half-open SYN flood from random sources (raw packets) fills no more than
// the half-open cap of any one source, and the real client is still served.
func TestConnSYNFloodVeth(t *testing.T) {
	lab := newVethLab(t)
	d := newDatapath(t, Options{})
	const halfCap = 3
	mustApply(t, d, &Policy{TCPFlagSanity: true, Services: []Service{{ID: 1, Name: "api", Proto: ProtoTCP,
		Ports: []PortRange{{8443, 8443}}, MaxConns: ConnLimits{ClientEstablished: 20, ClientHalfOpen: halfCap}}}})
	if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, AttachNative); return err }); err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(lab.lb.Addr4, 8443)
	startTCPServer(t, lab.b, dst)

	// 200 spoofed sources in 10.200.0.0/16, 10 SYNs each from different ports
	const sources, perSource = 200, 10
	var fd int
	err := lab.a.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	rng := rand.New(rand.NewPCG(7, 7))
	spoofed := map[netip.Addr]bool{}
	for len(spoofed) < sources {
		spoofed[netip.AddrFrom4([4]byte{10, 200, byte(rng.IntN(256)), byte(1 + rng.IntN(254))})] = true
	}
	sa := &unix.SockaddrInet4{Addr: lab.lb.Addr4.As4()}
	for src := range spoofed {
		for i := 0; i < perSource; i++ {
			frame := packet.Build(packet.Spec{Src: src, Dst: lab.lb.Addr4, Proto: packet.TCP,
				SrcPort: uint16(20000 + i), DstPort: 8443, TCPFlags: packet.SYN, Seq: rng.Uint32()})
			if err := unix.Sendto(fd, frame[14:], 0, sa); err != nil {
				t.Fatalf("send a spoofed SYN: %v", err)
			}
		}
	}
	refused := uint64((perSource - halfCap) * sources)
	waitUntil(t, "the flood reaches the guard", 3*time.Second, func() bool {
		return reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_CONN_CLIENT_HALF_OPEN) >= refused
	})
	worst, clients := uint32(0), 0
	err = d.ClientConns(func(c ClientConns) error {
		if spoofed[c.Addr.Addr()] {
			clients++
			worst = max(worst, c.HalfOpen+c.Established)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if clients != sources || worst != halfCap {
		t.Fatalf("%d spoofed sources hold slots, the worst %d; want %d holding at most %d", clients, worst, sources, halfCap)
	}
	if got := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_CONN_CLIENT_HALF_OPEN); got != refused {
		t.Errorf("%d SYNs refused by the half-open cap, want %d", got, refused)
	}
	conns, _ := dialMany(t, lab.a, netip.Addr{}, dst, 5, time.Second)
	if len(conns) != 5 {
		t.Fatalf("during the flood the real client got %d of 5 connections", len(conns))
	}
	if got := countOf(t, d, lab.la.Addr4, 1); got != (ConnCount{Established: 5}) {
		t.Errorf("the real client holds %+v", got)
	}
}

// The egress hook goes on with every attach mode, survives its owner with the
// pins, is adopted by the next Load and goes away with Detach.
func TestEgressPinnedAndDetached(t *testing.T) {
	for _, mode := range []AttachMode{AttachNative, AttachTC} {
		t.Run(string(mode), func(t *testing.T) {
			lab := newVethLab(t)
			dir := tempPinDir(t)
			pol := &Policy{Services: []Service{{ID: 1, Name: "api", Proto: ProtoTCP, Ports: []PortRange{{8443, 8443}},
				MaxConns: ConnLimits{ClientEstablished: 1}}}}
			d, err := Load(Options{PinDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			mustApply(t, d, pol)
			if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			d.Close()
			dst := netip.AddrPortFrom(lab.lb.Addr4, 8443)
			startTCPServer(t, lab.b, dst)
			// with the owner gone both hooks still follow the connection
			if conns, failed := dialMany(t, lab.a, netip.Addr{}, dst, 2, time.Second); len(conns) != 1 || failed != 1 {
				t.Fatalf("owner gone: %d of 2 connected under a cap of 1", len(conns))
			}
			d2, err := Load(Options{PinDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer d2.Close()
			if got := countOf(t, d2, lab.la.Addr4, 1); got != (ConnCount{Established: 1}) {
				t.Fatalf("the adopted maps hold %+v", got)
			}
			if err := lab.b.Do(func() error { _, err := d2.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			if hooks := egressHooks(t, lab.b, lab.lb.Name); hooks != 1 {
				t.Fatalf("%d egress hooks after adoption, want 1", hooks)
			}
			if err := lab.b.Do(func() error { return Detach(dir) }); err != nil {
				t.Fatal(err)
			}
			if hooks := egressHooks(t, lab.b, lab.lb.Name); hooks != 0 {
				t.Fatalf("%d egress hooks left after Detach", hooks)
			}
		})
	}
}

// egressHooks counts the BPF programs on iface's egress: TCX links and clsact filters.
func egressHooks(t *testing.T, ns *netns.Namespace, iface string) int {
	t.Helper()
	n := 0
	err := ns.Do(func() error {
		dev, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: dev.Index, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return fmt.Errorf("query TCX egress: %w", err)
		}
		n += len(res.Programs)
		filters, err := netlink.FilterList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: dev.Index}}, netlink.HANDLE_MIN_EGRESS)
		if err != nil {
			return nil // no clsact qdisc: nothing hangs there
		}
		for _, f := range filters {
			if _, ok := f.(*netlink.BpfFilter); ok {
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
