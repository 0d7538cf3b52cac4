package loader

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
)

// skbGSO is struct __sk_buff up to gso_size (offset 176): the context of a
// prog.Run whose skb the kernel marks as a GSO aggregate, as GRO marks the
// ones it builds (prog.Run copies gso_segs and gso_size into the skb).
type skbGSO struct {
	_       [164]byte
	GSOSegs uint32
	_       [8]byte
	GSOSize uint32
}

// zeroLen sets the IP length field of frame (IPv4 total length, IPv6
// payload length) to 0.
func zeroLen(frame []byte) []byte {
	if frame[14]>>4 == 4 {
		binary.BigEndian.PutUint16(frame[14+2:], 0)
	} else {
		binary.BigEndian.PutUint16(frame[14+4:], 0)
	}
	return frame
}

// An IP length field of 0 is a GRO or BIG TCP aggregate's only in TC and
// only on a GSO skb: the kernel writes it there for an aggregate longer than
// the field can say, and drops any other packet that says 0 (ip_rcv: a total
// length below the header; ip6_rcv trims the packet to its bare header). Taken
// as "no limit" everywhere, a client's RST of length 0 with RST flags in its
// bytes released its connection's slot while the server discarded it and kept
// the connection: one connection after another past maxConnections.
func TestZeroLengthOnlyForGSO(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, ctPolicy())
	xdp := func(f []byte) uint32 { return runXDP(t, d, f) }
	tcWith := func(gso uint32) func([]byte) uint32 {
		return func(f []byte) uint32 {
			opts := &ebpf.RunOptions{Data: f}
			if gso != 0 {
				opts.Context = skbGSO{GSOSegs: 2, GSOSize: gso}
			}
			ret, err := d.TC().Run(opts)
			if err != nil {
				t.Fatalf("tc prog.Run: %v", err)
			}
			if ret == 2 { // TC_ACT_SHOT, in the XDP terms of the table
				return xdpDrop
			}
			return xdpPass
		}
	}
	malformed, truncated := Reason(GuardAgReasonAG_R_MALFORMED), Reason(GuardAgReasonAG_R_TRUNCATED)
	cases := []struct {
		name   string
		client string
		run    func([]byte) uint32
		reason Reason // for the RST of length 0
	}{
		// IPv4: a header longer than a total length of 0, as one longer than any
		{"xdp ipv4", "10.51.0.1", xdp, malformed},
		{"tc ipv4", "10.51.0.2", tcWith(0), malformed},
		// IPv6: a transport header past a payload length of 0
		{"xdp ipv6", "2001:db8:51:1::1", xdp, truncated},
		{"tc ipv6", "2001:db8:51:2::1", tcWith(0), truncated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// at the client's cap of two established connections
			c1, c2 := newConn(tc.client, 8443), newConn(tc.client, 8443).port(40001)
			second := handshake(c2)
			for i := range second {
				second[i].count.Established++ // beside c1's
			}
			runSteps(t, d, svcCapped, tc.run, append(handshake(c1), second...))
			before := counterMap(t, d)
			if got := tc.run(zeroLen(c1.in(fRST, 101, 0))); got != xdpDrop {
				t.Errorf("a RST of length 0: verdict %d, want drop", got)
			}
			if a, r, _ := counterDelta(t, before, counterMap(t, d)); a != ActionDrop || r != tc.reason {
				t.Errorf("counted as %v/%v, want drop/%v", a, r, tc.reason)
			}
			if st := flowOf(t, d, c1).State; st != stEst {
				t.Errorf("flow %v after a RST the server never read, want established", st)
			}
			if n := countOf(t, d, c1.client, svcCapped); n != est2 {
				t.Errorf("client holds %+v, want two established connections (its slot kept)", n)
			}
			// and a third connection is still refused
			c3 := newConn(tc.client, 8443).port(40002)
			runSteps(t, d, svcCapped, tc.run, []ctStep{
				refused("SYN over the cap", c3, GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED, noFlow, est2),
			})
		})
	}
	// A GRO aggregate of length 0 in TC is read as ever: its FIN (the last
	// segment merged) closes the client's side, and a data aggregate passes.
	for _, client := range []string{"10.51.0.9", "2001:db8:51:9::1"} {
		t.Run("tc gso "+client, func(t *testing.T) {
			gso := tcWith(1448)
			c := newConn(client, 8443)
			runSteps(t, d, svcCapped, gso, handshake(c))
			for _, s := range []struct {
				flags uint8
				state FlowState
			}{{fPSH, stEst}, {fFIN, stFinWait}} {
				before := counterMap(t, d)
				if got := gso(zeroLen(c.in(s.flags, 101, 5001))); got != xdpPass {
					t.Errorf("a GSO aggregate of length 0 (flags %#x): verdict %d, want pass", s.flags, got)
				}
				if a, r, _ := counterDelta(t, before, counterMap(t, d)); a != ActionPass || r != rOK {
					t.Errorf("flags %#x: counted as %v/%v, want pass/ok", s.flags, a, r)
				}
				if st := flowOf(t, d, c).State; st != s.state {
					t.Errorf("flags %#x: flow %v, want %v", s.flags, st, s.state)
				}
			}
			// the egress program reads the server's side with the same
			// parser: its FIN of length 0 closes the flow only as a GSO skb
			egress := func(gso uint32) {
				opts := &ebpf.RunOptions{Data: zeroLen(c.out(fFIN, 5001, 102))}
				if gso != 0 {
					opts.Context = skbGSO{GSOSegs: 2, GSOSize: gso}
				}
				if _, err := d.Egress().Run(opts); err != nil {
					t.Fatalf("egress prog.Run: %v", err)
				}
			}
			egress(0)
			if st := flowOf(t, d, c).State; st != stFinWait {
				t.Errorf("after a server FIN of length 0 on no GSO skb: flow %v, want fin_wait", st)
			}
			egress(1448)
			if st := flowOf(t, d, c).State; st != stClosed {
				t.Errorf("after a server FIN of length 0 on a GSO skb: flow %v, want closed", st)
			}
			if n := countOf(t, d, c.client, svcCapped); n != zero {
				t.Errorf("client holds %+v after both FINs, want none", n)
			}
		})
	}
}
