package loader

import (
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/test/packet"
)

// svcKey names one per-service counter: service label, action, reason.
type svcKey struct {
	service string
	action  Action
	reason  Reason
}

func serviceCounterMap(tb testing.TB, d *Datapath) map[svcKey]ServiceCounter {
	tb.Helper()
	cs, err := d.ServiceCounters()
	if err != nil {
		tb.Fatalf("service counters: %v", err)
	}
	out := map[svcKey]ServiceCounter{}
	for _, c := range cs {
		k := svcKey{c.Service, c.Action, c.Reason}
		if _, dup := out[k]; dup {
			tb.Fatalf("service counter %v listed twice", k)
		}
		out[k] = c
	}
	return out
}

// TestServiceCounters is the verdict table of the kernel's per-service
// counters: one packet, its verdict, and the one (service, action, reason)
// counter it moves, by one packet and its length; no other moves, and the
// global (action, reason) counter moves with it.
func TestServiceCounters(t *testing.T) {
	d := newDatapath(t, Options{})
	one := Rate{PerSecond: 1, Burst: 1}
	mustApply(t, d, &Policy{
		Deny: []netip.Prefix{pfx("198.51.100.0/24")},
		Services: []Service{
			{ID: 1, Name: "api", Proto: ProtoTCP, Ports: []PortRange{{8080, 8080}}, Client: Limits{Packets: one}},
			{ID: 2, Name: "dns", Proto: ProtoUDP, Ports: []PortRange{{5353, 5353}}, Monitor: true, ACL: []netip.Prefix{pfx("10.9.0.0/16")}},
			{ID: 63, Name: "last", Proto: ProtoUDP, Ports: []PortRange{{6363, 6363}}},
		},
	})
	api := packet.Build(tcp("10.1.0.1", 8080, packet.ACK))
	none := NoService
	cases := []struct {
		name  string
		frame []byte
		ret   uint32
		want  svcKey
	}{
		{"a client of api", api, xdpPass, svcKey{"api", ActionPass, Reason(GuardAgReasonAG_R_OK)}},
		{"over its packet rate", api, xdpDrop, svcKey{"api", ActionDrop, Reason(GuardAgReasonAG_R_CLIENT_PPS)}},
		{"refused by the refusal memory", api, xdpDrop, svcKey{"api", ActionDrop, Reason(GuardAgReasonAG_R_CLIENT_PPS)}},
		{"another client of api", packet.Build(tcp("2001:db8:1::1", 8080, packet.ACK)), xdpPass, svcKey{"api", ActionPass, Reason(GuardAgReasonAG_R_OK)}},
		{"outside dns's ACL, monitored", packet.Build(udp("10.1.0.2", 5353, 40)), xdpPass, svcKey{"dns", ActionMonitor, Reason(GuardAgReasonAG_R_ACL)}},
		{"inside dns's ACL", packet.Build(udp("10.9.0.2", 5353, 40)), xdpPass, svcKey{"dns", ActionPass, Reason(GuardAgReasonAG_R_OK)}},
		{"the last id", packet.Build(udp("10.1.0.3", 6363, 10)), xdpPass, svcKey{"last", ActionPass, Reason(GuardAgReasonAG_R_OK)}},
		{"denied before any service", packet.Build(tcp("198.51.100.1", 8080, packet.SYN)), xdpDrop, svcKey{none, ActionDrop, Reason(GuardAgReasonAG_R_DENY)}},
		{"to no service", packet.Build(tcp("10.1.0.4", 9999, packet.SYN)), xdpPass, svcKey{none, ActionPass, Reason(GuardAgReasonAG_R_NO_SERVICE)}},
		{"icmp", packet.Build(packet.Spec{Src: addr("10.1.0.7"), Dst: guarded4, Proto: packet.ICMP, ICMPType: 8}), xdpPass, svcKey{none, ActionPass, Reason(GuardAgReasonAG_R_ICMP)}},
		{"truncated", api[:30], xdpDrop, svcKey{none, ActionDrop, Reason(GuardAgReasonAG_R_TRUNCATED)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, gBefore := serviceCounterMap(t, d), counterMap(t, d)
			ret := runXDP(t, d, c.frame)
			after, gAfter := serviceCounterMap(t, d), counterMap(t, d)
			if ret != c.ret {
				t.Errorf("ret %d, want %d", ret, c.ret)
			}
			for k, a := range after {
				b := before[k]
				want := ServiceCounter{Service: k.service, Action: k.action, Reason: k.reason, Packets: b.Packets, Bytes: b.Bytes}
				if k == c.want {
					want.Packets++
					want.Bytes += uint64(len(c.frame))
				}
				if a != want {
					t.Errorf("%v: %+v, want %+v", k, a, want)
				}
			}
			if _, ok := after[c.want]; !ok {
				t.Errorf("%v did not count the packet: %v", c.want, after)
			}
			if a, r, n := counterDelta(t, gBefore, gAfter); a != c.want.action || r != c.want.reason || n != 1 {
				t.Errorf("global counter %v/%v +%d, want %v/%v +1", a, r, n, c.want.action, c.want.reason)
			}
		})
	}
}

// TestServiceCountersFollowNames: a new service that takes a removed one's
// id counts from zero; a name's counts never go backwards, whatever id it
// has; an id renamed in place (all ids taken) hands its counts to the new
// name from that moment.
func TestServiceCountersFollowNames(t *testing.T) {
	d := newDatapath(t, Options{})
	svc := func(id uint32, name string, port uint16) Service {
		return Service{ID: id, Name: name, Proto: ProtoUDP, Ports: []PortRange{{port, port}}}
	}
	send := func(port uint16, n int) {
		for i := 0; i < n; i++ {
			runXDP(t, d, packet.Build(udp("10.2.0.1", port, 10)))
		}
	}
	ok := Reason(GuardAgReasonAG_R_OK)
	count := func(name string) uint64 {
		return serviceCounterMap(t, d)[svcKey{name, ActionPass, ok}].Packets
	}
	mustApply(t, d, &Policy{Services: []Service{svc(1, "old", 9500)}})
	send(9500, 5)
	if n := count("old"); n != 5 {
		t.Fatalf("old counted %d, want 5", n)
	}
	// old goes; one policy later "new" takes its id
	mustApply(t, d, &Policy{Services: []Service{svc(2, "other", 9501)}})
	if _, ok := serviceCounterMap(t, d)[svcKey{"old", ActionPass, ok}]; ok {
		t.Error("a removed service is still listed")
	}
	mustApply(t, d, &Policy{Services: []Service{svc(1, "new", 9502)}})
	if n := count("new"); n != 0 {
		t.Errorf("a new service on a reused id starts at %d, want 0: the old one's counts carried over", n)
	}
	rows, err := d.readServiceCounters()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range rows[1] {
		if c != (svcCount{}) {
			t.Errorf("the reused id's row %d holds %+v in the kernel, want zero", i, c)
		}
	}
	send(9502, 2)
	if n := count("new"); n != 2 {
		t.Errorf("new counted %d, want 2", n)
	}
	// old comes back on another id: its count goes on from 5
	mustApply(t, d, &Policy{Services: []Service{svc(1, "new", 9502), svc(3, "old", 9500)}})
	send(9500, 1)
	if n := count("old"); n != 6 {
		t.Errorf("old counted %d after coming back, want 6 (never backwards)", n)
	}
	// id 1 renamed in place, the kernel's policy unchanged: the new name
	// starts at zero, and new keeps its 2 should it come back
	mustApply(t, d, &Policy{Services: []Service{svc(1, "renamed", 9502), svc(3, "old", 9500)}})
	if n := count("renamed"); n != 0 {
		t.Errorf("a renamed id starts at %d, want 0", n)
	}
	send(9502, 3)
	if n := count("renamed"); n != 3 {
		t.Errorf("renamed counted %d, want 3", n)
	}
	mustApply(t, d, &Policy{Services: []Service{svc(1, "renamed", 9502), svc(3, "old", 9500), svc(4, "new", 9503)}})
	if n := count("new"); n != 2 {
		t.Errorf("new came back with %d, want its 2", n)
	}
	if n := count("renamed"); n != 3 {
		t.Errorf("renamed counted %d, want 3", n)
	}
}

func TestNoServiceIsNoServiceName(t *testing.T) {
	_, err := compile(&Policy{Services: []Service{{ID: 1, Name: NoService, Proto: ProtoTCP, Ports: []PortRange{{80, 80}}}}})
	if err == nil {
		t.Errorf("a service named %q compiled", NoService)
	}
}
