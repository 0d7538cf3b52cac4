package policy

import (
	"errors"
	"slices"
	"testing"

	"github.com/apiguard/apiguard/loader"
)

// FuzzParse feeds arbitrary bytes to Parse. Whatever comes in, Parse must not
// panic, must either refuse with complete errors or return a policy that
// compiles to values the datapath accepts, and must be deterministic.
// The seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(doc("  deny: [192.0.2.0/24]", "  denyFiles: [list.txt]")))
	f.Add([]byte(doc("  connections: {establishedTimeout: 1m, whenTableFull: drop}", "  services:", "    - name: a",
		"      ports: [443]", "      allowFrom: [10.0.0.0/8]", "      allowFromFiles: [list.txt]",
		"      maxConnections: {client: {established: 5, halfOpen: 2}, total: {established: 50}}")))
	lists := files(map[string]string{"list.txt": "198.51.100.0/24\n# comment\n2001:db8::/32 ; x\n\n10.0.0.1\n"})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("f.yaml", data, lists)
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error is not a non-empty Errors: %T %v", err, err)
			}
			for _, e := range errs {
				if e.File == "" || e.Line < 1 || e.Field == "" || e.Msg == "" {
					t.Fatalf("incomplete error %#v", e)
				}
			}
			return
		}
		lp, err := p.Compile(nil)
		if err != nil {
			t.Fatalf("valid policy does not compile: %v", err)
		}
		checkLoaderPolicy(t, lp)
		if d := Diff(p, p); len(d) != 0 {
			t.Fatalf("diff with itself: %q", d)
		}
		q, err := Parse("f.yaml", data, lists)
		if err != nil {
			t.Fatalf("second parse failed: %v", err)
		}
		if d := Diff(p, q); len(d) != 0 {
			t.Fatalf("two parses differ: %q", d)
		}
		lq, err := q.Compile(lp)
		if err != nil {
			t.Fatal(err)
		}
		for i := range lq.Services {
			if lq.Services[i].ID != lp.Services[i].ID {
				t.Fatalf("recompiling against itself moved %s from %d to %d", lq.Services[i].Name, lp.Services[i].ID, lq.Services[i].ID)
			}
		}
	})
}

// checkLoaderPolicy checks what loader.compile and the kernel rely on.
func checkLoaderPolicy(t *testing.T, lp *loader.Policy) {
	t.Helper()
	if lp.ClientBits4 < 1 || lp.ClientBits4 > 32 || lp.PrefixBits4 < 1 || lp.PrefixBits4 > lp.ClientBits4 ||
		lp.ClientBits6 < 1 || lp.ClientBits6 > 128 || lp.PrefixBits6 < 1 || lp.PrefixBits6 > lp.ClientBits6 {
		t.Fatalf("key lengths %+v", lp)
	}
	for _, p := range slices.Concat(lp.Allow, lp.Deny) {
		if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("bad prefix %v", p)
		}
	}
	ids := map[uint32]bool{}
	taken := map[[2]uint32]string{}
	for _, s := range lp.Services {
		if s.ID < 1 || s.ID > uint32(MaxServices) || ids[s.ID] {
			t.Fatalf("service %s: id %d", s.Name, s.ID)
		}
		ids[s.ID] = true
		if s.Proto != loader.ProtoTCP && s.Proto != loader.ProtoUDP {
			t.Fatalf("service %s: proto %d", s.Name, s.Proto)
		}
		if len(s.Ports) == 0 {
			t.Fatalf("service %s: no ports", s.Name)
		}
		for _, r := range s.Ports {
			if r.First == 0 || r.First > r.Last {
				t.Fatalf("service %s: range %+v", s.Name, r)
			}
			for port := uint32(r.First); port <= uint32(r.Last); port++ {
				key := [2]uint32{uint32(s.Proto), port}
				if other, dup := taken[key]; dup {
					t.Fatalf("port %d/%d in %s and %s", port, s.Proto, other, s.Name)
				}
				taken[key] = s.Name
			}
		}
		for _, l := range []loader.Limits{s.Client, s.Prefix, s.Total} {
			for i, r := range []loader.Rate{l.Packets, l.Bytes, l.Conns} {
				if r.PerSecond == 0 {
					if r.Burst != 0 {
						t.Fatalf("service %s: burst without rate %+v", s.Name, r)
					}
					continue
				}
				minBurst := uint64(1)
				if i == 1 {
					minBurst = MinBytesBurst
				}
				if r.Burst < minBurst {
					t.Fatalf("service %s: burst %d below %d", s.Name, r.Burst, minBurst)
				}
			}
			if s.Proto == loader.ProtoUDP && l.Conns != (loader.Rate{}) {
				t.Fatalf("service %s: connection limit on udp", s.Name)
			}
		}
		for _, p := range s.ACL {
			if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				t.Fatalf("service %s: bad ACL prefix %v", s.Name, p)
			}
		}
		if s.MaxConns.Capped() && s.Proto != loader.ProtoTCP {
			t.Fatalf("service %s: connection caps on udp", s.Name)
		}
		for _, c := range []uint32{s.MaxConns.ClientEstablished, s.MaxConns.ClientHalfOpen, s.MaxConns.TotalEstablished, s.MaxConns.TotalHalfOpen} {
			if c > MaxConnCap {
				t.Fatalf("service %s: cap %d", s.Name, c)
			}
		}
	}
}
