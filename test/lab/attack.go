package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/apiguard/apiguard/test/packet"
	"golang.org/x/sys/unix"
)

// AttackKind names a traffic generator.
type AttackKind string

// The attacks. All are bounded by a duration and a count, and paced to a rate.
const (
	// UDPFlood sends datagrams from the attacker's own address, one socket
	// (one source port) per thread.
	UDPFlood AttackKind = "udp-flood"
	// SYNFlood sends TCP SYNs from random spoofed sources through a raw socket.
	SYNFlood AttackKind = "syn-flood"
	// ConnFlood opens real TCP connections and holds them open.
	ConnFlood AttackKind = "conn-flood"
	// HTTPFlood sends HTTP requests over keep-alive connections.
	HTTPFlood AttackKind = "http-flood"
	// PortScan sends SYNs from the attacker's own address to many ports.
	PortScan AttackKind = "port-scan"
	// SpoofedUDPFlood sends datagrams from forged sources (Spoof) through a
	// raw socket: with a /32 or /128, all "from" one victim.
	SpoofedUDPFlood AttackKind = "spoofed-udp-flood"
)

// Attack configures one attack.
type Attack struct {
	Kind AttackKind `json:"kind"`
	// Target is the server's address; its family decides IPv4 or IPv6.
	Target netip.Addr `json:"target"`
	// Port is the destination port, the first one of a scan.
	Port int `json:"port"`
	// Ports is how many ports a scan covers, from Port up (default 1000).
	Ports int `json:"ports,omitempty"`
	// Rate is packets (datagrams, SYNs), connections or requests per second
	// over all threads; 0 is as fast as the threads go.
	Rate float64 `json:"rate,omitempty"`
	// Duration bounds the attack (default 5s).
	Duration time.Duration `json:"duration,omitempty"`
	// Count bounds the packets, connections or requests (0: no bound but
	// the duration).
	Count int64 `json:"count,omitempty"`
	// Threads is how many OS threads send (default 1); CPUs pins thread i to
	// CPUs[i % len(CPUs)].
	Threads int   `json:"threads,omitempty"`
	CPUs    []int `json:"cpus,omitempty"`
	// Payload is the UDP payload size (default 64).
	Payload int `json:"payload,omitempty"`
	// Flows is the number of UDP sockets (source ports) per thread (default 1).
	Flows int `json:"flows,omitempty"`
	// Source is the attacker's own address, for the raw senders (port scan).
	Source netip.Addr `json:"source"`
	// Spoof is where a SYN flood draws its sources from (default: 1.0.0.0/8
	// to 223.0.0.0/8 for IPv4, 2000::/3 for IPv6).
	Spoof netip.Prefix `json:"spoof"`
	// Path is the HTTP flood's request: POST /login when it is "/login",
	// GET otherwise (default "/login").
	Path string `json:"path,omitempty"`
	// Conns is the HTTP flood's number of concurrent connections (default 32).
	Conns int `json:"conns,omitempty"`
}

func (a *Attack) setDefaults() {
	if a.Duration <= 0 {
		a.Duration = 5 * time.Second
	}
	if a.Threads <= 0 {
		a.Threads = 1
	}
	if a.Ports <= 0 {
		a.Ports = 1000
	}
	if a.Payload <= 0 {
		a.Payload = 64
	}
	if a.Path == "" {
		a.Path = "/login"
	}
	if a.Conns <= 0 {
		a.Conns = 32
	}
}

func (a *Attack) check() error {
	switch a.Kind {
	case UDPFlood, SYNFlood, ConnFlood, HTTPFlood, PortScan, SpoofedUDPFlood:
	default:
		return fmt.Errorf("unknown attack %q", a.Kind)
	}
	if !a.Target.IsValid() {
		return errors.New("attack without a target")
	}
	if a.Port < 1 || a.Port > 65535 || (a.Kind == PortScan && a.Port+a.Ports-1 > 65535) {
		return fmt.Errorf("port %d (+%d) is out of range", a.Port, a.Ports)
	}
	if a.Kind == PortScan && !a.Source.IsValid() {
		return errors.New("a port scan needs the attacker's own address as source")
	}
	if a.Rate < 0 || a.Count < 0 {
		return errors.New("negative rate or count")
	}
	return nil
}

// AttackReport is an attack's progress; the last one has Done set.
type AttackReport struct {
	Sent   int64  `json:"sent"`   // packets, connection attempts or requests
	OK     int64  `json:"ok"`     // connections established, requests answered
	Errors int64  `json:"errors"` // failed sends, dials or requests
	Done   bool   `json:"done,omitempty"`
	Err    string `json:"err,omitempty"`
}

// AttackProc is a running attack.
type AttackProc struct {
	*Proc
	Attack Attack
	last   atomic.Pointer[AttackReport]
	final  chan AttackReport
}

// Last is the attack's latest report.
func (a *AttackProc) Last() AttackReport {
	if r := a.last.Load(); r != nil {
		return *r
	}
	return AttackReport{}
}

// Wait waits for the attack to end and returns its final report.
func (a *AttackProc) Wait(timeout time.Duration) (AttackReport, error) {
	select {
	case r := <-a.final:
		if r.Err != "" {
			return r, fmt.Errorf("%s: %s", a.Attack.Kind, r.Err)
		}
		// the process exits right after its final report
		return r, a.Proc.Wait(10 * time.Second)
	case <-a.Done():
		select {
		case r := <-a.final: // reported just before exiting
			if r.Err != "" {
				return r, fmt.Errorf("%s: %s", a.Attack.Kind, r.Err)
			}
			return r, a.exitErr()
		default:
		}
		return a.Last(), fmt.Errorf("%s ended without a final report: %v", a.Attack.Kind, a.exitErr())
	case <-time.After(timeout):
		return a.Last(), fmt.Errorf("%s did not end within %v", a.Attack.Kind, timeout)
	}
}

// StartAttack runs an attack from attacker namespace i (0-based). Attack.Source
// defaults to that attacker's address in the target's family.
func (l *Lab) StartAttack(i int, a Attack) (*AttackProc, error) {
	if i < 0 || i >= len(l.Attackers) {
		return nil, fmt.Errorf("attacker %d: the lab has %d", i, len(l.Attackers))
	}
	if !a.Source.IsValid() {
		a.Source = l.Attackers[i].Addr4
		if a.Target.Is6() {
			a.Source = l.Attackers[i].Addr6
		}
	}
	a.setDefaults()
	if err := a.check(); err != nil {
		return nil, err
	}
	ap := &AttackProc{Attack: a, final: make(chan AttackReport, 1)}
	p, err := l.startRole(fmt.Sprintf("%s from attacker %d", a.Kind, i), l.Attackers[i].NS, "attack", a, func(line []byte) {
		var r AttackReport
		if json.Unmarshal(line, &r) != nil {
			return
		}
		ap.last.Store(&r)
		if r.Done {
			ap.final <- r
		}
	})
	if err != nil {
		return nil, err
	}
	ap.Proc = p
	return ap, nil
}

// RunAttack runs an attack to its end and returns the final report.
func (l *Lab) RunAttack(i int, a Attack) (AttackReport, error) {
	ap, err := l.StartAttack(i, a)
	if err != nil {
		return AttackReport{}, err
	}
	d := a.Duration
	if d <= 0 {
		d = 5 * time.Second
	}
	return ap.Wait(d + 30*time.Second)
}

// counters are an attack's running totals.
type counters struct{ sent, ok, errs atomic.Int64 }

func (c *counters) report(done bool, err error) AttackReport {
	r := AttackReport{Sent: c.sent.Load(), OK: c.ok.Load(), Errors: c.errs.Load(), Done: done}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// runAttack is the attack role: it runs inside an attacker namespace.
func runAttack(ctx context.Context, config []byte, out *reporter) error {
	var a Attack
	if err := json.Unmarshal(config, &a); err != nil {
		return fmt.Errorf("attack configuration: %w", err)
	}
	a.setDefaults()
	if err := a.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.Duration)
	defer cancel()
	var c counters
	stop := make(chan struct{})
	tickerDone := make(chan struct{})
	go func() {
		defer close(tickerDone)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				out.report(c.report(false, nil))
			}
		}
	}()
	var err error
	switch a.Kind {
	case UDPFlood:
		err = udpFlood(ctx, &a, &c)
	case SYNFlood, PortScan:
		err = rawSYN(ctx, &a, &c)
	case SpoofedUDPFlood:
		err = spoofedUDP(ctx, &a, &c)
	case ConnFlood:
		err = connFlood(ctx, &a, &c)
	case HTTPFlood:
		err = httpFlood(ctx, &a, &c)
	}
	close(stop)
	<-tickerDone
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = nil
	}
	out.report(c.report(true, err))
	return nil
}

// pacer spreads a thread's share of the rate evenly over time.
type pacer struct {
	start time.Time
	rate  float64 // per second; 0 is unpaced
	count int64   // this thread's bound
}

// next returns how many events may go out now (at most max), or 0 after
// sleeping a little when none is due yet. It returns -1 when the count is
// reached or ctx is done.
func (p *pacer) next(ctx context.Context, done int64, batch int64) int64 {
	if ctx.Err() != nil || (p.count > 0 && done >= p.count) {
		return -1
	}
	n := batch
	if p.rate > 0 {
		due := int64(p.rate*time.Since(p.start).Seconds()) + 1
		if due <= done {
			wait := time.Duration(float64(done+1-due) / p.rate * float64(time.Second))
			time.Sleep(min(max(wait, 100*time.Microsecond), 10*time.Millisecond))
			return 0
		}
		n = min(n, due-done)
	}
	if p.count > 0 {
		n = min(n, p.count-done)
	}
	return n
}

// threads runs fn on a.Threads locked OS threads, pinned as a.CPUs says, each
// with its share of the rate and count.
func threads(ctx context.Context, a *Attack, fn func(ctx context.Context, id int, p *pacer) error) error {
	var wg sync.WaitGroup
	errs := make([]error, a.Threads)
	start := time.Now()
	for i := range a.Threads {
		share := a.Count / int64(a.Threads)
		if int64(i) < a.Count%int64(a.Threads) {
			share++
		}
		if a.Count > 0 && share == 0 {
			continue
		}
		p := &pacer{start: start, rate: a.Rate / float64(a.Threads), count: share}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if len(a.CPUs) > 0 {
				var set unix.CPUSet
				set.Set(a.CPUs[i%len(a.CPUs)])
				if err := unix.SchedSetaffinity(0, &set); err != nil {
					errs[i] = fmt.Errorf("pin thread %d to CPU %d: %w", i, a.CPUs[i%len(a.CPUs)], err)
					return
				}
			}
			errs[i] = fn(ctx, i, p)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func udpFlood(ctx context.Context, a *Attack, c *counters) error {
	payload := bytes.Repeat([]byte{'x'}, a.Payload)
	return threads(ctx, a, func(ctx context.Context, _ int, p *pacer) error {
		// a socket per flow: each has its own source port, so flows spread
		// over the receive queues by their hash
		senders := make([]*batchSender, max(a.Flows, 1))
		for i := range senders {
			s, err := newBatchSender(a.Target, unix.SOCK_DGRAM, unix.IPPROTO_UDP, a.Port)
			if err != nil {
				return err
			}
			defer s.close()
			for j := range s.bufs {
				s.bufs[j] = payload
			}
			senders[i] = s
		}
		var done int64
		for i := 0; ; i++ {
			n := p.next(ctx, done, batchSize)
			if n < 0 {
				return nil
			}
			senders[i%len(senders)].send(int(n), c)
			done += n
		}
	})
}

// spoofRange is where forged sources come from: a.Spoof, or by default
// anywhere (IPv4) or the global unicast range (IPv6).
func spoofRange(a *Attack) netip.Prefix {
	switch {
	case a.Spoof.IsValid():
		return a.Spoof
	case a.Target.Is6():
		return netip.MustParsePrefix("2000::/3")
	}
	return netip.MustParsePrefix("0.0.0.0/0")
}

// rawSYN sends SYNs through a raw IP socket: from random sources (SYN flood)
// or from the attacker's own address to one port after the other (port scan).
func rawSYN(ctx context.Context, a *Attack, c *counters) error {
	v6 := a.Target.Is6()
	spoof := spoofRange(a)
	return threads(ctx, a, func(ctx context.Context, id int, p *pacer) error {
		// IPPROTO_RAW implies IP_HDRINCL (and IPV6_HDRINCL): the packets
		// carry their own source address, which the kernel does not check.
		s, err := newBatchSender(a.Target, unix.SOCK_RAW, unix.IPPROTO_RAW, 0)
		if err != nil {
			return err
		}
		defer s.close()
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(id)))
		tmpl := newSYN(a.Source, a.Target, uint16(a.Port))
		for i := range s.bufs {
			s.bufs[i] = make([]byte, len(tmpl.b))
		}
		var done int64
		port := a.Port + id
		for {
			n := p.next(ctx, done, batchSize)
			if n < 0 {
				return nil
			}
			for i := range int(n) {
				src := a.Source
				dport := a.Port
				if a.Kind == SYNFlood {
					src = randomAddr(rng, spoof, v6)
				} else {
					dport = port
					port += a.Threads
					if port >= a.Port+a.Ports {
						port = a.Port + id
					}
				}
				tmpl.set(src, uint16(1024+rng.IntN(64511)), uint16(dport), rng.Uint32())
				copy(s.bufs[i], tmpl.b)
			}
			s.send(int(n), c)
			done += n
		}
	})
}

// spoofedUDP sends datagrams from random sources in a.Spoof (default: like
// the SYN flood's) through a raw IP socket. A template is built per distinct
// source, so a forged flood "from" one victim costs a copy per datagram.
func spoofedUDP(ctx context.Context, a *Attack, c *counters) error {
	v6 := a.Target.Is6()
	spoof := spoofRange(a)
	return threads(ctx, a, func(ctx context.Context, id int, p *pacer) error {
		s, err := newBatchSender(a.Target, unix.SOCK_RAW, unix.IPPROTO_RAW, 0)
		if err != nil {
			return err
		}
		defer s.close()
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(id)))
		var done int64
		for {
			n := p.next(ctx, done, batchSize)
			if n < 0 {
				return nil
			}
			for i := range int(n) {
				src := randomAddr(rng, spoof, v6)
				frame := packet.Build(packet.Spec{Src: src, Dst: a.Target, Proto: packet.UDP,
					SrcPort: uint16(1024 + rng.IntN(64511)), DstPort: uint16(a.Port), Payload: a.Payload})
				s.bufs[i] = frame[14:] // the IP packet: the raw socket adds the link layer
			}
			s.send(int(n), c)
			done += n
		}
	})
}

// randomAddr draws an address from p; for the default IPv4 prefix (all of
// it) only ordinary unicast space, so that no spoofed source is the lab's own.
func randomAddr(rng *rand.Rand, p netip.Prefix, v6 bool) netip.Addr {
	if !v6 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], rng.Uint32())
		if p.Bits() == 0 {
			for b[0] == 0 || b[0] == 10 || b[0] == 127 || b[0] >= 224 {
				b[0] = byte(rng.IntN(256))
			}
		}
		return mergePrefix(p, netip.AddrFrom4(b))
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], rng.Uint64())
	binary.BigEndian.PutUint64(b[8:], rng.Uint64())
	return mergePrefix(p, netip.AddrFrom16(b))
}

// mergePrefix keeps the prefix's bits and the random address's others.
func mergePrefix(p netip.Prefix, r netip.Addr) netip.Addr {
	pb, rb := p.Addr().AsSlice(), r.AsSlice()
	for i := range pb {
		bits := p.Bits() - 8*i
		switch {
		case bits >= 8:
			rb[i] = pb[i]
		case bits > 0:
			mask := byte(0xff << (8 - bits))
			rb[i] = pb[i]&mask | rb[i]&^mask
		}
	}
	out, _ := netip.AddrFromSlice(rb)
	return out
}

// syn is a SYN packet (IP header and TCP header, no link layer) that is
// rewritten in place for every send.
type syn struct {
	b     []byte
	v6    bool
	ipLen int
}

func newSYN(src, dst netip.Addr, dport uint16) *syn {
	frame := packet.Build(packet.Spec{Src: src, Dst: dst, Proto: packet.TCP, SrcPort: 40000, DstPort: dport, TCPFlags: packet.SYN})
	s := &syn{b: frame[14:], v6: dst.Is6(), ipLen: 20}
	if s.v6 {
		s.ipLen = 40
	}
	return s
}

func (s *syn) set(src netip.Addr, sport, dport uint16, seq uint32) {
	if s.v6 {
		a := src.As16()
		copy(s.b[8:24], a[:])
	} else {
		a := src.As4()
		copy(s.b[12:16], a[:])
		s.b[10], s.b[11] = 0, 0
		binary.BigEndian.PutUint16(s.b[10:], packet.Checksum(0, s.b[:20]))
	}
	tcp := s.b[s.ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[16], tcp[17] = 0, 0
	var ps uint32
	if s.v6 {
		ps = packet.Sum(0, s.b[8:40])
	} else {
		ps = packet.Sum(0, s.b[12:20])
	}
	ps += packet.TCP + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], packet.Checksum(ps, tcp))
}

// batchSize is how many packets one sendmmsg call carries at most.
const batchSize = 64

// batchSender sends batches of packets on a connected socket with one
// sendmmsg call each: the attacker's cost per packet is then mostly the
// kernel's, not the system call's.
type batchSender struct {
	fd   int
	bufs [][]byte
	iov  []unix.Iovec
	hdrs []unix.Mmsghdr
}

func newBatchSender(dst netip.Addr, typ, proto, port int) (*batchSender, error) {
	family := unix.AF_INET
	var to unix.Sockaddr
	if dst.Is6() {
		family = unix.AF_INET6
		to = &unix.SockaddrInet6{Addr: dst.As16(), Port: port}
	} else {
		to = &unix.SockaddrInet4{Addr: dst.As4(), Port: port}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, to); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect to %s: %w", dst, err)
	}
	return &batchSender{fd: fd, bufs: make([][]byte, batchSize),
		iov: make([]unix.Iovec, batchSize), hdrs: make([]unix.Mmsghdr, batchSize)}, nil
}

// send sends bufs[:n] and counts what went out and what did not. ENOBUFS
// and ECONNREFUSED (an ICMP error for an earlier datagram) lose a packet like
// a real link would: counted as errors, and the flood goes on.
func (b *batchSender) send(n int, c *counters) {
	for i := range n {
		b.iov[i].Base = &b.bufs[i][0]
		b.iov[i].SetLen(len(b.bufs[i]))
		b.hdrs[i] = unix.Mmsghdr{}
		b.hdrs[i].Hdr.Iov = &b.iov[i]
		b.hdrs[i].Hdr.SetIovlen(1)
	}
	off := 0
	for off < n {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(b.fd), uintptr(unsafe.Pointer(&b.hdrs[off])), uintptr(n-off), 0, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0:
			c.errs.Add(1) // the first packet failed: skip it
			off++
		default:
			c.sent.Add(int64(r))
			off += int(r)
		}
	}
	runtime.KeepAlive(b.bufs)
}

func (b *batchSender) close() { unix.Close(b.fd) }

// connFlood opens connections at the rate and keeps them open until the end.
func connFlood(ctx context.Context, a *Attack, c *counters) error {
	addr := netip.AddrPortFrom(a.Target, uint16(a.Port)).String()
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	defer func() {
		wg.Wait()
		for _, cn := range conns {
			cn.Close()
		}
	}()
	// Dials run in goroutines, at most this many at once: a dial that hangs
	// (its SYN dropped) must not hold back the rate.
	inflight := make(chan struct{}, 512)
	p := &pacer{start: time.Now(), rate: a.Rate, count: a.Count}
	var done int64
	for {
		n := p.next(ctx, done, 16)
		if n < 0 {
			return nil
		}
		for range n {
			select {
			case inflight <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-inflight }()
				d := net.Dialer{Timeout: 2 * time.Second}
				cn, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					if ctx.Err() == nil {
						c.errs.Add(1)
					}
					return
				}
				c.ok.Add(1)
				mu.Lock()
				conns = append(conns, cn)
				mu.Unlock()
			}()
		}
		done += n
		c.sent.Add(n)
	}
}

// httpFlood sends requests over a.Conns keep-alive connections.
func httpFlood(ctx context.Context, a *Attack, c *counters) error {
	base := "http://" + netip.AddrPortFrom(a.Target, uint16(a.Port)).String()
	tr := &http.Transport{MaxConnsPerHost: a.Conns, MaxIdleConnsPerHost: a.Conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	body, _ := json.Marshal(LoginRequest{User: "alice", Password: "guess"})
	p := &pacer{start: time.Now(), rate: a.Rate, count: a.Count}
	var (
		mu   sync.Mutex
		done int64
		wg   sync.WaitGroup
	)
	// each worker takes the next request the pacer allows
	for range a.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				n := p.next(ctx, done, 1)
				if n > 0 {
					done++
				}
				mu.Unlock()
				if n < 0 {
					return
				}
				if n == 0 {
					continue
				}
				c.sent.Add(1)
				var req *http.Request
				if a.Path == "/login" {
					req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+a.Path, bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
				} else {
					req, _ = http.NewRequestWithContext(ctx, http.MethodGet, base+a.Path, nil)
				}
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						c.errs.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				c.ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return nil
}
