package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDrops(t *testing.T) {
	src := `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: lockout}
spec:
  defaultAction: drop
  allow: [192.0.2.0/28]
  deny: [192.0.2.0/24, 2001:db8:bad::/48]
  services:
    - name: ssh
      protocol: tcp
      ports: [22]
      allowFrom: [198.51.100.0/24, 192.0.2.128/25]
    - name: api
      protocol: tcp
      ports: ["8000-8999"]
    - name: trial
      protocol: tcp
      ports: [2222]
      mode: monitor
      allowFrom: [198.51.100.0/24]
`
	pol, err := Parse("p.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		src   string
		proto Protocol
		port  uint16
		want  string // "" passes
	}{
		{"192.0.2.5", TCP, 22, ""},                                   // allow comes first
		{"::ffff:192.0.2.5", TCP, 22, ""},                            // v4-mapped is IPv4
		{"192.0.2.200", TCP, 22, "spec.deny holds 192.0.2.0/24"},     // deny before the service's allowFrom
		{"192.0.2.200", TCP, 0, "spec.deny holds 192.0.2.0/24"},      // a gateway in deny: ARP too
		{"198.51.100.7", TCP, 22, ""},                                // in allowFrom
		{"203.0.113.9", TCP, 22, "service ssh (tcp 22) admits only"}, // not in allowFrom
		{"203.0.113.9", TCP, 8443, ""},                               // a service without allowFrom
		{"203.0.113.9", TCP, 2222, ""},                               // monitor mode counts and passes
		{"203.0.113.9", TCP, 23, "defaultAction is drop and no service claims tcp port 23"},
		{"203.0.113.9", UDP, 22, "defaultAction is drop and no service claims udp port 22"},
		{"203.0.113.9", TCP, 0, ""}, // ICMP, ARP: no service, no defaultAction
		{"2001:db8:bad::1", TCP, 8443, "spec.deny holds 2001:db8:bad::/48"},
		// a link-local session carries its zone (SSH_CONNECTION's
		// "fe80::1%eth0"); the kernel sees no zone, and netip's Contains
		// never matches a zoned address
		{"2001:db8:bad::1%eth0", TCP, 8443, "spec.deny holds 2001:db8:bad::/48"},
		{"2001:db8:bad::1%eth0", TCP, 22, "spec.deny holds 2001:db8:bad::/48"},
	} {
		why, drops := pol.Drops(netip.MustParseAddr(tc.src), tc.proto, tc.port)
		if drops != (tc.want != "") || !strings.HasPrefix(why, tc.want) {
			t.Errorf("Drops(%s, %s, %d) = %q, %v; want %q", tc.src, tc.proto, tc.port, why, drops, tc.want)
		}
	}
	pol.Spec.Mode = Monitor
	if why, drops := pol.Drops(netip.MustParseAddr("192.0.2.200"), TCP, 22); drops {
		t.Errorf("a monitor-mode policy drops: %s", why)
	}
}
