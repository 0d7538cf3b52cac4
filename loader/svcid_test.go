package loader

import (
	"testing"

	"github.com/apiguard/apiguard/test/packet"
)

// Service ids are few (63) and come back: userspace/policy gives a new
// service the lowest id the policy in force does not use, which may be the id
// of a service removed one policy earlier. What the kernel keeps per id (the
// service's total buckets, its fragment budget, its clients' and prefixes'
// buckets and counters, proven clients) belonged to that old service: a new
// service starts afresh, or it would inherit a debt an attacker ran up
// against the old one (here 100 s of a bytes bucket, against a new service
// whose whole burst is 2 s) and refuse every client until it is paid.
func TestServiceIDReuseStartsAfresh(t *testing.T) {
	d := newDatapath(t, Options{})
	heavy := Limits{Bytes: Rate{PerSecond: 1000, Burst: 100_000}}
	mustApply(t, d, &Policy{Services: []Service{{ID: 1, Name: "old", Proto: ProtoUDP,
		Ports: []PortRange{{9400, 9400}}, Client: heavy, Prefix: heavy, Total: heavy,
		Fragments: Rate{PerSecond: 1, Burst: 70}}}})
	flood := packet.Build(udp("10.40.0.1", 9400, 1472))
	for i := 0; i < 80; i++ { // 121 kB: the buckets' whole burst and more
		runXDP(t, d, flood)
	}
	frag := packet.Build(first(udp("10.40.0.1", 9400, 0), 1, 8))
	for i := 0; i < 70; i++ { // the fragment budget's whole burst
		runXDP(t, d, frag)
	}
	if n := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_SERVICE_BPS) + reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_CLIENT_BPS) +
		reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_PREFIX_BPS); n == 0 {
		t.Fatalf("the flood did not empty the old service's buckets: %v", counterMap(t, d))
	}
	// the old service goes; one policy later a new one takes its id
	mustApply(t, d, &Policy{Services: []Service{{ID: 2, Name: "other", Proto: ProtoUDP, Ports: []PortRange{{9401, 9401}}}}})
	light := Limits{Bytes: Rate{PerSecond: 1_000_000, Burst: 2_000_000}}
	mustApply(t, d, &Policy{Services: []Service{{ID: 1, Name: "new", Proto: ProtoUDP,
		Ports: []PortRange{{9402, 9402}}, Client: light, Prefix: light, Total: light,
		Fragments: Rate{PerSecond: 100, Burst: 100}}}})
	checkVerdicts(t, d, []verdictCase{
		vc("the new service's first client", packet.Build(udp("10.40.0.1", 9402, 1472)), pass, Reason(GuardAgReasonAG_R_OK)),
		vc("another client", packet.Build(udp("10.40.0.2", 9402, 1472)), pass, Reason(GuardAgReasonAG_R_OK)),
		vc("a fragment", packet.Build(first(udp("10.40.0.3", 9402, 0), 2, 8)), pass, Reason(GuardAgReasonAG_R_OK)),
	})
	c := findClient(t, d, addr("10.40.0.1"), 1)
	if c.Packets != 1 {
		t.Errorf("the new service's client has %d packets, want 1: the old service's counters carried over", c.Packets)
	}

	// a service that keeps its id keeps its state (policies/README.md)
	mustApply(t, d, &Policy{Services: []Service{{ID: 1, Name: "new", Proto: ProtoUDP,
		Ports: []PortRange{{9402, 9402}}, Client: heavy}}})
	if c := findClient(t, d, addr("10.40.0.1"), 1); c.Packets != 1 {
		t.Errorf("a service changing its limits lost its clients' state: %d packets, want 1", c.Packets)
	}
}
