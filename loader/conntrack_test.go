package loader

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/cilium/ebpf"
)

// Service ids of the connection-filtering policy.
const (
	svcCapped  = 1 // tcp 8443: a client may hold 2 connections, 2 of them half-open
	svcHalf    = 2 // tcp 8444: a client may hold 10 connections, 2 of them half-open
	svcCTTotal = 3 // tcp 8445: the whole service holds 3 connections
	svcACL     = 4 // tcp 9443: only from 10.50.0.0/16 and 2001:db8:50::/48, and capped
	svcACLUDP  = 5 // udp 9053: the same ACL
	svcPlain   = 6 // tcp 8080: neither
	svcMonCaps = 7 // tcp 8446: client cap 1, monitor mode
)

const tcUnspec = ^uint32(0) // TC_ACT_UNSPEC: the egress program never decides

func ctPolicy() *Policy {
	acl := []netip.Prefix{pfx("10.50.0.0/16"), pfx("2001:db8:50::/48")}
	tcp := func(id uint32, name string, port uint16) Service {
		return Service{ID: id, Name: name, Proto: ProtoTCP, Ports: []PortRange{{port, port}}}
	}
	capped := tcp(svcCapped, "capped", 8443)
	capped.MaxConns = ConnLimits{ClientEstablished: 2, ClientHalfOpen: 2}
	half := tcp(svcHalf, "half", 8444)
	half.MaxConns = ConnLimits{ClientEstablished: 10, ClientHalfOpen: 2}
	total := tcp(svcCTTotal, "total", 8445)
	total.MaxConns = ConnLimits{TotalEstablished: 3}
	aclSvc := tcp(svcACL, "admin", 9443)
	aclSvc.ACL = acl
	aclSvc.MaxConns = ConnLimits{ClientEstablished: 5}
	mon := tcp(svcMonCaps, "moncaps", 8446)
	mon.Monitor = true
	mon.MaxConns = ConnLimits{ClientEstablished: 1}
	return &Policy{
		TCPFlagSanity: true,
		Allow:         []netip.Prefix{pfx("192.0.2.0/28")},
		Services: []Service{capped, half, total, aclSvc,
			{ID: svcACLUDP, Name: "admin-dns", Proto: ProtoUDP, Ports: []PortRange{{9053, 9053}}, ACL: acl},
			tcp(svcPlain, "plain", 8080), mon},
	}
}

// tconn is one TCP connection as the guarded host sees it.
type tconn struct {
	client netip.Addr
	cport  uint16
	sport  uint16
}

func newConn(client string, sport uint16) tconn {
	return tconn{client: addr(client), cport: 40000, sport: sport}
}

func (c tconn) port(p uint16) tconn { c.cport = p; return c }

func (c tconn) server() netip.Addr {
	if c.client.Is4() {
		return guarded4
	}
	return guarded6
}

// in is a client -> server segment, out a server -> client one.
func (c tconn) in(flags uint8, seq, ack uint32) []byte {
	return packet.Build(packet.Spec{Src: c.client, Dst: c.server(), Proto: packet.TCP,
		SrcPort: c.cport, DstPort: c.sport, TCPFlags: flags, Seq: seq, Ack: ack})
}

func (c tconn) out(flags uint8, seq, ack uint32) []byte {
	return packet.Build(packet.Spec{Src: c.server(), Dst: c.client, Proto: packet.TCP,
		SrcPort: c.sport, DstPort: c.cport, TCPFlags: flags, Seq: seq, Ack: ack})
}

func runEgress(tb testing.TB, d *Datapath, frame []byte) uint32 {
	tb.Helper()
	ret, err := d.Egress().Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		tb.Fatalf("egress prog.Run: %v", err)
	}
	return ret
}

// flowOf returns c's entry in the flow table (state 0 when there is none).
func flowOf(tb testing.TB, d *Datapath, c tconn) Flow {
	tb.Helper()
	var found Flow
	err := d.Flows(func(f Flow) error {
		if f.Client == netip.AddrPortFrom(c.client, c.cport) && f.Server == netip.AddrPortFrom(c.server(), c.sport) {
			found = f
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return found
}

// countOf is what c's client holds in service svc.
func countOf(tb testing.TB, d *Datapath, client netip.Addr, svc uint32) ConnCount {
	tb.Helper()
	var n ConnCount
	err := d.ClientConns(func(cc ClientConns) error {
		if cc.Addr.Contains(client) && cc.Service == svc {
			n = cc.ConnCount
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// ctStep is one segment of a connection and what must follow from it.
type ctStep struct {
	desc   string
	c      tconn
	egress bool
	flags  uint8
	seq    uint32
	ack    uint32
	reason Reason // ingress: the counter that moves (ok, or the refusal)
	action Action // ingress: pass unless a refusal drops it
	state  FlowState
	count  ConnCount // the client's, in the connection's service
	svc    uint32
}

const (
	fSYN    = packet.SYN
	fSYNACK = packet.SYN | packet.ACK
	fACK    = packet.ACK
	fPSH    = packet.PSH | packet.ACK
	fFIN    = packet.FIN | packet.ACK
	fRST    = packet.RST
)

var (
	rOK          = Reason(GuardAgReasonAG_R_OK)
	stSynSent    = FlowState(GuardAgFlowStateAG_FLOW_SYN_SENT)
	stSynRecv    = FlowState(GuardAgFlowStateAG_FLOW_SYN_RECV)
	stEst        = FlowState(GuardAgFlowStateAG_FLOW_ESTABLISHED)
	stFinWait    = FlowState(GuardAgFlowStateAG_FLOW_FIN_WAIT)
	stClosed     = FlowState(GuardAgFlowStateAG_FLOW_CLOSED)
	stReset      = FlowState(GuardAgFlowStateAG_FLOW_RESET)
	stExpired    = FlowState(GuardAgFlowStateAG_FLOW_EXPIRED)
	noFlow       = FlowState(0)
	half1, half2 = ConnCount{HalfOpen: 1}, ConnCount{HalfOpen: 2}
	est1, est2   = ConnCount{Established: 1}, ConnCount{Established: 2}
	zero         = ConnCount{}
)

func in(desc string, c tconn, flags uint8, seq, ack uint32, state FlowState, count ConnCount) ctStep {
	return ctStep{desc: desc, c: c, flags: flags, seq: seq, ack: ack, reason: rOK, action: ActionPass, state: state, count: count}
}

func out(desc string, c tconn, flags uint8, seq, ack uint32, state FlowState, count ConnCount) ctStep {
	return ctStep{desc: desc, c: c, egress: true, flags: flags, seq: seq, ack: ack, state: state, count: count}
}

func refused(desc string, c tconn, r GuardAgReason, state FlowState, count ConnCount) ctStep {
	return ctStep{desc: desc, c: c, flags: fSYN, seq: 100, reason: Reason(r), action: ActionDrop, state: state, count: count}
}

// handshake is the three segments that establish c (client ISN 100, server 5000).
func handshake(c tconn) []ctStep {
	return []ctStep{
		in("SYN", c, fSYN, 100, 0, stSynSent, half1),
		out("SYN-ACK", c, fSYNACK, 5000, 101, stSynRecv, half1),
		in("ACK of the server's ISN", c, fACK, 101, 5001, stEst, est1),
	}
}

func steps(groups ...[]ctStep) []ctStep {
	var out []ctStep
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func runSteps(t *testing.T, d *Datapath, svc uint32, run func([]byte) uint32, ss []ctStep) {
	t.Helper()
	for i, s := range ss {
		if s.svc == 0 {
			s.svc = svc
		}
		where := fmt.Sprintf("step %d (%s %s)", i, map[bool]string{false: "in", true: "out"}[s.egress], s.desc)
		if s.egress {
			before := counterMap(t, d)
			if ret := runEgress(t, d, s.c.out(s.flags, s.seq, s.ack)); ret != tcUnspec {
				t.Fatalf("%s: egress returned %d, want TC_ACT_UNSPEC", where, int32(ret))
			}
			if after := counterMap(t, d); len(after) != len(before) {
				t.Fatalf("%s: egress moved verdict counters", where)
			}
		} else {
			before := counterMap(t, d)
			ret := run(s.c.in(s.flags, s.seq, s.ack))
			a, r, _ := counterDelta(t, before, counterMap(t, d))
			wantRet := uint32(xdpPass)
			if s.action == ActionDrop {
				wantRet = xdpDrop
			}
			if a != s.action || r != s.reason || ret != wantRet {
				t.Fatalf("%s: got ret %d %v/%v, want %v/%v", where, ret, a, r, s.action, s.reason)
			}
		}
		f := flowOf(t, d, s.c)
		if f.State != s.state {
			t.Fatalf("%s: flow state %v, want %v", where, f.State, s.state)
		}
		if got := countOf(t, d, s.c.client, s.svc); got != s.count {
			t.Fatalf("%s: client holds %+v, want %+v", where, got, s.count)
		}
	}
}

// TestConnStateMachine follows connections segment by segment through both
// programs: every transition, SYN and SYN-ACK retransmissions, closes from
// either side and at once, RST in every state, port reuse, and connections
// picked up from the server's side.
func TestConnStateMachine(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, ctPolicy())
	c := func(n int) tconn { return newConn(fmt.Sprintf("10.9.%d.1", n), 8443) }
	v6 := newConn("2001:db8:9::1", 8443)

	cases := []struct {
		name  string
		steps []ctStep
	}{
		{"handshake, client closes first, port reused", []ctStep{
			in("SYN", c(1), fSYN, 100, 0, stSynSent, half1),
			in("SYN retransmitted", c(1), fSYN, 100, 0, stSynSent, half1),
			in("ACK before any SYN-ACK", c(1), fACK, 101, 5001, stSynSent, half1),
			out("SYN-ACK", c(1), fSYNACK, 5000, 101, stSynRecv, half1),
			out("SYN-ACK retransmitted", c(1), fSYNACK, 5000, 101, stSynRecv, half1),
			in("ACK of another ISN (blind)", c(1), fACK, 101, 99999, stSynRecv, half1),
			in("ACK of the server's ISN", c(1), fACK, 101, 5001, stEst, est1),
			out("data", c(1), fPSH, 5001, 200, stEst, est1),
			in("data", c(1), fPSH, 200, 6001, stEst, est1),
			in("FIN", c(1), fFIN, 300, 6001, stFinWait, est1),
			out("data after the client's FIN", c(1), fPSH, 6001, 301, stFinWait, est1),
			out("FIN", c(1), fFIN, 7001, 301, stClosed, zero),
			in("last ACK", c(1), fACK, 301, 7002, stClosed, zero),
			out("ACK of a retransmitted FIN (teardown)", c(1), fACK, 7002, 301, stClosed, zero),
			in("SYN on the same port", c(1), fSYN, 900, 0, stSynSent, half1),
		}},
		{"server closes first", steps(handshake(c(2)), []ctStep{
			out("FIN", c(2), fFIN, 5001, 101, stClosed, zero),
			in("FIN", c(2), fFIN, 101, 5002, stClosed, zero),
			in("last ACK", c(2), fACK, 102, 5002, stClosed, zero),
		})},
		{"simultaneous close", steps(handshake(c(3)), []ctStep{
			in("FIN", c(3), fFIN, 101, 5001, stFinWait, est1),
			out("FIN crossing it", c(3), fFIN, 5001, 101, stClosed, zero),
		})},
		{"handshake's last ACK carries a FIN", []ctStep{
			in("SYN", c(4), fSYN, 100, 0, stSynSent, half1),
			out("SYN-ACK", c(4), fSYNACK, 5000, 101, stSynRecv, half1),
			in("ACK+FIN", c(4), fFIN, 101, 5001, stFinWait, est1),
			out("FIN", c(4), fFIN, 5001, 102, stClosed, zero),
		}},
		{"client RST in SYN_SENT", []ctStep{
			in("SYN", c(5), fSYN, 100, 0, stSynSent, half1),
			in("RST", c(5), fRST, 101, 0, stReset, zero),
			out("late SYN-ACK", c(5), fSYNACK, 5000, 101, stReset, zero),
		}},
		{"server RST in SYN_SENT (port closed)", []ctStep{
			in("SYN", c(6), fSYN, 100, 0, stSynSent, half1),
			out("RST", c(6), fRST|packet.ACK, 0, 101, stClosed, zero),
		}},
		{"server RST in SYN_RECV", []ctStep{
			in("SYN", c(7), fSYN, 100, 0, stSynSent, half1),
			out("SYN-ACK", c(7), fSYNACK, 5000, 101, stSynRecv, half1),
			out("RST", c(7), fRST, 5001, 0, stClosed, zero),
		}},
		{"client RST in SYN_RECV", []ctStep{
			in("SYN", c(8), fSYN, 100, 0, stSynSent, half1),
			out("SYN-ACK", c(8), fSYNACK, 5000, 101, stSynRecv, half1),
			in("RST", c(8), fRST, 101, 0, stReset, zero),
		}},
		{"client RST when established", steps(handshake(c(9)), []ctStep{
			in("RST", c(9), fRST, 101, 0, stReset, zero),
			out("data the server sent before reading the RST", c(9), fPSH, 5001, 101, stReset, zero),
		})},
		{"server RST when established", steps(handshake(c(10)), []ctStep{
			out("RST", c(10), fRST, 5001, 0, stClosed, zero),
		})},
		{"RST in FIN_WAIT", steps(handshake(c(11)), []ctStep{
			in("FIN", c(11), fFIN, 101, 5001, stFinWait, est1),
			out("RST", c(11), fRST, 5001, 0, stClosed, zero),
		})},
		{"RST on an unknown flow", []ctStep{
			in("RST", c(12), fRST, 1, 0, noFlow, zero),
			out("RST", c(12), fRST, 1, 0, noFlow, zero),
		}},
		{"a forged client RST: the server's challenge ACK adopts the flow again", steps(handshake(c(13)), []ctStep{
			in("RST out of window", c(13), fRST, 77777, 0, stReset, zero),
			out("challenge ACK", c(13), fACK, 5001, 101, stEst, est1),
			in("data", c(13), fPSH, 101, 5001, stEst, est1),
		})},
		{"a reused port while the old connection lives", steps(handshake(c(14)), []ctStep{
			in("new SYN on the live 4-tuple", c(14), fSYN, 90000, 0, stEst, est1),
			out("challenge ACK", c(14), fACK, 5001, 101, stEst, est1),
			in("RST answering it", c(14), fRST, 5001, 0, stReset, zero),
			in("SYN retransmitted", c(14), fSYN, 90000, 0, stSynSent, half1),
			out("SYN-ACK", c(14), fSYNACK, 8000, 90001, stSynRecv, half1),
			in("ACK", c(14), fACK, 90001, 8001, stEst, est1),
		})},
		{"picked up from the server's data", []ctStep{
			in("data on an unknown flow passes untracked", c(15), fPSH, 100, 5000, noFlow, zero),
			out("server data", c(15), fPSH, 5000, 200, stEst, est1),
			in("data", c(15), fPSH, 200, 6000, stEst, est1),
			in("FIN", c(15), fFIN, 300, 6000, stFinWait, est1),
			out("FIN", c(15), fFIN, 6000, 301, stClosed, zero),
		}},
		{"picked up from a SYN-ACK", []ctStep{
			out("SYN-ACK of an untracked SYN", c(16), fSYNACK, 5000, 101, stSynRecv, half1),
			in("ACK", c(16), fACK, 101, 5001, stEst, est1),
		}},
		{"the server's closing packets adopt nothing", []ctStep{
			out("FIN", c(17), fFIN, 5000, 101, noFlow, zero),
			out("SYN alone", c(17), fSYN, 5000, 0, noFlow, zero),
		}},
		{"ipv6", steps(handshake(v6), []ctStep{
			in("FIN", v6, fFIN, 101, 5001, stFinWait, est1),
			out("FIN", v6, fFIN, 5001, 102, stClosed, zero),
		})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, d, svcCapped, func(b []byte) uint32 { return runXDP(t, d, b) }, tc.steps)
		})
	}
	// the TC ingress program runs the same machine
	t.Run("tc ingress", func(t *testing.T) {
		tcRun := func(b []byte) uint32 {
			ret, err := d.TC().Run(&ebpf.RunOptions{Data: b})
			if err != nil {
				t.Fatal(err)
			}
			// TC_ACT_OK and TC_ACT_SHOT, in the XDP terms of the table
			if ret == 2 {
				return xdpDrop
			}
			return xdpPass
		}
		runSteps(t, d, svcCapped, tcRun, steps(handshake(c(40)), []ctStep{
			in("FIN", c(40), fFIN, 101, 5001, stFinWait, est1),
			out("FIN", c(40), fFIN, 5001, 102, stClosed, zero),
		}))
	})
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.FlowCountMissing != 0 || st.FlowBusy != 0 || st.FlowTableFull != 0 {
		t.Errorf("stats %+v: a release without a count, a busy entry or a full table", st)
	}
}

// TestConnCaps: a SYN over a cap is dropped under its own reason and reported;
// a released slot is free at once; a lower cap never cuts what is established.
func TestConnCaps(t *testing.T) {
	d := newDatapath(t, Options{EventInterval: time.Nanosecond})
	mustApply(t, d, ctPolicy())
	a := func(port uint16) tconn { return newConn("10.8.0.1", 8443).port(port) }
	h := func(port uint16) tconn { return newConn("10.8.0.2", 8444).port(port) }
	tot := func(client string) tconn { return newConn(client, 8445) }
	run := func(b []byte) uint32 { return runXDP(t, d, b) }

	t.Run("client established", func(t *testing.T) {
		runSteps(t, d, svcCapped, run, steps(handshake(a(1)), []ctStep{
			in("SYN", a(2), fSYN, 100, 0, stSynSent, ConnCount{1, 1}),
			refused("third SYN", a(3), GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED, noFlow, ConnCount{1, 1}),
			out("SYN-ACK", a(2), fSYNACK, 5000, 101, stSynRecv, ConnCount{1, 1}),
			in("ACK", a(2), fACK, 101, 5001, stEst, est2),
			refused("still over", a(3), GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED, noFlow, est2),
			out("the server closes one", a(1), fFIN, 5001, 101, stClosed, est1),
			in("the slot is free at once", a(3), fSYN, 100, 0, stSynSent, ConnCount{1, 1}),
		}))
	})
	t.Run("client half-open", func(t *testing.T) {
		runSteps(t, d, svcHalf, run, []ctStep{
			in("SYN", h(1), fSYN, 100, 0, stSynSent, half1),
			in("SYN", h(2), fSYN, 100, 0, stSynSent, half2),
			refused("third SYN", h(3), GuardAgReasonAG_R_CONN_CLIENT_HALF_OPEN, noFlow, half2),
			out("SYN-ACK", h(1), fSYNACK, 5000, 101, stSynRecv, half2),
			in("one completes", h(1), fACK, 101, 5001, stEst, ConnCount{1, 1}),
			in("room for another", h(3), fSYN, 100, 0, stSynSent, ConnCount{1, 2}),
			in("RST frees a half-open slot", h(2), fRST, 101, 0, stReset, ConnCount{1, 1}),
		})
	})
	t.Run("service total", func(t *testing.T) {
		var ss []ctStep
		for i := 1; i <= 3; i++ {
			ss = append(ss, handshake(tot(fmt.Sprintf("10.7.0.%d", i)))...)
		}
		ss = append(ss,
			refused("a fourth client", tot("10.7.0.4"), GuardAgReasonAG_R_CONN_SERVICE_ESTABLISHED, noFlow, zero),
			out("one closes", tot("10.7.0.1"), fFIN, 5001, 101, stClosed, zero),
			in("the fourth gets in", tot("10.7.0.4"), fSYN, 100, 0, stSynSent, half1))
		runSteps(t, d, svcCTTotal, run, ss)
		sc, err := d.ServiceConns()
		if err != nil {
			t.Fatal(err)
		}
		if sc[svcCTTotal] != (ConnCount{Established: 2, HalfOpen: 1}) {
			t.Errorf("service total %+v, want 2 established and 1 half-open", sc[svcCTTotal])
		}
	})
	t.Run("monitor mode counts and passes", func(t *testing.T) {
		m := newConn("10.8.0.3", 8446)
		runSteps(t, d, svcMonCaps, run, steps(handshake(m), []ctStep{
			{desc: "SYN over the cap", c: m.port(2), flags: fSYN, seq: 100, reason: Reason(GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED),
				action: ActionMonitor, state: stSynSent, count: ConnCount{1, 1}},
		}))
	})

	evs := readEvents(t, d, 1000)
	seen := map[Reason]bool{}
	for _, e := range evs {
		if EventType(e.Type).String() != "conn_limited" {
			continue
		}
		seen[Reason(e.Reason)] = true
		r := Reason(e.Reason)
		if r == Reason(GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED) && Action(e.Action) == ActionDrop &&
			(SourceAddr(&e) != addr("10.8.0.1") || e.Service != svcCapped) {
			t.Errorf("client cap event names %v service %d, want 10.8.0.1 service %d", SourceAddr(&e), e.Service, svcCapped)
		}
		if r == Reason(GuardAgReasonAG_R_CONN_SERVICE_ESTABLISHED) && SourceAddr(&e).IsValid() && !SourceAddr(&e).IsUnspecified() {
			t.Errorf("service cap event names a client: %v", SourceAddr(&e))
		}
	}
	for _, r := range []GuardAgReason{GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED, GuardAgReasonAG_R_CONN_CLIENT_HALF_OPEN, GuardAgReasonAG_R_CONN_SERVICE_ESTABLISHED} {
		if !seen[Reason(r)] {
			t.Errorf("no conn_limited event with reason %v (saw %v)", Reason(r), seen)
		}
	}

	t.Run("a lower cap or a policy change cuts nothing", func(t *testing.T) {
		p := ctPolicy()
		p.Services[0].MaxConns.ClientEstablished = 1
		mustApply(t, d, p)
		runSteps(t, d, svcCapped, run, []ctStep{
			in("data on a connection over the new cap", a(2), fPSH, 101, 5001, stEst, ConnCount{1, 1}),
			refused("a new SYN", a(4), GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED, noFlow, ConnCount{1, 1}),
		})
		p.Services[0].MaxConns = ConnLimits{}
		mustApply(t, d, p)
		checkVerdicts(t, d, []verdictCase{
			vc("caps gone: a SYN is not even followed", a(4).in(fSYN, 1, 0), pass, rOK),
		})
		if f := flowOf(t, d, a(4)); f.State != noFlow {
			t.Errorf("an uncapped service's SYN made a flow: %+v", f)
		}
	})
}

// TestConnTimeouts: idle flows give their slot back after the (short,
// configured) timeout, whether a packet finds them (lazily) or the sweeper
// does, exactly once; closed flows are deleted after their linger.
func TestConnTimeouts(t *testing.T) {
	d := newDatapath(t, Options{})
	p := ctPolicy()
	p.Conns = ConnTracking{EstablishedTimeout: 1500 * time.Millisecond, HalfOpenTimeout: 300 * time.Millisecond, ClosedTimeout: 300 * time.Millisecond}
	mustApply(t, d, p)
	run := func(b []byte) uint32 { return runXDP(t, d, b) }
	client := addr("10.6.0.1")
	hs := newConn("10.6.0.1", 8443).port(1)
	est := newConn("10.6.0.1", 8443).port(2)
	runSteps(t, d, svcCapped, run, steps([]ctStep{in("SYN", hs, fSYN, 100, 0, stSynSent, half1)},
		[]ctStep{
			in("SYN", est, fSYN, 100, 0, stSynSent, half2),
			out("SYN-ACK", est, fSYNACK, 5000, 101, stSynRecv, half2),
			in("ACK", est, fACK, 101, 5001, stEst, ConnCount{1, 1}),
		}))

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// the sweeper releases the unfinished handshake; the established flow stays
	waitFor("the sweeper releases a half-open flow", func() bool {
		if _, err := d.SweepFlows(); err != nil {
			t.Fatal(err)
		}
		return flowOf(t, d, hs).State == stExpired
	})
	if got := countOf(t, d, client, svcCapped); got != est1 {
		t.Fatalf("after the half-open timeout the client holds %+v, want 1 established", got)
	}
	if f := flowOf(t, d, est); f.State != stEst {
		t.Fatalf("established flow %v after the half-open timeout", f.State)
	}
	// then the linger: the expired entry is deleted
	waitFor("the sweeper deletes the expired flow after its linger", func() bool {
		if _, err := d.SweepFlows(); err != nil {
			t.Fatal(err)
		}
		return flowOf(t, d, hs).State == noFlow
	})

	// no sweeper now: the next packet finds the established flow idle
	waitFor("the established timeout passes", func() bool {
		return time.Until(flowOf(t, d, est).Deadline) < -50*time.Millisecond
	})
	runSteps(t, d, svcCapped, run, []ctStep{
		in("a packet after the idle timeout passes", est, fPSH, 101, 5001, stExpired, zero),
	})
	// a sweep now must not release it a second time
	if _, err := d.SweepFlows(); err != nil {
		t.Fatal(err)
	}
	if got := countOf(t, d, client, svcCapped); got != zero {
		t.Fatalf("after a lazy expiry and a sweep the client holds %+v", got)
	}
	// the server still talks on it: it was alive after all
	runSteps(t, d, svcCapped, run, []ctStep{
		out("server data", est, fPSH, 5001, 101, stEst, est1),
	})
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.FlowsExpired != 2 || st.FlowsDeleted < 1 || st.FlowCountMissing != 0 {
		t.Errorf("stats %+v: want 2 expiries, a deletion and no missing count", st)
	}
	sc, err := d.ServiceConns()
	if err != nil {
		t.Fatal(err)
	}
	if sc[svcCapped] != est1 {
		t.Errorf("service total %+v, want the one re-adopted connection", sc[svcCapped])
	}
}

// TestConnTableFull: a new connection that finds no room passes untracked
// (fail-open) or is dropped (fail-closed), counted and reported either way.
func TestConnTableFull(t *testing.T) {
	for _, failClosed := range []bool{false, true} {
		t.Run(fmt.Sprintf("failClosed=%v", failClosed), func(t *testing.T) {
			const capacity = 8
			d := newDatapath(t, Options{FlowCapacity: capacity, EventInterval: time.Nanosecond})
			p := ctPolicy()
			p.Conns.FailClosed = failClosed
			mustApply(t, d, p)
			for i := 0; i < capacity; i++ {
				c := newConn(fmt.Sprintf("10.5.0.%d", i+1), 8443)
				checkVerdicts(t, d, []verdictCase{vc(fmt.Sprintf("SYN %d", i), c.in(fSYN, 1, 0), pass, rOK)})
			}
			want := pass
			if failClosed {
				want = drop
			}
			c := newConn("10.5.1.1", 8443)
			checkVerdicts(t, d, []verdictCase{vc("one more", c.in(fSYN, 1, 0), want, Reason(GuardAgReasonAG_R_FLOW_TABLE_FULL))})
			if f := flowOf(t, d, c); f.State != noFlow {
				t.Fatalf("a flow past the capacity: %+v", f)
			}
			st, err := d.Stats()
			if err != nil || st.FlowTableFull != 1 || st.FlowsNew != capacity {
				t.Fatalf("stats %+v %v: want %d new flows and 1 refused for room", st, err, capacity)
			}
			var full int
			for _, e := range readEvents(t, d, 100) {
				if EventType(e.Type).String() == "flow_table_full" {
					full++
				}
			}
			if full != 1 {
				t.Errorf("%d flow_table_full events, want 1", full)
			}
			usage, err := d.Usage()
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range usage {
				if u.Name == "flows" && (u.Entries != capacity || u.Capacity != capacity) {
					t.Errorf("flow table usage %+v, want %d of %d", u, capacity, capacity)
				}
			}
		})
	}
}

// TestServiceACL: a service's allowFrom CIDRs admit their sources and refuse
// every other, IPv4 and IPv6, TCP and UDP, in both ingress programs; the
// global allow list still comes first; the ACL changes with the policy slot.
func TestServiceACL(t *testing.T) {
	d := newDatapath(t, Options{EventInterval: time.Nanosecond})
	mustApply(t, d, ctPolicy())
	acl := Reason(GuardAgReasonAG_R_ACL)
	syn := func(src string, port uint16) []byte { return newConn(src, port).in(fSYN, 1, 0) }
	cases := []verdictCase{
		vc("ipv4 inside", syn("10.50.3.4", 9443), pass, rOK),
		vc("ipv4 outside", syn("10.51.0.1", 9443), drop, acl),
		vc("ipv4 just outside", syn("10.49.255.255", 9443), drop, acl),
		vc("ipv6 inside", syn("2001:db8:50:1::9", 9443), pass, rOK),
		vc("ipv6 outside", syn("2001:db8:51::9", 9443), drop, acl),
		vc("udp inside", packet.Build(udp("10.50.0.9", 9053, 8)), pass, rOK),
		vc("udp outside", packet.Build(udp("2001:db8:49::1", 9053, 8)), drop, acl),
		vc("the allow list comes first", syn("192.0.2.3", 9443), pass, Reason(GuardAgReasonAG_R_ALLOW)),
		vc("other services are open", syn("10.51.0.1", 8080), pass, rOK),
	}
	checkVerdicts(t, d, cases)
	for _, c := range cases[:5] {
		ret, err := d.TC().Run(&ebpf.RunOptions{Data: c.frame})
		if err != nil {
			t.Fatal(err)
		}
		if (ret == 2) != (c.action == ActionDrop) {
			t.Errorf("tc %s: ret %d", c.name, ret)
		}
	}
	var hits int
	for _, e := range readEvents(t, d, 100) {
		if EventType(e.Type).String() == "acl_hit" {
			hits++
			if e.Service != svcACL && e.Service != svcACLUDP {
				t.Errorf("acl_hit event for service %d", e.Service)
			}
		}
	}
	if hits == 0 {
		t.Error("no acl_hit event")
	}
	// refused sources leave no trace in the service's buckets or flows
	if f := flowOf(t, d, newConn("10.51.0.1", 9443)); f.State != noFlow {
		t.Errorf("a refused source has a flow: %+v", f)
	}

	p := ctPolicy()
	p.Services[3].ACL = append(p.Services[3].ACL, pfx("10.51.0.0/24"))
	p.Services[4].Monitor = true
	mustApply(t, d, p)
	checkVerdicts(t, d, []verdictCase{
		vc("the new policy's ACL", syn("10.51.0.1", 9443), pass, rOK),
		vc("still outside", syn("10.52.0.1", 9443), drop, acl),
		vc("a monitored service only counts", packet.Build(udp("2001:db8:49::1", 9053, 8)), monitor, acl),
	})
	p.Services[3].ACL = nil
	mustApply(t, d, p)
	checkVerdicts(t, d, []verdictCase{vc("ACL removed", syn("10.52.0.1", 9443), pass, rOK)})
}

// A restarted loader adopts the flow table, the counts and the policy slots'
// ACLs and caps: applying the same policy writes nothing, and the connections
// followed before the restart are released by what comes after it.
func TestConnStateSurvivesRestart(t *testing.T) {
	dir := tempPinDir(t)
	d := newDatapath(t, Options{PinDir: dir})
	mustApply(t, d, ctPolicy())
	c := newConn("10.4.0.1", 8443)
	run := func(d *Datapath) func([]byte) uint32 { return func(b []byte) uint32 { return runXDP(t, d, b) } }
	runSteps(t, d, svcCapped, run(d), handshake(c))
	d.Close()

	d2 := newDatapath(t, Options{PinDir: dir})
	if !d2.Adopted() {
		t.Fatal("pinned maps not adopted")
	}
	res, err := d2.Apply(ctPolicy())
	if err != nil || res.Changed || res.ConnWrites != 0 {
		t.Fatalf("the same policy after a restart: %+v %v", res, err)
	}
	checkVerdicts(t, d2, []verdictCase{
		vc("the ACL is still in force", newConn("10.51.0.1", 9443).in(fSYN, 1, 0), drop, Reason(GuardAgReasonAG_R_ACL)),
	})
	runSteps(t, d2, svcCapped, run(d2), []ctStep{
		in("data on the connection", c, fPSH, 101, 5001, stEst, est1),
		in("a second connection", c.port(2), fSYN, 100, 0, stSynSent, ConnCount{1, 1}),
		refused("a third", c.port(3), GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED, noFlow, ConnCount{1, 1}),
		out("the server closes the first", c, fFIN, 5001, 101, stClosed, half1),
	})
	// a different flow table size does not fit the pinned one
	if _, err := Load(Options{PinDir: dir, FlowCapacity: 1024}); err == nil || !strings.Contains(err.Error(), "does not match this build") {
		t.Fatalf("a resized flow table over pinned state: %v", err)
	}
}
