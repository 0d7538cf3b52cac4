package loader

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
)

// The SYN proxy in the kernel (bpf/include/synproxy.h), through prog.Run:
// SYNs become SYN-ACKs whose every field the model predicts, handshake ACKs
// are judged against a real listener in a namespace of the test's own.

const (
	spPort      = 8080 // proxied
	spPlainPort = 8081 // same protocol, no proxy
	tcActOK     = 0
	tcActShot   = 2
	tcActRedir  = 7
	xdpTX       = 3
)

var (
	spClientMAC = [6]byte{0x02, 0, 0, 0, 0, 0xc1}
	spServerMAC = [6]byte{0x02, 0, 0, 0, 0, 0x5e}
	// what HostTCP would read for a 1500-byte interface, with a scale of 9
	// (the clients below announce 7 and 8: the two must not be confused)
	spHost = SynProxyHost{MSS4: 1460, MSS6: 1440, WindowScale: 9, SACK: true, Timestamps: true,
		WindowScaling: true, ECN: true, TTL: 64}
)

func synProxyPolicy() *Policy {
	return &Policy{TCPFlagSanity: true, Services: []Service{
		{ID: 1, Name: "api", Proto: ProtoTCP, Ports: []PortRange{{spPort, spPort}}, SynProxy: SynProxyAlways},
		{ID: 2, Name: "plain", Proto: ProtoTCP, Ports: []PortRange{{spPlainPort, spPlainPort}}},
	}}
}

// newSynProxy loads the datapath with the proxy on for spPort and returns
// its cookie key.
func newSynProxy(t testing.TB, host SynProxyHost) (*Datapath, [2]uint64) {
	t.Helper()
	d := newDatapath(t, Options{})
	mustApply(t, d, synProxyPolicy())
	if err := d.SetSynProxyHost(host); err != nil {
		t.Fatal(err)
	}
	var c GuardAgSynproxy
	if err := d.objs.Synproxy.Lookup(uint32(0), &c); err != nil {
		t.Fatal(err)
	}
	if c.Key == [2]uint64{} {
		t.Fatal("Load left the cookie key zero")
	}
	return d, c.Key
}

type synCase struct {
	name  string
	src   string
	vlans []uint16
	offer synOffer
	flags uint8 // besides SYN
	data  int   // payload bytes
	host  *SynProxyHost
}

func synCases() []synCase {
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}
	noSACK := spHost
	noSACK.SACK = false
	noTS := spHost
	noTS.Timestamps = false
	return []synCase{
		{name: "ipv4 Linux options", src: "198.51.100.7", offer: linux},
		{name: "ipv6 Linux options", src: "2001:db8:1::7", offer: synOffer{mss: 1440, wscale: 7, sack: true, ts: true}},
		{name: "ipv4 no options: RFC 9293 MSS", src: "198.51.100.8", offer: synOffer{wscale: -1}},
		{name: "ipv6 no options: minimum MTU MSS", src: "2001:db8:1::8", offer: synOffer{wscale: -1}},
		{name: "ipv4 Windows options (no timestamps)", src: "198.51.100.9", offer: synOffer{mss: 1460, wscale: 8, sack: true}},
		{name: "ipv4 MSS 1400 rounds down to 1300", src: "198.51.100.10", offer: synOffer{mss: 1400, wscale: 7, sack: true, ts: true}},
		{name: "ipv6 jumbo MSS", src: "2001:db8:1::9", offer: synOffer{mss: 8960, wscale: 7, sack: true, ts: true}},
		{name: "ipv4 window scale 15 is 14", src: "198.51.100.11", offer: synOffer{mss: 1460, wscale: 15, ts: true}},
		{name: "ipv4 ECN setup", src: "198.51.100.12", offer: synOffer{mss: 1460, wscale: 7, sack: true, ts: true, ecn: true}, flags: packet.ECE | packet.CWR},
		{name: "ipv4 two VLAN tags", src: "198.51.100.13", vlans: []uint16{100, 200}, offer: linux},
		{name: "ipv4 Fast Open payload is not acknowledged", src: "198.51.100.14", offer: linux, data: 100},
		{name: "host without SACK", src: "198.51.100.15", offer: linux, host: &noSACK},
		{name: "host without timestamps", src: "198.51.100.16", offer: linux, host: &noTS},
	}
}

func (c synCase) spec(isn, tsval uint32) packet.Spec {
	src := addr(c.src)
	dst := guarded4
	if src.Is6() {
		dst = guarded6
	}
	return packet.Spec{Src: src, Dst: dst, Proto: packet.TCP, SrcPort: 40001, DstPort: spPort,
		TCPFlags: packet.SYN | c.flags, Seq: isn, TCPOptions: synOptions(c.offer, tsval), Payload: c.data,
		VLANs: c.vlans, SrcMAC: spClientMAC, DstMAC: spServerMAC}
}

// wantSynAck is the SYN-ACK the contract asks for, cookie from the slot
// given; TSval's high bits (the clock) are copied from got.
func wantSynAck(c synCase, h SynProxyHost, key [2]uint64, isn, tsval uint32, slot uint64, got segment) segment {
	src := addr(c.src)
	v4 := src.Is4()
	opts, _ := cookieOpts(v4, c.offer, h)
	hash := cookieHash(key, src, isn, 40001, spPort, slot, opts)
	w := segment{SrcMAC: spServerMAC, DstMAC: spClientMAC, VLANs: c.vlans, Src: guarded6, Dst: src,
		TTL: h.TTL, IPCsumOK: true, SrcPort: spPort, DstPort: 40001, Seq: cookieOf(hash, opts), Ack: isn + 1,
		Flags: packet.SYN | packet.ACK, TCPCsumOK: true}
	if v4 {
		w.Src, w.DF = guarded4, true
	}
	if opts&ckECN != 0 {
		w.Flags |= packet.ECE
	}
	ours := h.MSS6
	if v4 {
		ours = h.MSS4
	}
	w.Opts = tcpOpts{MSS: ours, WScale: -1, Kinds: "2"}
	if opts&ckTS != 0 {
		w.Opts.TS = true
		w.Opts.TSval = got.Opts.TSval&^0xff | uint32(tsHashOf(hash))
		w.Opts.TSecr = tsval
		if opts&ckSACK != 0 {
			w.Opts.SACK = true
			w.Opts.Kinds += " 4 8"
		} else {
			w.Opts.Kinds += " 1 1 8"
		}
	} else if opts&ckSACK != 0 {
		w.Opts.SACK = true
		w.Opts.Kinds += " 1 1 4"
	}
	if ws := opts & 0xf; ws != ckWScaleNo {
		w.Opts.WScale = int(h.WindowScale)
		w.Opts.Kinds += " 1 3"
	}
	// a window of whole segments, as Linux announces it
	_, mss := cookieOpts(v4, c.offer, h)
	seg := uint16(min(mss, ours))
	if opts&ckTS != 0 {
		seg -= 12
	}
	w.Window = 65535 / seg * seg
	return w
}

func runSYNTable(t *testing.T, prog func(*Datapath) *ebpf.Program, want uint32) {
	d, key := newSynProxy(t, spHost)
	for _, c := range synCases() {
		t.Run(c.name, func(t *testing.T) {
			h := spHost
			if c.host != nil {
				h = *c.host
			}
			if err := d.SetSynProxyHost(h); err != nil {
				t.Fatal(err)
			}
			counted := counterMap(t, d)
			const isn, tsval = 0x11223344, 0xa0b0c0d0
			frame := packet.Build(c.spec(isn, tsval))
			before := coarseNow(t)
			out := make([]byte, len(frame)+64)
			ret, err := prog(d).Run(&ebpf.RunOptions{Data: frame, DataOut: out})
			after := coarseNow(t)
			if err != nil {
				t.Fatalf("prog.Run: %v", err)
			}
			if ret != want {
				t.Fatalf("verdict %d, want %d", ret, want)
			}
			got, err := decode(out)
			if err != nil {
				t.Fatalf("decode the answer: %v", err)
			}
			if ms := got.Opts.TSval &^ 0xff; got.Opts.TS && (uint64(ms) < before/1e6&^0xff || uint64(ms) > after/1e6) {
				t.Errorf("TSval %#x: its clock part is not the millisecond clock (%d..%d)", got.Opts.TSval, before/1e6, after/1e6)
			}
			// the slot may turn between the two clock reads
			var d1 string
			for _, slot := range []uint64{before >> ckSlotShift, after >> ckSlotShift} {
				if d1 = diff(got, wantSynAck(c, h, key, isn, tsval, slot, got)); d1 == "" {
					break
				}
			}
			if d1 != "" {
				t.Errorf("SYN-ACK: %s", d1)
			}
			// counted once, as a SYN the listener never sees
			if act, reason, n := counterDelta(t, counted, counterMap(t, d)); act != ActionDrop ||
				reason != Reason(GuardAgReasonAG_R_SYN_COOKIE) || n != 1 {
				t.Errorf("counted as %v %v (%d), want one drop with reason syn_cookie", act, reason, n)
			}
		})
	}
}

func TestSynProxyAnswersXDP(t *testing.T) {
	runSYNTable(t, (*Datapath).XDP, xdpTX)
}

func TestSynProxyAnswersTC(t *testing.T) {
	runSYNTable(t, (*Datapath).TC, tcActRedir)
}

// SYNs the proxy does not answer: unproxyable ones are dropped (the listener
// must not see them either), other services' go their usual way, and nothing
// is answered before the host settings are known.
func TestSynProxyRefusesSYNs(t *testing.T) {
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}
	base := synCase{src: "198.51.100.20", offer: linux}.spec(1000, 1)
	badSum := packet.Build(base)
	badSum[len(badSum)-1] ^= 0xff // the last option byte: the checksum no longer adds up
	ipOpts := base
	ipOpts.IPv4Options = 4
	ext := synCase{src: "2001:db8:1::20", offer: linux}.spec(1000, 1)
	ext.IPv6Ext = []uint8{packet.HopByHop}
	plain := base
	plain.DstPort = spPlainPort
	d := newDatapath(t, Options{})
	mustApply(t, d, synProxyPolicy())

	for _, c := range []struct {
		name   string
		frame  []byte
		noHost bool
		want   uint32
		reason Reason
	}{
		{"bad TCP checksum", badSum, false, xdpDrop, Reason(GuardAgReasonAG_R_SYN_UNPROXYABLE)},
		{"IPv4 options", packet.Build(ipOpts), false, xdpDrop, Reason(GuardAgReasonAG_R_SYN_UNPROXYABLE)},
		{"IPv6 extension header", packet.Build(ext), false, xdpDrop, Reason(GuardAgReasonAG_R_SYN_UNPROXYABLE)},
		{"service without the proxy", packet.Build(plain), false, xdpPass, Reason(GuardAgReasonAG_R_OK)},
		{"host settings not loaded", packet.Build(base), true, xdpDrop, Reason(GuardAgReasonAG_R_SYN_UNPROXYABLE)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := d.objs.Synproxy.Update(uint32(0), &GuardAgSynproxy{Key: [2]uint64{1, 2}}, ebpf.UpdateExist); err != nil {
				t.Fatal(err)
			}
			if !c.noHost {
				if err := d.SetSynProxyHost(spHost); err != nil {
					t.Fatal(err)
				}
			}
			before := counterMap(t, d)
			if got := runXDP(t, d, c.frame); got != c.want {
				t.Fatalf("verdict %d, want %d", got, c.want)
			}
			_, reason, _ := counterDelta(t, before, counterMap(t, d))
			if reason != c.reason {
				t.Errorf("reason %v, want %v", reason, c.reason)
			}
		})
	}
}

// A namespace with a plain TCP listener on spPort (both families) and an
// established connection to it over loopback: the sockets the judge looks up.
type spNetns struct {
	ns   *netns.Namespace
	conn netip.AddrPort // the established connection's client end
}

func newSpNetns(t testing.TB) *spNetns {
	t.Helper()
	ns, err := netns.New("sp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	s := &spNetns{ns: ns}
	var ln net.Listener
	var c net.Conn
	err = ns.Do(func() (err error) {
		// plain TCP: the kernel takes no handshake from BPF for an MPTCP
		// listener, Go's default
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		if ln, err = lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(netip.IPv6Unspecified(), spPort).String()); err != nil {
			return err
		}
		c, err = net.Dial("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), spPort).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); accepted.Close(); ln.Close() })
	s.conn = netip.MustParseAddrPort(c.LocalAddr().String())
	return s
}

// run runs prog on a thread inside the namespace: socket lookups see its sockets.
func (s *spNetns) run(t *testing.T, prog *ebpf.Program, frame []byte) uint32 {
	t.Helper()
	var ret uint32
	if err := s.ns.Do(func() (err error) {
		ret, err = prog.Run(&ebpf.RunOptions{Data: frame})
		return err
	}); err != nil {
		t.Fatalf("prog.Run: %v", err)
	}
	return ret
}

type ackCase struct {
	name   string
	src    string
	dst    netip.Addr // zero: the guarded address
	sport  uint16
	dport  uint16
	flags  uint8
	offer  synOffer
	slot   int64 // cookie slot relative to now
	mutate func(seq, ack, tsecr *uint32, ts *bool)
	data   int
	drop   bool // else passed with reason ok
	judged judgement
}

// judgement is what the proxy made of a case's cookie: a bad one is a
// verdict (reason bad_cookie), a good one moves its CookieOK counter.
type judgement int

const (
	notJudged judgement = iota // passed without a look at the cookie
	cookieOK
	cookieBad
)

func ackCases(conn netip.AddrPort) []ackCase {
	linux := synOffer{mss: 1460, wscale: 7, sack: true, ts: true}
	return []ackCase{
		{name: "ipv4 valid cookie", src: "198.51.100.30", offer: linux, judged: cookieOK},
		{name: "ipv6 valid cookie", src: "2001:db8:1::30", offer: linux, judged: cookieOK},
		{name: "ipv4 valid cookie without timestamps", src: "198.51.100.31", offer: synOffer{mss: 1460, wscale: 8, sack: true}, judged: cookieOK},
		{name: "first data segment carries the handshake", src: "198.51.100.32", offer: linux, flags: packet.PSH, data: 200, judged: cookieOK},
		{name: "cookie of the previous slot", src: "198.51.100.33", offer: linux, slot: -1, judged: cookieOK},
		{name: "stale cookie (two slots old)", src: "198.51.100.34", offer: linux, slot: -2, drop: true, judged: cookieBad},
		{name: "ipv6 stale cookie", src: "2001:db8:1::34", offer: linux, slot: -3, drop: true, judged: cookieBad},
		{name: "wrong cookie", src: "198.51.100.35", offer: linux, drop: true, judged: cookieBad,
			mutate: func(_, ack, _ *uint32, _ *bool) { *ack ^= 1 << 20 }},
		{name: "other ISN", src: "198.51.100.36", offer: linux, drop: true, judged: cookieBad,
			mutate: func(seq, _, _ *uint32, _ *bool) { *seq += 1000 }},
		{name: "option bits raised (window scale)", src: "198.51.100.37", offer: linux, drop: true, judged: cookieBad,
			mutate: func(_, ack, _ *uint32, _ *bool) { *ack = (*ack-1)&^0xf | 14 + 1 }},
		{name: "wrong timestamp echo", src: "198.51.100.38", offer: linux, drop: true, judged: cookieBad,
			mutate: func(_, _, tsecr *uint32, _ *bool) { *tsecr ^= 1 }},
		{name: "timestamp left out of the ACK", src: "198.51.100.39", offer: linux, drop: true, judged: cookieBad,
			mutate: func(_, _, _ *uint32, ts *bool) { *ts = false }},
		{name: "established connection", src: "127.0.0.1", dst: netip.MustParseAddr("127.0.0.1"), sport: conn.Port(),
			offer: linux, mutate: func(seq, ack, _ *uint32, _ *bool) { *seq, *ack = 5, 5 }},
		{name: "no listener: the kernel's business", src: "198.51.100.40", dport: spNoListener, offer: linux},
		{name: "RST is not judged", src: "198.51.100.41", flags: packet.RST, offer: linux,
			mutate: func(_, ack, _ *uint32, _ *bool) { *ack ^= 1 << 20 }},
	}
}

const spNoListener = 9999 // proxied, nothing listens

// frame builds the handshake ACK of c: the cookie the proxy would have sent
// for its SYN in the given slot, echoed.
func (c ackCase) frame(key [2]uint64, nowSlot uint64) []byte {
	src := addr(c.src)
	v4 := src.Is4()
	dst := c.dst
	if !dst.IsValid() {
		dst = guarded6
		if v4 {
			dst = guarded4
		}
	}
	sport, dport := c.sport, c.dport
	if sport == 0 {
		sport = 40002
	}
	if dport == 0 {
		dport = spPort
	}
	const isn, clientTS = 0x55667788, 0x01020304
	opts, _ := cookieOpts(v4, c.offer, spHost)
	hash := cookieHash(key, src, isn, sport, dport, uint64(int64(nowSlot)+c.slot), opts)
	seq, ack := uint32(isn+1), cookieOf(hash, opts)+1
	tsecr := 0x12345600 | uint32(tsHashOf(hash))
	ts := opts&ckTS != 0
	if c.mutate != nil {
		c.mutate(&seq, &ack, &tsecr, &ts)
	}
	return packet.Build(packet.Spec{Src: src, Dst: dst, Proto: packet.TCP, SrcPort: sport, DstPort: dport,
		TCPFlags: packet.ACK | c.flags, Seq: seq, Ack: ack, TCPOptions: ackOptions(ts, clientTS+1, tsecr),
		Payload: c.data, SrcMAC: spClientMAC, DstMAC: spServerMAC})
}

func TestSynProxyJudgesACKs(t *testing.T) {
	s := newSpNetns(t)
	d, key := newSynProxy(t, spHost)
	p := synProxyPolicy()
	p.Services = append(p.Services, Service{ID: 3, Name: "nolistener", Proto: ProtoTCP,
		Ports: []PortRange{{spNoListener, spNoListener}}, SynProxy: SynProxyAlways})
	mustApply(t, d, p)
	for _, prog := range guardHooks {
		for _, c := range ackCases(s.conn) {
			t.Run(prog.name+"/"+c.name, func(t *testing.T) {
				var (
					got      uint32
					reason   Reason
					st0, st1 SynProxyStats
				)
				// a cookie's age is relative to the slot of the run: built
				// again when the slot turned meanwhile (once in 69 s)
				for try := 0; ; try++ {
					slot := coarseNow(t) >> ckSlotShift
					frame := c.frame(key, slot)
					var err error
					if st0, err = d.SynProxyStats(); err != nil {
						t.Fatal(err)
					}
					before := counterMap(t, d)
					got = s.run(t, prog.get(d), frame)
					_, reason, _ = counterDelta(t, before, counterMap(t, d))
					if st1, err = d.SynProxyStats(); err != nil {
						t.Fatal(err)
					}
					if coarseNow(t)>>ckSlotShift == slot {
						break
					}
					if try == 3 {
						t.Fatal("the cookie slot turned during each of four runs")
					}
				}
				want, wantReason := prog.pass, Reason(GuardAgReasonAG_R_OK)
				if c.drop {
					want, wantReason = prog.drop, Reason(GuardAgReasonAG_R_BAD_COOKIE)
				}
				if got != want || reason != wantReason {
					t.Fatalf("verdict %d (%v), want %d (%v)", got, reason, want, wantReason)
				}
				moved := SynProxyStats{CookieOK: st1.CookieOK - st0.CookieOK, KernelCookie: st1.KernelCookie - st0.KernelCookie,
					Accepted: st1.Accepted - st0.Accepted, AcceptFailed: st1.AcceptFailed - st0.AcceptFailed}
				var wantMoved SynProxyStats
				switch c.judged {
				case cookieOK:
					wantMoved.CookieOK = 1
					if prog.tc {
						// TC hands it to the listener; outside a real ingress
						// (prog.Run) the kernel refuses: an attempt either way
						wantMoved.AcceptFailed, wantMoved.Accepted = moved.AcceptFailed, moved.Accepted
						if moved.Accepted+moved.AcceptFailed != 1 {
							t.Errorf("%d hand-over attempts, want 1", moved.Accepted+moved.AcceptFailed)
						}
					}
				}
				if d := diff(moved, wantMoved); d != "" {
					t.Errorf("proxy counters: %s", d)
				}
			})
		}
	}
}

func TestSynProxyPolicy(t *testing.T) {
	p := synProxyPolicy()
	img, err := compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if img.cfg.SynproxyServices != 1<<1 {
		t.Errorf("proxied services %b, want service 1 only", img.cfg.SynproxyServices)
	}
	p.Services[0].Monitor = true
	if img, err = compile(p); err != nil || img.cfg.SynproxyServices != 0 {
		t.Errorf("a monitored service: proxied %b (err %v), want none: its SYNs reach the server", img.cfg.SynproxyServices, err)
	}
	p = synProxyPolicy()
	p.Monitor = true
	if img, err = compile(p); err != nil || img.cfg.SynproxyServices != 0 {
		t.Errorf("a monitored policy: proxied %b (err %v), want none (the kernel does not look at monitor for the proxy)", img.cfg.SynproxyServices, err)
	}
	p = synProxyPolicy()
	p.Services[1].Proto, p.Services[1].SynProxy = ProtoUDP, SynProxyAlways
	if _, err := compile(p); err == nil || !strings.Contains(err.Error(), "TCP") {
		t.Errorf("synProxy on a UDP service: %v, want a refusal", err)
	}
	p = synProxyPolicy()
	p.Services[0].SynProxy = SynProxyAuto
	if _, err := compile(p); err == nil || !strings.Contains(err.Error(), "total connections limit") {
		t.Errorf("synProxy auto without a total connections limit: %v, want a refusal (it would never turn on)", err)
	}
	p.Services[0].Total.Conns = Rate{PerSecond: 10, Burst: 10}
	if img, err = compile(p); err != nil || img.cfg.SynproxyAuto != 1<<1 || img.cfg.SynproxyServices != 0 {
		t.Errorf("synProxy auto: auto %b, always %b (err %v), want auto for service 1 only", img.cfg.SynproxyAuto, img.cfg.SynproxyServices, err)
	}
	p.Services[0].Monitor = true
	if img, err = compile(p); err != nil || img.cfg.SynproxyAuto != 0 {
		t.Errorf("a monitored auto service: auto %b (err %v), want none", img.cfg.SynproxyAuto, err)
	}
}

// HostTCP reads the namespace it runs in: the interface's MTU, the options
// the kernel will accept, and the window scale it would announce.
func TestHostTCP(t *testing.T) {
	lab := newVethLab(t)
	if err := lab.b.IP("link", "set", lab.lb.Name, "mtu", "1400"); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"net.ipv4.tcp_sack": "0", "net.ipv4.tcp_rmem": "4096 131072 16777216", "net.ipv4.tcp_ecn": "0"} {
		if err := lab.b.Sysctl(k, v); err != nil {
			t.Fatal(err)
		}
	}
	var rmemMax int
	var h SynProxyHost
	if err := lab.b.Do(func() (err error) {
		m, err := sysctlInts("net/core/rmem_max")
		if err != nil {
			return err
		}
		rmemMax = m[0]
		h, err = HostTCP(lab.lb.Name)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// the scale covering the larger of tcp_rmem's maximum and rmem_max, as
	// tcp_select_initial_window computes it
	space, ws := max(16777216, rmemMax), 0
	for space>>ws > 65535 && ws < 14 {
		ws++
	}
	want := SynProxyHost{MSS4: 1360, MSS6: 1340, WindowScale: uint8(ws), SACK: false, Timestamps: true,
		WindowScaling: true, ECN: false, TTL: 64}
	if d := diff(h, want); d != "" {
		t.Errorf("HostTCP: %s", d)
	}
	if err := lab.b.Sysctl("net.ipv4.tcp_syncookies", "0"); err != nil {
		t.Fatal(err)
	}
	err := lab.b.Do(func() error { _, err := HostTCP(lab.lb.Name); return err })
	if err == nil || !strings.Contains(err.Error(), "tcp_syncookies") {
		t.Errorf("HostTCP with tcp_syncookies=0: %v, want a refusal naming it", err)
	}
}
