package loader

import (
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
)

// provenPolicy: one TCP service whose total admits 2 new connections and
// whose clients may open 1 each; a handshake proves a client for ttl.
func provenPolicy(ttl time.Duration) *Policy {
	return &Policy{
		ProvenTTL: ttl,
		Services: []Service{{ID: 1, Name: "web", Proto: ProtoTCP, Ports: []PortRange{{80, 80}},
			Client: Limits{Conns: Rate{PerSecond: 1, Burst: 1}},
			Total:  Limits{Conns: Rate{PerSecond: 1, Burst: 2}}}},
	}
}

// A spoofed SYN flood fills a service's shared new-connection budget; a client
// the server has spoken to on an established connection keeps connecting. A
// SYN-ACK or a RST proves nothing (the server sends those to spoofed sources
// too); the proof is per client key; the client's own limits still hold.
func TestProvenClientSkipsSharedConnectionLimit(t *testing.T) {
	for _, fam := range []struct {
		name                   string
		spoof1, spoof2, spoof3 string
		real, neighbour        string
	}{
		{"ipv4", "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.2.0.1", "10.2.0.2"},
		// IPv6 clients are /64s by default
		{"ipv6", "2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1", "2001:db8:2:1::1", "2001:db8:2:2::1"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			d := newDatapath(t, Options{})
			mustApply(t, d, provenPolicy(10*time.Minute))
			syn := func(src string) []byte { return packet.Build(tcp(src, 80, packet.SYN)) }
			real := newConn(fam.real, 80)
			ok, total, client := Reason(GuardAgReasonAG_R_OK), Reason(GuardAgReasonAG_R_SERVICE_CPS), Reason(GuardAgReasonAG_R_CLIENT_CPS)
			checkVerdicts(t, d, []verdictCase{
				vc("spoofed 1", syn(fam.spoof1), pass, ok),
				vc("spoofed 2", syn(fam.spoof2), pass, ok),
				vc("spoofed 3: the total is spent", syn(fam.spoof3), drop, total),
				vc("real client, not yet proven", syn(fam.real), drop, total),
			})
			for _, f := range []struct {
				name  string
				flags uint8
			}{{"SYN-ACK", packet.SYN | packet.ACK}, {"RST", packet.RST | packet.ACK}, {"bare RST", packet.RST}} {
				runEgress(t, d, real.out(f.flags, 5000, 101))
				checkVerdicts(t, d, []verdictCase{vc("after a "+f.name+" from the server", syn(fam.real), drop, total)})
			}
			if st := stats(t, d); st.ProvenSYNs != 0 {
				t.Fatalf("%d proven SYNs before any proof", st.ProvenSYNs)
			}
			// the server acknowledges data on an established connection
			runEgress(t, d, real.out(packet.ACK, 5001, 101))
			checkVerdicts(t, d, []verdictCase{
				vc("proven client", syn(fam.real), pass, ok),
				vc("proven client, over its own limit", syn(fam.real), drop, client),
				vc("another address next to it", syn(fam.neighbour), drop, total),
			})
			if st := stats(t, d); st.ProvenSYNs != 2 {
				t.Fatalf("%d proven SYNs, want 2 (one passed, one refused by the client's own limit)", st.ProvenSYNs)
			}
		})
	}
}

// With no TTL nothing is proven; with a short one the proof lapses.
func TestProvenClientTTL(t *testing.T) {
	ok, total := Reason(GuardAgReasonAG_R_OK), Reason(GuardAgReasonAG_R_SERVICE_CPS)
	syn := func(src string) []byte { return packet.Build(tcp(src, 80, packet.SYN)) }
	spend := []verdictCase{
		vc("spoofed 1", syn("10.1.0.1"), pass, ok),
		vc("spoofed 2", syn("10.1.0.2"), pass, ok),
	}
	real := newConn("10.2.0.1", 80)

	d := newDatapath(t, Options{})
	mustApply(t, d, provenPolicy(0))
	checkVerdicts(t, d, spend)
	runEgress(t, d, real.out(packet.ACK, 5001, 101))
	checkVerdicts(t, d, []verdictCase{vc("TTL 0: the proof is off", syn("10.2.0.1"), drop, total)})

	d = newDatapath(t, Options{})
	mustApply(t, d, provenPolicy(300*time.Millisecond))
	checkVerdicts(t, d, spend)
	runEgress(t, d, real.out(packet.ACK, 5001, 101))
	time.Sleep(400 * time.Millisecond)
	// the total refilled by 0.4 in the meantime: not enough for a SYN
	checkVerdicts(t, d, []verdictCase{vc("the proof lapsed", syn("10.2.0.1"), drop, total)})
}

func stats(tb testing.TB, d *Datapath) Stats {
	tb.Helper()
	st, err := d.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	return st
}
