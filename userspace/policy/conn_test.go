package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
)

func TestParseConnections(t *testing.T) {
	src := doc(
		"  connections:",
		"    establishedTimeout: 2m",
		"    halfOpenTimeout: 5s",
		"    closedTimeout: 30s",
		"    whenTableFull: drop",
		"    provenClientTTL: 30m",
		"  services:",
		"    - name: admin",
		"      ports: [8443]",
		"      allowFrom: [10.0.0.0/8, \"2001:db8:1::/48\", 192.0.2.7]",
		"      allowFromFiles: [admins.txt]",
		"      maxConnections:",
		"        client: {established: 20, halfOpen: 5}",
		"        total: {established: 1000}",
		"    - name: web",
		"      ports: [80]",
	)
	p := mustParse(t, src, map[string]string{"admins.txt": "\xef\xbb\xbf# admins\n198.51.100.0/24 ; office\n\n2001:db8:2::/48\r\n"})
	if len(p.Warnings) != 0 {
		t.Errorf("warnings: %v", p.Warnings)
	}
	want := Connections{EstablishedTimeout: 2 * time.Minute, HalfOpenTimeout: 5 * time.Second, ClosedTimeout: 30 * time.Second,
		WhenTableFull: Drop, ProvenClientTTL: 30 * time.Minute}
	if p.Spec.Connections != want {
		t.Errorf("connections %+v, want %+v", p.Spec.Connections, want)
	}
	admin := p.Spec.Services[0]
	wantACL := prefixes("10.0.0.0/8", "2001:db8:1::/48", "192.0.2.7/32", "198.51.100.0/24", "2001:db8:2::/48")
	if !slices.Equal(admin.AllowFrom, wantACL) || !slices.Equal(admin.AllowFromFiles, []string{"admins.txt"}) {
		t.Errorf("allowFrom %v files %v, want %v", admin.AllowFrom, admin.AllowFromFiles, wantACL)
	}
	if admin.MaxConnections != (ConnCaps{Client: ConnCap{20, 5}, Total: ConnCap{Established: 1000}}) {
		t.Errorf("maxConnections %+v", admin.MaxConnections)
	}
	if web := p.Spec.Services[1]; web.AllowFrom != nil || web.MaxConnections.Set() {
		t.Errorf("a service without them got %v %+v", web.AllowFrom, web.MaxConnections)
	}

	lp, err := p.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	wantConns := loader.ConnTracking{EstablishedTimeout: 2 * time.Minute, HalfOpenTimeout: 5 * time.Second, ClosedTimeout: 30 * time.Second, FailClosed: true}
	if lp.Conns != wantConns {
		t.Errorf("compiled connections %+v, want %+v", lp.Conns, wantConns)
	}
	for _, s := range lp.Services {
		switch s.Name {
		case "admin":
			if !slices.Equal(s.ACL, wantACL) || s.MaxConns != (loader.ConnLimits{ClientEstablished: 20, ClientHalfOpen: 5, TotalEstablished: 1000}) {
				t.Errorf("compiled admin: ACL %v caps %+v", s.ACL, s.MaxConns)
			}
		case "web":
			if s.ACL != nil || s.MaxConns.Capped() {
				t.Errorf("compiled web: ACL %v caps %+v", s.ACL, s.MaxConns)
			}
		}
	}
	// the defaults, when the policy says nothing
	d := mustParse(t, head+"  services: [{name: a, ports: [1]}]\n", nil)
	if d.Spec.Connections != defaultConnections() {
		t.Errorf("default connections %+v", d.Spec.Connections)
	}
}

func TestParseConnectionErrors(t *testing.T) {
	svc := func(lines ...string) string {
		return doc(append([]string{"  services:", "    - name: s", "      ports: [443]"}, lines...)...)
	}
	tests := []struct {
		name  string
		src   string
		lists map[string]string
		want  []string
	}{
		{"bad allowFrom entries", svc("      allowFrom: [10.0.0.1/8, nonsense, \"fe80::1%eth0\"]"), nil, []string{
			`p.yaml:9: spec.services[0].allowFrom[0]: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`,
			`p.yaml:9: spec.services[0].allowFrom[1]: "nonsense" is not a valid address or CIDR`,
			`p.yaml:9: spec.services[0].allowFrom[2]: "fe80::1%eth0": addresses with a zone cannot be matched`,
		}},
		{"an empty allowFrom", svc("      allowFrom: []"), nil, []string{
			"p.yaml:9: spec.services[0].allowFrom: no entry at all: the service would be open to every source",
		}},
		{"an empty list file", svc("      allowFromFiles: [empty.txt]"), map[string]string{"empty.txt": "# nobody yet\n"}, []string{
			"p.yaml:9: spec.services[0].allowFromFiles: no entry at all",
		}},
		{"list file problems", svc("      allowFromFiles: [acl.txt, missing.txt, acl.txt]"), map[string]string{"acl.txt": "10.0.0.0/8\n10.1.2.3/16\n"}, []string{
			"acl.txt:2: spec.services[0].allowFromFiles[0]: \"10.1.2.3/16\" has host bits set; did you mean 10.1.0.0/16?",
			"p.yaml:9: spec.services[0].allowFromFiles[1]: read list file: open missing.txt",
			"p.yaml:9: spec.services[0].allowFromFiles[2]: acl.txt is named twice (first at line 9)",
		}},
		{"caps on udp", doc("  services:", "    - name: dns", "      protocol: udp", "      ports: [53]", "      maxConnections: {client: {established: 5}}"), nil, []string{
			"p.yaml:10: spec.services[0].maxConnections: caps count TCP connections; a udp service has none",
		}},
		{"cap fields", svc("      maxConnections:", "        client: {establised: 5, halfOpen: 0}", "        total: {}", "        prefix: {established: 1}"), nil, []string{
			`p.yaml:10: spec.services[0].maxConnections.client.establised: unknown field "establised" (did you mean "established"?)`,
			"p.yaml:10: spec.services[0].maxConnections.client.halfOpen: 0 is outside 1–1073741824",
			"p.yaml:11: spec.services[0].maxConnections.total: empty: give established, halfOpen or both",
			`p.yaml:12: spec.services[0].maxConnections.prefix: unknown field "prefix"`,
		}},
		{"empty caps", svc("      maxConnections: {}"), nil, []string{
			"p.yaml:9: spec.services[0].maxConnections: empty: give client or total caps",
		}},
		{"connection settings", doc("  connections:", "    establishedTimeout: 5s", "    halfOpenTimeout: 1h", "    closedTimeout: soon",
			"    whenTableFull: open", "    idleTimeout: 1m", "    provenClientTTL: 2d"), nil, []string{
			"p.yaml:7: spec.connections.establishedTimeout: 5s is outside 10s–7d",
			"p.yaml:8: spec.connections.halfOpenTimeout: 1h is outside 1s–10m",
			`p.yaml:9: spec.connections.closedTimeout: "soon" is not a duration`,
			`p.yaml:10: spec.connections.whenTableFull: "open" is not one of pass, drop`,
			`p.yaml:11: spec.connections.idleTimeout: unknown field "idleTimeout"`,
			"p.yaml:12: spec.connections.provenClientTTL: 2d is above 24h (0s turns it off)",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(tc.src), files(tc.lists))
			if err == nil {
				t.Fatalf("parsed without error:\n%s", tc.src)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q; got:\n%v", w, err)
				}
			}
		})
	}
}

func TestConnectionWarnings(t *testing.T) {
	src := doc(
		"  services:",
		"    - name: s",
		"      ports: [443]",
		"      allowFrom: [10.0.0.0/8, 10.1.0.0/16, 192.0.2.1]",
		"      allowFromFiles: [more.txt]",
		"      maxConnections:",
		"        client: {established: 10, halfOpen: 20}",
		"        total: {established: 5}",
	)
	p := mustParse(t, src, map[string]string{"more.txt": "192.0.2.1\n"})
	got := p.Warnings.Error()
	for _, w := range []string{
		"p.yaml:9: spec.services[0].allowFrom[1]: 10.1.0.0/16 is redundant: 10.0.0.0/8 (spec.services[0].allowFrom[0], line 9) contains it",
		"more.txt:1: spec.services[0].allowFromFiles[0]: 192.0.2.1/32 is listed twice (also spec.services[0].allowFrom[2], line 9)",
		"p.yaml:12: spec.services[0].maxConnections.client.halfOpen: 20 is above established 10",
		"p.yaml:12: spec.services[0].maxConnections.client.established: 10 per client is above the service total 5",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("warnings lack %q; got:\n%s", w, got)
		}
	}
}

func TestACLCapacity(t *testing.T) {
	var b strings.Builder
	for i := 0; i <= ACLCapacity; i++ {
		fmt.Fprintf(&b, "10.%d.%d.%d\n", i>>16, (i>>8)&0xff, i&0xff)
	}
	src := doc("  services:", "    - name: s", "      ports: [443]", "      allowFromFiles: [big.txt]")
	_, err := Parse("p.yaml", []byte(src), files(map[string]string{"big.txt": b.String()}))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d distinct allowFrom entries; the datapath holds at most %d", ACLCapacity+1, ACLCapacity)) {
		t.Fatalf("an ACL over capacity: %v", err)
	}
}

func TestDiffConnections(t *testing.T) {
	a := mustParse(t, doc("  services:", "    - name: s", "      ports: [443]", "      allowFrom: [10.0.0.0/8, 192.0.2.0/24]",
		"      maxConnections: {client: {established: 10}}"), nil)
	b := mustParse(t, doc("  connections: {whenTableFull: drop, establishedTimeout: 1h}", "  services:", "    - name: s", "      ports: [443]",
		"      allowFrom: [10.0.0.0/8, \"2001:db8::/32\"]", "      maxConnections: {client: {established: 20, halfOpen: 4}, total: {established: 100}}"), nil)
	got := Diff(a, b)
	for _, w := range []string{
		"- service s allowFrom 192.0.2.0/24",
		"+ service s allowFrom 2001:db8::/32",
		"~ service s maxConnections client: established 10 -> established 20, halfOpen 4",
		"~ service s maxConnections total: (none) -> established 100",
		"~ connections establishedTimeout: 5m -> 1h",
		"~ connections whenTableFull: pass -> drop",
	} {
		if !slices.Contains(got, w) {
			t.Errorf("diff lacks %q; got %q", w, got)
		}
	}
	if d := Diff(b, b); len(d) != 0 {
		t.Errorf("diff with itself: %q", d)
	}
}

// provenClientTTL defaults on; 0s turns it off.
func TestProvenClientTTL(t *testing.T) {
	if p := mustParse(t, doc("  services: []"), nil); p.Spec.Connections.ProvenClientTTL != loader.DefaultProvenTTL {
		t.Errorf("default %v, want %v", p.Spec.Connections.ProvenClientTTL, loader.DefaultProvenTTL)
	}
	p := mustParse(t, doc("  connections: {provenClientTTL: 0s}"), nil)
	if p.Spec.Connections.ProvenClientTTL != 0 {
		t.Errorf("0s parsed as %v", p.Spec.Connections.ProvenClientTTL)
	}
	lp, err := p.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	if lp.ProvenTTL != 0 {
		t.Errorf("compiled TTL %v, want 0", lp.ProvenTTL)
	}
}
