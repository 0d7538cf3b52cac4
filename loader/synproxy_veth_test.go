package loader

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/apiguard/apiguard/test/bench/trafgen"
	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Real connections through the SYN proxy over a veth pair: fresh clients
// (a source address never seen before for each connection) complete HTTP
// requests to a real listener, with the options their SYNs offered, while
// a spoofed SYN flood never reaches the listener's queue and spoofed ACKs
// with made-up cookies are dropped before the listener can reset them.
func TestSynProxyVeth(t *testing.T) {
	for _, mode := range []AttachMode{AttachNative, AttachGeneric, AttachTCX} {
		t.Run(string(mode), func(t *testing.T) { synProxyVeth(t, mode) })
	}
}

const (
	spFresh4 = 40 // fresh IPv4 clients
	spFresh6 = 20
	spFlood  = 20000 // spoofed SYNs
	spBadACK = 2000  // spoofed ACKs with made-up cookies
)

func synProxyVeth(t *testing.T, mode AttachMode) {
	lab := newVethLab(t)
	d := newDatapath(t, Options{})
	mustApply(t, d, synProxyPolicy())
	attachSynProxy(t, d, lab, mode)
	srv := netip.AddrPortFrom(lab.lb.Addr4, spPort)
	srv6 := netip.AddrPortFrom(lab.lb.Addr6, spPort)
	startInfoServer(t, lab.b, spPort, false)
	fresh := freshAddrs(t, lab, spFresh4, spFresh6)
	clientWS := clientWindowScale(t, lab.a)
	host := serverHost(t, lab)

	before := netstat(t, lab.b)
	flooded := make(chan int, 1)
	go func() { flooded <- spoofSYNs(t, lab, srv, spFlood) }()

	// fresh clients, a few at a time, while the flood runs
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		work = make(chan netip.Addr)
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for from := range work {
				to := srv
				if from.Is6() {
					to = srv6
				}
				info, err := httpFrom(lab.a, from, to)
				if err == nil {
					err = info.check(from, clientWS, host)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("client %v: %w", from, err))
					mu.Unlock()
				}
			}
		}()
	}
	for _, a := range fresh {
		work <- a
	}
	close(work)
	wg.Wait()
	sent := <-flooded
	if len(errs) > 0 {
		t.Fatalf("%d of %d fresh clients failed, first: %v", len(errs), len(fresh), errs[0])
	}
	if sent < spFlood/2 {
		t.Fatalf("the flood sent %d SYNs, want at least %d", sent, spFlood/2)
	}

	// the guard answered every SYN; none reached the listener
	answered := func() uint64 {
		return counterMap(t, d)[[2]uint8{uint8(ActionDrop), uint8(GuardAgReasonAG_R_SYN_COOKIE)}]
	}
	waitUntil(t, "the flood's SYNs are answered", 10*time.Second, func() bool {
		return answered() >= uint64(sent+len(fresh))
	})
	after := netstat(t, lab.b)
	for _, k := range []string{"ListenOverflows", "ListenDrops", "SyncookiesSent", "SyncookiesFailed"} {
		if after[k] != before[k] {
			t.Errorf("TcpExt%s moved by %d during the flood: SYNs reached the listener", k, after[k]-before[k])
		}
	}
	st, err := d.SynProxyStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Accepted != uint64(len(fresh)) || st.AcceptFailed != 0 {
		t.Errorf("%d handshakes handed to the listener (%d refused), want %d", st.Accepted, st.AcceptFailed, len(fresh))
	}

	// spoofed ACKs with made-up cookies: dropped, so the listener resets none
	before = netstat(t, lab.b)
	badCookies := func() uint64 {
		return counterMap(t, d)[[2]uint8{uint8(ActionDrop), uint8(GuardAgReasonAG_R_BAD_COOKIE)}]
	}
	bad0 := badCookies()
	spoofACKs(t, lab, srv, spBadACK)
	waitUntil(t, "the spoofed ACKs are dropped", 10*time.Second, func() bool {
		return badCookies()-bad0 == spBadACK
	})
	if after := netstat(t, lab.b); after["OutRsts"] != before["OutRsts"] {
		t.Errorf("the listener sent %d resets: made-up cookies reached it", after["OutRsts"]-before["OutRsts"])
	}
	t.Logf("%s: %d fresh clients through %d spoofed SYNs (%d SYN-ACKs); proxy %+v", mode, len(fresh), sent, answered(), st)
}

// attachSynProxy attaches the guard in mode (and with it the handshake
// program the XDP modes need); the host settings come from the server's
// namespace.
func attachSynProxy(t testing.TB, d *Datapath, lab *vethLab, mode AttachMode) {
	t.Helper()
	attachSynProxyGuard(t, d, lab, mode)
	if mode == AttachNative {
		attachPeerPass(t, lab)
	}
}

// attachSynProxyGuard is attachSynProxy without anything on the peer.
func attachSynProxyGuard(t testing.TB, d *Datapath, lab *vethLab, mode AttachMode) {
	t.Helper()
	err := lab.b.Do(func() error {
		h, err := HostTCP(lab.lb.Name)
		if err != nil {
			return err
		}
		if err := d.SetSynProxyHost(h); err != nil {
			return err
		}
		// in the XDP modes Attach puts the hand-over program on too
		_, err = d.Attach(lab.lb.Name, mode)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// attachPeerPass puts an XDP_PASS program on the client's end: a veth
// delivers XDP_TX frames to its peer only when the peer has NAPI, an XDP
// program of its own (a NIC needs nothing of the kind).
func attachPeerPass(t testing.TB, lab *vethLab) {
	t.Helper()
	pass, err := trafgen.PassProgram()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pass.Close() })
	var l link.Link
	if err := lab.a.Do(func() error {
		ifc, err := net.InterfaceByName(lab.la.Name)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: pass, Interface: ifc.Index, Flags: link.XDPDriverMode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

func serverHost(t *testing.T, lab *vethLab) SynProxyHost {
	t.Helper()
	var h SynProxyHost
	if err := lab.b.Do(func() (err error) { h, err = HostTCP(lab.lb.Name); return err }); err != nil {
		t.Fatal(err)
	}
	return h
}

// freshAddrs adds n4 IPv4 and n6 IPv6 addresses to the client's end: one
// per connection, none seen by the guard before.
func freshAddrs(t *testing.T, lab *vethLab, n4, n6 int) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for i := range n4 {
		a := netip.AddrFrom4([4]byte{10, 77, 0, byte(100 + i)})
		if err := lab.a.IP("addr", "add", a.String()+"/24", "dev", lab.la.Name); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	for i := range n6 {
		a := netip.MustParseAddr(fmt.Sprintf("fd00:4d::%x", 0x100+i))
		if err := lab.a.IP("addr", "add", a.String()+"/64", "dev", lab.la.Name, "nodad"); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// clientWindowScale is the window scale the client's kernel announces: the
// server's connection must send with it.
func clientWindowScale(t *testing.T, ns *netns.Namespace) int {
	t.Helper()
	var ws int
	if err := ns.Do(func() error {
		h, err := HostTCP("lo")
		ws = int(h.WindowScale)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ws
}

// connInfo is what the server knows of a connection (TCP_INFO), as its
// handler reports it.
type connInfo struct {
	peer        netip.Addr
	options     uint8 // TCPI_OPT_*
	sndWS       int   // the client's scale, which the server sends with
	rcvWS       int   // the server's own
	sndMSS      int
	requestSeen bool
}

const (
	tcpiOptTimestamps = 1
	tcpiOptSACK       = 2
	tcpiOptWScale     = 4
)

func (c connInfo) check(from netip.Addr, clientWS int, h SynProxyHost) error {
	var errs []error
	if c.peer != from {
		errs = append(errs, fmt.Errorf("the server saw peer %v", c.peer))
	}
	if want := uint8(tcpiOptTimestamps | tcpiOptSACK | tcpiOptWScale); c.options&want != want {
		errs = append(errs, fmt.Errorf("options %#x, want timestamps, SACK and window scaling", c.options))
	}
	if c.sndWS != clientWS || c.rcvWS != int(h.WindowScale) {
		errs = append(errs, fmt.Errorf("window scales %d/%d, want the client's %d and the host's %d", c.sndWS, c.rcvWS, clientWS, h.WindowScale))
	}
	// the client's MSS (a veth of MTU 1500: 1460 and 1440, both in the
	// cookie's table exactly) less the timestamp option
	want := int(h.MSS4) - 12
	if from.Is6() {
		want = int(h.MSS6) - 12
	}
	if c.sndMSS != want {
		errs = append(errs, fmt.Errorf("send MSS %d, want %d", c.sndMSS, want))
	}
	if !c.requestSeen {
		errs = append(errs, errors.New("the handler saw no request"))
	}
	return errors.Join(errs...)
}

type connKey struct{}

// startInfoServer serves, on both families, the server side's TCP_INFO of
// the connection each request came on. mptcp picks Go's default listener.
func startInfoServer(t testing.TB, ns *netns.Namespace, port uint16, mptcp bool) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(mptcp)
		ln, err = lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(netip.IPv6Unspecified(), port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _ := r.Context().Value(connKey{}).(*net.TCPConn)
			if c == nil {
				http.Error(w, "not a TCP connection", http.StatusInternalServerError)
				return
			}
			raw, err := rawTCPInfo(c)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			peer := netip.MustParseAddrPort(c.RemoteAddr().String()).Addr().Unmap()
			// tcp_info: options at 5, the scales' nibbles at 6, snd_mss at 16
			fmt.Fprintf(w, "%s %d %d %d %d\n", peer, raw[5], raw[6]&0xf, raw[6]>>4, binary.NativeEndian.Uint32(raw[16:]))
		}),
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

func rawTCPInfo(c *net.TCPConn) ([]byte, error) {
	sc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 104)
	var serr error
	err = sc.Control(func(fd uintptr) {
		n := uint32(len(buf))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.IPPROTO_TCP, unix.TCP_INFO,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e != 0 {
			serr = e
		}
	})
	return buf, errors.Join(err, serr)
}

// httpFrom makes one GET on a new connection from address from, in ns.
func httpFrom(ns *netns.Namespace, from netip.Addr, to netip.AddrPort) (connInfo, error) {
	var c net.Conn
	if err := ns.Do(func() (err error) {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
		c, err = d.Dial("tcp", to.String())
		return err
	}); err != nil {
		return connInfo{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := http.NewRequest(http.MethodGet, "http://"+to.String()+"/", nil)
	if err != nil {
		return connInfo{}, err
	}
	if err := req.Write(c); err != nil {
		return connInfo{}, fmt.Errorf("send the request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return connInfo{}, fmt.Errorf("read the response: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return connInfo{}, fmt.Errorf("status %d, body %q, err %v", resp.StatusCode, body, err)
	}
	f := strings.Fields(string(body))
	if len(f) != 5 {
		return connInfo{}, fmt.Errorf("handler said %q", body)
	}
	info := connInfo{requestSeen: true}
	if info.peer, err = netip.ParseAddr(f[0]); err != nil {
		return info, err
	}
	var n [4]int
	for i := range n {
		if n[i], err = strconv.Atoi(f[i+1]); err != nil {
			return info, err
		}
	}
	info.options, info.sndWS, info.rcvWS, info.sndMSS = uint8(n[0]), n[1], n[2], n[3]
	return info, nil
}

// netstat reads the TCP and TcpExt counters of ns.
func netstat(t testing.TB, ns *netns.Namespace) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := ns.Do(func() error {
		for _, f := range []string{"/proc/thread-self/net/netstat", "/proc/thread-self/net/snmp"} {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			for i := 0; i+1 < len(lines); i += 2 {
				names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
				if len(names) != len(vals) || (names[0] != "TcpExt:" && names[0] != "Tcp:") {
					continue
				}
				for j := 1; j < len(names); j++ {
					v, err := strconv.ParseInt(vals[j], 10, 64)
					if err != nil {
						return fmt.Errorf("%s %s: %w", f, names[j], err)
					}
					out[names[j]] = v
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rawIPSocket sends IPv4 datagrams from ns through a raw socket.
func rawIPSocket(t *testing.T, ns *netns.Namespace) int {
	t.Helper()
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

// spoofSYNs sends n SYNs from random sources in 10.200.0.0/16 to dst, as a
// Linux client would (all options), and returns how many left. Bounded by
// count and by 20 s.
func spoofSYNs(t *testing.T, lab *vethLab, dst netip.AddrPort, n int) int {
	fd := rawIPSocket(t, lab.a)
	rng := rand.New(rand.NewPCG(3, 4))
	deadline := time.Now().Add(20 * time.Second)
	opts := synOptions(synOffer{mss: 1460, wscale: 7, sack: true, ts: true}, 1)
	sent := 0
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		src := netip.AddrFrom4([4]byte{10, 200, byte(rng.IntN(256)), byte(1 + rng.IntN(254))})
		f := packet.Build(packet.Spec{Src: src, Dst: dst.Addr(), Proto: packet.TCP, SrcPort: uint16(1024 + rng.IntN(60000)),
			DstPort: dst.Port(), TCPFlags: packet.SYN, Seq: rng.Uint32(), TCPOptions: opts})
		if err := unix.Sendto(fd, f[14:], 0, &unix.SockaddrInet4{Addr: dst.Addr().As4()}); err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				time.Sleep(time.Millisecond)
				continue
			}
			t.Errorf("send a spoofed SYN: %v", err)
			return sent
		}
		sent++
	}
	return sent
}

// spoofACKs sends n handshake-completing ACKs with made-up cookies.
func spoofACKs(t *testing.T, lab *vethLab, dst netip.AddrPort, n int) {
	fd := rawIPSocket(t, lab.a)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range n {
		src := netip.AddrFrom4([4]byte{10, 201, byte(i >> 8), byte(i)})
		f := packet.Build(packet.Spec{Src: src, Dst: dst.Addr(), Proto: packet.TCP, SrcPort: uint16(1024 + rng.IntN(60000)),
			DstPort: dst.Port(), TCPFlags: packet.ACK, Seq: rng.Uint32(), Ack: rng.Uint32()})
		for try := 0; ; try++ {
			err := unix.Sendto(fd, f[14:], 0, &unix.SockaddrInet4{Addr: dst.Addr().As4()})
			if err == nil {
				break
			}
			if !errors.Is(err, unix.ENOBUFS) || try == 100 {
				t.Fatalf("send a spoofed ACK: %v", err)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// The kernel takes no handshake from BPF for an MPTCP listener (Go's default
// since 1.24): the hand-over is refused and counted, the listener resets the
// connection, and the client sees a reset at once, not a hang.
func TestSynProxyMPTCPListenerRefused(t *testing.T) {
	lab := newVethLab(t)
	d := newDatapath(t, Options{})
	mustApply(t, d, synProxyPolicy())
	attachSynProxy(t, d, lab, AttachTCX)
	startInfoServer(t, lab.b, spPort, true)
	_, err := httpFrom(lab.a, lab.la.Addr4, netip.AddrPortFrom(lab.lb.Addr4, spPort))
	if !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("request to an MPTCP listener: %v, want a reset", err)
	}
	st, err := d.SynProxyStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.AcceptFailed == 0 || st.Accepted != 0 {
		t.Errorf("proxy %+v: want the hand-over refused", st)
	}
}

// A handshake the kernel answered itself with one of its own SYN cookies
// (here tcp_syncookies=2, before the proxy came on: what an "auto" proxy
// switching on mid-flood meets) completes once the proxy is on: the judge
// lets a kernel cookie through and the kernel accepts it.
func TestSynProxyPassesKernelCookies(t *testing.T) {
	lab := newVethLab(t)
	d := newDatapath(t, Options{})
	off := synProxyPolicy()
	off.Services[0].SynProxy = SynProxyOff
	mustApply(t, d, off)
	attachSynProxy(t, d, lab, AttachNative)
	startInfoServer(t, lab.b, spPort, false)
	if err := lab.b.Sysctl("net.ipv4.tcp_syncookies", "2"); err != nil {
		t.Fatal(err)
	}
	client := rawClient(t, lab)
	segs := captureTo(t, lab, client)
	fd := rawIPSocket(t, lab.a)
	send := func(flags uint8, seq, ack uint32) {
		f := packet.Build(packet.Spec{Src: client, Dst: lab.lb.Addr4, Proto: packet.TCP, SrcPort: 33333,
			DstPort: spPort, TCPFlags: flags, Seq: seq, Ack: ack})
		if err := unix.Sendto(fd, f[14:], 0, &unix.SockaddrInet4{Addr: lab.lb.Addr4.As4()}); err != nil {
			t.Fatal(err)
		}
	}
	const isn = 7000
	send(packet.SYN, isn, 0)
	cookie := waitSegment(t, "the kernel answers with a cookie", segs, func(s segment) bool { return s.Flags == packet.SYN|packet.ACK }).Seq

	mustApply(t, d, synProxyPolicy())
	before := netstat(t, lab.b)
	st0, err := d.SynProxyStats()
	if err != nil {
		t.Fatal(err)
	}
	send(packet.ACK, isn+1, cookie+1)
	waitUntil(t, "the kernel takes its cookie", 5*time.Second, func() bool {
		return netstat(t, lab.b)["SyncookiesRecv"] == before["SyncookiesRecv"]+1
	})
	st1, err := d.SynProxyStats()
	if err != nil {
		t.Fatal(err)
	}
	if st1.KernelCookie != st0.KernelCookie+1 || st1.CookieOK != st0.CookieOK {
		t.Errorf("proxy %+v after %+v: want one kernel cookie let through", st1, st0)
	}
	if after := netstat(t, lab.b); after["OutRsts"] != before["OutRsts"] {
		t.Errorf("the listener reset %d segments", after["OutRsts"]-before["OutRsts"])
	}
}

// captureTo reads, on the client side, the TCP segments to dst (decoded
// whole); the function returned gives those queued since the last call.
func captureTo(t *testing.T, lab *vethLab, dst netip.Addr) func() []segment {
	t.Helper()
	var fd int
	if err := lab.a.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(lab.la.Name)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return func() []segment {
		var out []segment
		buf := make([]byte, 4096)
		for range 1000 { // what is queued, bounded
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				break
			}
			if s, err := decode(buf[:n]); err == nil && s.Dst == dst {
				out = append(out, s)
			}
		}
		return out
	}
}

// waitSegment waits for a captured segment that match accepts.
func waitSegment(t *testing.T, what string, capture func() []segment, match func(segment) bool) segment {
	t.Helper()
	var got segment
	waitUntil(t, what, 5*time.Second, func() bool {
		for _, s := range capture() {
			if match(s) {
				got = s
				return true
			}
		}
		return false
	})
	return got
}

// A handshake whose ACK never came: the client's first data segment carries
// the same numbers, completes it and delivers its data (the request), and
// the server answers it. The client is a raw socket, which sends no ACK.
func TestSynProxyFirstDataSegment(t *testing.T) {
	for _, mode := range []AttachMode{AttachNative, AttachTCX} {
		t.Run(string(mode), func(t *testing.T) {
			lab := newVethLab(t)
			d := newDatapath(t, Options{})
			mustApply(t, d, synProxyPolicy())
			attachSynProxy(t, d, lab, mode)
			startInfoServer(t, lab.b, spPort, false)
			client := rawClient(t, lab)
			segs := captureTo(t, lab, client)
			fd := rawIPSocket(t, lab.a)
			send := func(s packet.Spec) {
				f := packet.Build(s)
				if err := unix.Sendto(fd, f[14:], 0, &unix.SockaddrInet4{Addr: lab.lb.Addr4.As4()}); err != nil {
					t.Fatal(err)
				}
			}
			const isn, tsval = 9000, 77
			base := packet.Spec{Src: client, Dst: lab.lb.Addr4, Proto: packet.TCP, SrcPort: 33334, DstPort: spPort}
			syn := base
			syn.TCPFlags, syn.Seq = packet.SYN, isn
			syn.TCPOptions = synOptions(synOffer{mss: 1460, wscale: 7, sack: true, ts: true}, tsval)
			send(syn)
			synAck := waitSegment(t, "the proxy's SYN-ACK", segs, func(s segment) bool { return s.Flags == packet.SYN|packet.ACK })

			// the request, padded past what the TC programs pull into the
			// linear area: the payload must not matter
			req := "GET / HTTP/1.0\r\nX-Pad: " + strings.Repeat("p", 300) + "\r\n\r\n"
			data := base
			data.TCPFlags, data.Seq, data.Ack = packet.ACK|packet.PSH, isn+1, synAck.Seq+1
			data.TCPOptions = ackOptions(true, tsval+1, synAck.Opts.TSval)
			f := packet.Build(data)
			f = append(f, req...)
			fixLengths(f)
			if err := unix.Sendto(fd, f[14:], 0, &unix.SockaddrInet4{Addr: lab.lb.Addr4.As4()}); err != nil {
				t.Fatal(err)
			}
			waitSegment(t, "the server's answer", segs, func(s segment) bool { return s.Payload > 0 && s.SrcPort == spPort })
			st, err := d.SynProxyStats()
			if err != nil {
				t.Fatal(err)
			}
			if st.Accepted != 1 || st.AcceptFailed != 0 {
				t.Errorf("proxy %+v: want the data segment handed over", st)
			}
		})
	}
}

// rawClient is a client address the client namespace does not hold (its
// kernel leaves the server's segments alone: a raw socket plays the client),
// whose frames the server sends to the client's end of the veth.
func rawClient(t *testing.T, lab *vethLab) netip.Addr {
	t.Helper()
	client := netip.MustParseAddr("10.77.0.250")
	mac, err := lab.la.MAC()
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.b.IP("neigh", "replace", client.String(), "lladdr", mac.String(), "dev", lab.lb.Name); err != nil {
		t.Fatal(err)
	}
	return client
}

// fixLengths makes an IPv4 TCP frame's lengths and checksums cover what
// follows its headers.
func fixLengths(f []byte) {
	ip := f[14:]
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], packet.Checksum(0, ip[:20]))
	tcp := ip[20:]
	tcp[16], tcp[17] = 0, 0
	pseudo := packet.Sum(0, ip[12:20]) + packet.TCP + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], packet.Checksum(pseudo, tcp))
}

// CheckSynProxy, run where the daemon runs (the guarded interface's
// namespace): a plain listener passes, an MPTCP listener on a proxied port
// and tcp_syncookies=0 are refused with what is wrong.
func TestCheckSynProxy(t *testing.T) {
	lab := newVethLab(t)
	const plainPort = spPort + 1
	startInfoServer(t, lab.b, spPort, true)
	startInfoServer(t, lab.b, plainPort, false)
	check := func(ports ...PortRange) error {
		var err error
		if derr := lab.b.Do(func() error { _, err = CheckSynProxy([]string{lab.lb.Name}, ports); return nil }); derr != nil {
			t.Fatal(derr)
		}
		return err
	}
	var mptcp []uint16
	if err := lab.b.Do(func() (err error) { mptcp, err = MPTCPListeners(); return err }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(mptcp, []uint16{spPort}) {
		t.Errorf("MPTCP listeners %v, want [%d] (the plain one on %d is not)", mptcp, spPort, plainPort)
	}
	if err := check(PortRange{plainPort, plainPort}); err != nil {
		t.Errorf("a plain listener: %v", err)
	}
	if err := check(PortRange{spPort - 1, spPort}); err == nil || !strings.Contains(err.Error(), "MPTCP") {
		t.Errorf("an MPTCP listener: %v, want a refusal", err)
	}
	if err := lab.b.Sysctl("net.ipv4.tcp_syncookies", "0"); err != nil {
		t.Fatal(err)
	}
	if err := check(PortRange{plainPort, plainPort}); err == nil || !strings.Contains(err.Error(), "tcp_syncookies") {
		t.Errorf("tcp_syncookies=0: %v, want a refusal", err)
	}
}
