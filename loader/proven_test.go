package loader

import (
	"fmt"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
)

// provenPolicy: one TCP service whose total admits 2 new connections and
// whose clients may open 1 each; data from the server proves a client for ttl.
func provenPolicy(ttl time.Duration) *Policy {
	return &Policy{
		ProvenTTL: ttl,
		Services: []Service{{ID: 1, Name: "web", Proto: ProtoTCP, Ports: []PortRange{{80, 80}},
			Client: Limits{Conns: Rate{PerSecond: 1, Burst: 1}},
			Total:  Limits{Conns: Rate{PerSecond: 1, Burst: 2}}}},
	}
}

// serverSays is a server -> client segment with payload bytes of data.
func serverSays(c tconn, flags uint8, payload int) []byte {
	return packet.Build(packet.Spec{Src: c.server(), Dst: c.client, Proto: packet.TCP,
		SrcPort: c.sport, DstPort: c.cport, TCPFlags: flags, Seq: 5001, Ack: 101, Payload: payload})
}

func synFrom(src string) []byte { return packet.Build(tcp(src, 80, packet.SYN)) }

var (
	rServiceCPS = Reason(GuardAgReasonAG_R_SERVICE_CPS)
	rPrefixCPS  = Reason(GuardAgReasonAG_R_PREFIX_CPS)
	rClientCPS  = Reason(GuardAgReasonAG_R_CLIENT_CPS)
)

// A spoofed SYN flood fills a service's shared new-connection budget; a client
// the server has sent data to keeps connecting. Nothing a blind spoofer can
// make the server send proves anything: a SYN-ACK, a RST, and the bare ACK or
// FIN the kernel answers an out-of-window segment of a half-open connection
// with (or a challenge ACK, or a TIME_WAIT ACK). The proof is per client key;
// the client's own limit still holds.
func TestProvenClientSkipsSharedConnectionLimit(t *testing.T) {
	for _, fam := range []struct {
		name            string
		spoof           func(i int) string
		real, neighbour string
	}{
		{"ipv4", func(i int) string { return fmt.Sprintf("10.1.%d.%d", i/250, 1+i%250) }, "10.2.0.1", "10.2.0.2"},
		// IPv6 clients are /64s by default
		{"ipv6", func(i int) string { return fmt.Sprintf("2001:db8:1:%x::1", i) }, "2001:db8:2:1::1", "2001:db8:2:2::1"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			d := newDatapath(t, Options{})
			mustApply(t, d, provenPolicy(10*time.Minute))
			real := newConn(fam.real, 80)
			// spoofed SYNs spend the total (1/s, burst 2) right before each
			// check that expects it spent, however slow the machine
			spoofs := 0
			spend := func() {
				t.Helper()
				for i := 0; i < 10; i++ {
					spoofs++
					if runXDP(t, d, synFrom(fam.spoof(spoofs))) == xdpDrop {
						return
					}
				}
				t.Fatal("10 spoofed SYNs did not spend the total")
			}
			spend()
			if spoofs < 3 {
				t.Fatalf("the total admitted %d spoofed SYNs, want at least its burst of 2", spoofs-1)
			}
			checkVerdicts(t, d, []verdictCase{vc("real client, not yet proven", synFrom(fam.real), drop, rServiceCPS)})
			for _, f := range []struct {
				name    string
				flags   uint8
				payload int
			}{
				{"SYN-ACK", packet.SYN | packet.ACK, 0}, {"RST", packet.RST | packet.ACK, 0}, {"bare RST", packet.RST, 0},
				{"bare ACK", packet.ACK, 0}, {"FIN without data", packet.FIN | packet.ACK, 0},
				{"RST with data", packet.RST | packet.ACK, 100}, {"SYN-ACK with data", packet.SYN | packet.ACK, 100},
			} {
				runEgress(t, d, serverSays(real, f.flags, f.payload))
				spend()
				checkVerdicts(t, d, []verdictCase{vc("after a "+f.name+" from the server", synFrom(fam.real), drop, rServiceCPS)})
			}
			if st := stats(t, d); st.ProvenSYNs != 0 {
				t.Fatalf("%d proven SYNs before any proof", st.ProvenSYNs)
			}
			// the server sends data on an established connection
			runEgress(t, d, serverSays(real, packet.ACK|packet.PSH, 100))
			spend()
			checkVerdicts(t, d, []verdictCase{
				vc("proven client", synFrom(fam.real), pass, rOK),
				vc("proven client, over its own limit", synFrom(fam.real), drop, rClientCPS),
			})
			spend()
			checkVerdicts(t, d, []verdictCase{vc("another client next to it", synFrom(fam.neighbour), drop, rServiceCPS)})
			if st := stats(t, d); st.ProvenSYNs != 2 {
				t.Fatalf("%d proven SYNs, want 2 (one passed, one refused by the client's own limit)", st.ProvenSYNs)
			}
		})
	}
}

// A proven client's SYN is charged to the shared bucket (never refused by
// it): with room for two, a proven SYN leaves room for one other.
func TestProvenSYNIsCharged(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, provenPolicy(10*time.Minute))
	runEgress(t, d, serverSays(newConn("10.2.0.1", 80), packet.ACK, 10))
	checkVerdicts(t, d, []verdictCase{
		vc("proven client", synFrom("10.2.0.1"), pass, rOK),
		vc("one other", synFrom("10.1.0.1"), pass, rOK),
		vc("the total is spent", synFrom("10.1.0.2"), drop, rServiceCPS),
	})
}

// The proof follows the policy's client key, and works for a shared limit at
// the prefix level too.
func TestProvenClientKeyAndPrefixLimit(t *testing.T) {
	d := newDatapath(t, Options{})
	mustApply(t, d, &Policy{
		ProvenTTL:   10 * time.Minute,
		ClientBits4: 24, PrefixBits4: 16,
		Services: []Service{{ID: 1, Name: "web", Proto: ProtoTCP, Ports: []PortRange{{80, 80}},
			Client: Limits{Conns: Rate{PerSecond: 100, Burst: 100}},
			Prefix: Limits{Conns: Rate{PerSecond: 1, Burst: 1}}}},
	})
	checkVerdicts(t, d, []verdictCase{
		vc("spoofed, spends 10.5/16", synFrom("10.5.1.1"), pass, rOK),
		vc("not proven", synFrom("10.5.2.1"), drop, rPrefixCPS),
	})
	runEgress(t, d, serverSays(newConn("10.5.2.1", 80), packet.ACK|packet.PSH, 10))
	checkVerdicts(t, d, []verdictCase{
		vc("proven", synFrom("10.5.2.1"), pass, rOK),
		vc("same /24 client key", synFrom("10.5.2.200"), pass, rOK),
		vc("another /24 of the prefix", synFrom("10.5.3.1"), drop, rPrefixCPS),
	})
}

// With no TTL, or no client connection limit to bound a proven client,
// nothing is proven; with a short TTL the proof lapses.
func TestProvenClientTTL(t *testing.T) {
	spend := []verdictCase{
		vc("spoofed 1", synFrom("10.1.0.1"), pass, rOK),
		vc("spoofed 2", synFrom("10.1.0.2"), pass, rOK),
	}
	real := newConn("10.2.0.1", 80)

	d := newDatapath(t, Options{})
	mustApply(t, d, provenPolicy(0))
	checkVerdicts(t, d, spend)
	runEgress(t, d, serverSays(real, packet.ACK, 100))
	checkVerdicts(t, d, []verdictCase{vc("TTL 0: the proof is off", synFrom("10.2.0.1"), drop, rServiceCPS)})

	unbounded := provenPolicy(10 * time.Minute)
	unbounded.Services[0].Client = Limits{}
	if img, err := compile(unbounded); err != nil || img.cfg.ProvenServices != 0 {
		t.Fatalf("a service without a client connection limit: proven bits %b (err %v), want none", img.cfg.ProvenServices, err)
	}

	d = newDatapath(t, Options{})
	mustApply(t, d, provenPolicy(400*time.Millisecond))
	checkVerdicts(t, d, spend)
	runEgress(t, d, serverSays(real, packet.ACK, 100))
	checkVerdicts(t, d, []verdictCase{vc("within the TTL", synFrom("10.2.0.1"), pass, rOK)})
	time.Sleep(600 * time.Millisecond)
	// spend whatever the total regained meanwhile (a slow machine may have
	// taken longer than the sleep), then the lapsed proof must not help
	for i := 0; i < 10 && runXDP(t, d, synFrom(fmt.Sprintf("10.1.1.%d", i+1))) == xdpPass; i++ {
	}
	proven := stats(t, d).ProvenSYNs
	checkVerdicts(t, d, []verdictCase{vc("the proof lapsed", synFrom("10.2.0.1"), drop, rServiceCPS)})
	if n := stats(t, d).ProvenSYNs; n != proven {
		t.Fatalf("a SYN used a lapsed proof (%d proven SYNs, was %d)", n, proven)
	}
}

// The payload the proof needs is what is left after every header: IPv4
// options and IPv6 extension headers are not data.
func TestProvenNeedsData(t *testing.T) {
	for _, h := range []struct {
		name string
		ext  func(*packet.Spec)
		v6   bool
	}{
		{"ipv4", func(*packet.Spec) {}, false},
		{"ipv4 with options", func(s *packet.Spec) { s.IPv4Options = 12 }, false},
		{"ipv6", func(*packet.Spec) {}, true},
		{"ipv6 with hop-by-hop and destination options", func(s *packet.Spec) { s.IPv6Ext = []uint8{0, 60} }, true},
		{"ipv6 with a fragment header (first fragment)", func(s *packet.Spec) { s.IPv6Ext = []uint8{packet.Fragment}; s.MoreFragments = true }, true},
	} {
		t.Run(h.name, func(t *testing.T) {
			client := "10.2.0.1"
			if h.v6 {
				client = "2001:db8:2:1::1"
			}
			c := newConn(client, 80)
			says := func(payload int) []byte {
				s := packet.Spec{Src: c.server(), Dst: c.client, Proto: packet.TCP, SrcPort: 80, DstPort: c.cport,
					TCPFlags: packet.ACK | packet.PSH, Seq: 5001, Ack: 101, Payload: payload}
				h.ext(&s)
				return packet.Build(s)
			}
			d := newDatapath(t, Options{})
			mustApply(t, d, provenPolicy(10*time.Minute))
			runEgress(t, d, says(0))
			if len(provenKeysAll(t, d)) != 0 {
				t.Fatal("headers alone proved the client")
			}
			runEgress(t, d, says(1))
			if len(provenKeysAll(t, d)) != 1 {
				t.Fatal("one byte of data did not prove the client")
			}
		})
	}
}

func provenKeysAll(t *testing.T, d *Datapath) []GuardAgClientKey {
	t.Helper()
	var (
		out []GuardAgClientKey
		k   GuardAgClientKey
		v   uint64
	)
	it := d.objs.Proven.Iterate()
	for it.Next(&k, &v) {
		out = append(out, k)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func stats(tb testing.TB, d *Datapath) Stats {
	tb.Helper()
	st, err := d.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	return st
}
