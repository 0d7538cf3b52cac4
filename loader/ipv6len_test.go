package loader

import (
	"encoding/binary"
	"testing"
)

// An IPv6 transport header is read within the payload length, as an IPv4 one
// is within the total length: the kernel trims the packet to it (ip6_rcv)
// and TCP discards a segment cut inside its header without a word. Read past
// it, the flags were whatever the sender put behind the packet: a client's
// "RST" there released its connection's slot while the server, which never
// saw it, kept the connection open and sent no challenge ACK to adopt it
// again; with the RST's sequence number set to what the server acknowledges,
// none of its later segments adopted it either. One connection after
// another, a client held as many as it liked past maxConnections.
func TestIPv6TransportWithinPayloadLength(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, ctPolicy())
	c := newConn("2001:db8:50::7", 8443)
	runSteps(t, d, svcCapped, func(f []byte) uint32 { return runXDP(t, d, f) }, handshake(c))
	// a RST whose payload length ends 6 bytes into its TCP header
	rst := c.in(fRST, 101, 0)
	binary.BigEndian.PutUint16(rst[14+4:], 14)
	before := counterMap(t, d)
	if got := runXDP(t, d, rst); got != xdpDrop {
		t.Errorf("a RST cut by its payload length: verdict %d, want drop", got)
	}
	if a, r, _ := counterDelta(t, before, counterMap(t, d)); a != ActionDrop || r != Reason(GuardAgReasonAG_R_TRUNCATED) {
		t.Errorf("counted as %v/%v, want drop/truncated", a, r)
	}
	if st := flowOf(t, d, c).State; st != stEst {
		t.Errorf("flow %v after a RST the server never read, want established", st)
	}
	if n := countOf(t, d, c.client, svcCapped); n != est1 {
		t.Errorf("client holds %+v, want one established connection", n)
	}
}
