package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/testenv"
)

// TestDefaultRouteThroughNexthopObjects: a default route through a nexthop
// group ("ip route add default nhid 20"), dumped without its nexthops
// (net.ipv4.nexthop_compat_mode=0, as routing daemons that manage nexthop
// objects set it), still names its interfaces for --iface auto and its
// gateways for the never-ban set and the lockout check. They used to be
// missed: --iface auto said the host had no default route, and the gateways
// went unprotected.
func TestDefaultRouteThroughNexthopObjects(t *testing.T) {
	testenv.RequireRoot(t)
	ns, err := netns.New("agnh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	peer, err := netns.New("agnq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	here, there, err := netns.Veth(ns, peer, 94)
	if err != nil {
		t.Fatal(err)
	}
	here2, there2, err := netns.Veth(ns, peer, 95)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"nexthop", "add", "id", "10", "via", there.Addr4.String(), "dev", here.Name},
		{"nexthop", "add", "id", "11", "via", there2.Addr4.String(), "dev", here2.Name},
		{"nexthop", "add", "id", "20", "group", "10/11"},
		{"route", "add", "default", "nhid", "20"},
		{"-6", "nexthop", "add", "id", "30", "dev", here2.Name}, // a v6 default with no gateway
		{"-6", "route", "add", "default", "nhid", "30"},
	} {
		if err := ns.IP(args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := ns.Sysctl("net.ipv4.nexthop_compat_mode", "0"); err != nil {
		t.Fatal(err)
	}
	var names []string
	var gws []neverBanEntry
	if err := ns.Do(func() error {
		var err error
		if names, err = defaultRouteIfaces(); err != nil {
			return err
		}
		gws, err = defaultGateways()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{here.Name, here2.Name}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("--iface auto: %v, want %v", names, want)
	}
	var got []netip.Prefix
	for _, g := range gws {
		got = append(got, g.prefix)
	}
	for _, a := range []netip.Addr{there.Addr4, there2.Addr4} {
		if !slices.Contains(got, netip.PrefixFrom(a, 32)) {
			t.Errorf("default gateways %v: %v missing", got, a)
		}
	}
}
