package policy

import (
	"fmt"
	"net/netip"
)

// Drops tells whether the policy drops packets from src to a local port
// (proto and port; port 0 asks about a source's traffic that reaches no
// service: ARP, ICMP, neighbour discovery, as a gateway sends), following the
// datapath's order: allow, deny, then the service the port belongs to, its
// allowFrom, and defaultAction. Rate limits are not judged: a flow within
// them passes. why says which part of the policy drops it.
//
// It is what `policy apply` checks against the caller's own SSH session and
// the host's default gateways before making a policy the one in force.
func (p *Policy) Drops(src netip.Addr, proto Protocol, port uint16) (why string, drops bool) {
	s := &p.Spec
	// the kernel sees neither v4-mapped addresses nor zones, and a zoned
	// address (a link-local session's "fe80::1%eth0") is in no netip.Prefix
	src = src.Unmap().WithZone("")
	if s.Mode == Monitor {
		return "", false
	}
	if covering(s.Allow, src).IsValid() {
		return "", false
	}
	if d := covering(s.Deny, src); d.IsValid() {
		return fmt.Sprintf("spec.deny holds %v", d), true
	}
	if port == 0 {
		return "", false
	}
	for i := range s.Services {
		svc := &s.Services[i]
		if svc.Protocol != proto || !inRanges(svc.Ports, port) {
			continue
		}
		if len(svc.AllowFrom) > 0 && !covering(svc.AllowFrom, src).IsValid() && svc.Mode != Monitor {
			return fmt.Sprintf("service %s (%s %d) admits only its allowFrom, which does not hold %v", svc.Name, proto, port, src), true
		}
		return "", false
	}
	if s.DefaultAction == Drop {
		return fmt.Sprintf("defaultAction is drop and no service claims %s port %d", proto, port), true
	}
	return "", false
}

// covering returns the first prefix of ps that holds a, or the zero Prefix.
func covering(ps []netip.Prefix, a netip.Addr) netip.Prefix {
	for _, p := range ps {
		if p.Contains(a) {
			return p
		}
	}
	return netip.Prefix{}
}

func inRanges(rs []PortRange, port uint16) bool {
	for _, r := range rs {
		if port >= r.First && port <= r.Last {
			return true
		}
	}
	return false
}
