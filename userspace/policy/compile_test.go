package policy

import (
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
)

func services(names ...string) string {
	src := "  services:\n"
	for i, n := range names {
		src += "    - {name: " + n + ", ports: [" + itoa(1000+i) + "]}\n"
	}
	return src
}

func itoa(i int) string { return strconv.Itoa(i) }

func ids(lp *loader.Policy) map[string]uint32 {
	m := map[string]uint32{}
	for _, s := range lp.Services {
		m[s.Name] = s.ID
	}
	return m
}

func TestCompileIDsWithoutPrev(t *testing.T) {
	p := mustParse(t, head+services("zeta", "alpha", "mid"), nil)
	lp, err := p.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	// IDs follow sorted names; the services stay in file order
	want := map[string]uint32{"alpha": 1, "mid": 2, "zeta": 3}
	if got := ids(lp); !reflect.DeepEqual(got, want) {
		t.Errorf("ids %v, want %v", got, want)
	}
	var order []string
	for _, s := range lp.Services {
		order = append(order, s.Name)
	}
	if !slices.Equal(order, []string{"zeta", "alpha", "mid"}) {
		t.Errorf("order %v", order)
	}
	again, _ := p.Compile(nil)
	if !reflect.DeepEqual(lp, again) {
		t.Errorf("two compiles differ:\n%+v\n%+v", lp, again)
	}
}

func TestCompileIDsKeepPrev(t *testing.T) {
	prev := &loader.Policy{Services: []loader.Service{
		{ID: 5, Name: "https"},
		{ID: 1, Name: "old"},
		{ID: 2, Name: "api"},
	}}
	p := mustParse(t, head+services("https", "api", "new-b", "new-a"), nil)
	lp, err := p.Compile(prev)
	if err != nil {
		t.Fatal(err)
	}
	// kept names keep their IDs; new ones take the lowest IDs neither policy
	// uses, so "old"'s ID 1 is not handed to a new service with its stale state
	want := map[string]uint32{"https": 5, "api": 2, "new-a": 3, "new-b": 4}
	if got := ids(lp); !reflect.DeepEqual(got, want) {
		t.Errorf("ids %v, want %v", got, want)
	}
}

// An id a policy frees comes back one policy later: the kernel's state for
// it is the loader's to forget (loader.TestServiceIDReuseStartsAfresh).
func TestCompileIDsComeBack(t *testing.T) {
	first, err := mustParse(t, head+services("x"), nil).Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := mustParse(t, head+services("y"), nil).Compile(first)
	if err != nil {
		t.Fatal(err)
	}
	third, err := mustParse(t, head+services("z"), nil).Compile(second)
	if err != nil {
		t.Fatal(err)
	}
	if x, z := ids(first)["x"], ids(third)["z"]; x != z {
		t.Errorf("x had id %d, z got %d: the id did not come back (update the loader test's premise)", x, z)
	}
}

func TestCompileIDsReuseWhenFull(t *testing.T) {
	var prevSvcs []loader.Service
	var oldNames, newNames []string
	for i := 1; i <= MaxServices; i++ {
		prevSvcs = append(prevSvcs, loader.Service{ID: uint32(i), Name: "old" + itoa(i)})
		oldNames = append(oldNames, "old"+itoa(i))
		newNames = append(newNames, "new"+itoa(i))
	}
	// keep half, replace the other half: the new ones must reuse freed IDs
	names := append(slices.Clone(oldNames[:30]), newNames[:MaxServices-30]...)
	p := mustParse(t, head+services(names...), nil)
	lp, err := p.Compile(&loader.Policy{Services: prevSvcs})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	for _, s := range lp.Services {
		if s.ID < 1 || s.ID > uint32(MaxServices) || seen[s.ID] {
			t.Fatalf("bad or repeated id %d for %s", s.ID, s.Name)
		}
		seen[s.ID] = true
	}
	for i := 1; i <= 30; i++ {
		if got := ids(lp)["old"+itoa(i)]; got != uint32(i) {
			t.Errorf("old%d moved to %d", i, got)
		}
	}
}

func TestCompileValues(t *testing.T) {
	src := doc(
		"  mode: monitor",
		"  defaultAction: drop",
		"  tcpFlagSanity: false",
		"  clientKey: {ipv4: 31, ipv6: 60}",
		"  prefixKey: {ipv4: 16, ipv6: 32}",
		"  allow: [10.0.0.0/8]",
		"  deny: [\"2001:db8::/32\", 192.0.2.1]",
		"  synProxyAnswers: {rate: 300/m, burst: 20}",
		"  services:",
		"    - name: web",
		"      ports: [80, \"8000-8010\"]",
		"      limits:",
		"        client:",
		"          packets: {rate: 200/s, burst: 400}",
		"          bytes: {rate: 2MiB/s, burst: 3MB}",
		"          connections: 600/m",
		"        prefix: {bytes: 1KB/s}",
		"        total: {packets: 100000/s, connections: 50/s}",
		"      synProxy: auto",
		"    - name: dns",
		"      protocol: udp",
		"      ports: [53]",
		"      mode: monitor",
		"      fragments: {rate: 100/s, burst: 300}",
	)
	lp, err := mustParse(t, src, nil).Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &loader.Policy{
		Monitor: true, DefaultDrop: true, TCPFlagSanity: false,
		ClientBits4: 31, ClientBits6: 60, PrefixBits4: 16, PrefixBits6: 32,
		Allow: prefixes("10.0.0.0/8"),
		Deny:  prefixes("2001:db8::/32", "192.0.2.1/32"),
		Services: []loader.Service{
			{
				ID: 2, Name: "web", Proto: loader.ProtoTCP,
				Ports: []loader.PortRange{{First: 80, Last: 80}, {First: 8000, Last: 8010}},
				Client: loader.Limits{
					Packets: loader.Rate{PerSecond: 200, Burst: 400},
					Bytes:   loader.Rate{PerSecond: 2 << 20, Burst: 3_000_000},
					Conns:   loader.Rate{PerSecond: 10, Burst: 10},
				},
				Prefix: loader.Limits{Bytes: loader.Rate{PerSecond: 1000, Burst: MinBytesBurst}},
				Total: loader.Limits{Packets: loader.Rate{PerSecond: 100000, Burst: 100000},
					Conns: loader.Rate{PerSecond: 50, Burst: 50}},
				SynProxy: loader.SynProxyAuto,
			},
			{ID: 1, Name: "dns", Proto: loader.ProtoUDP, Monitor: true, Ports: []loader.PortRange{{First: 53, Last: 53}},
				Fragments: loader.Rate{PerSecond: 100, Burst: 300}},
		},
		Conns:           loader.ConnTracking{EstablishedTimeout: 5 * time.Minute, HalfOpenTimeout: 10 * time.Second, ClosedTimeout: 10 * time.Second},
		ProvenTTL:       loader.DefaultProvenTTL,
		ProveSources:    true, // the packet detectors are on by default
		SynProxyAnswers: loader.Rate{PerSecond: 5, Burst: 20},
	}
	if !reflect.DeepEqual(lp, want) {
		t.Errorf("compiled\n%+v\nwant\n%+v", lp, want)
	}
}

func TestCompileRefusesHandMadeNonsense(t *testing.T) {
	p := &Policy{Name: "x", Spec: Defaults()}
	p.Spec.Services = []Service{{Name: "a", Protocol: "sctp", Ports: []PortRange{{1, 1}}}}
	if _, err := p.Compile(nil); err == nil {
		t.Error("compiled an unknown protocol")
	}
	p.Spec.Services = []Service{{Name: "a", Protocol: TCP}, {Name: "a", Protocol: TCP}}
	if _, err := p.Compile(nil); err == nil {
		t.Error("compiled a duplicate service name")
	}
}
