package policy

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// write100kDeny writes a policy naming a 100,000-line deny file: IPv4 /32s
// and /24s and IPv6 /64s, with comments and blank lines like a real feed.
func write100kDeny(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	f, err := os.Create(filepath.Join(dir, "deny.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "# generated blocklist")
	for i := range 100_000 {
		switch i % 10 {
		case 0:
			fmt.Fprintf(w, "2001:db8:%x:%x::/64 # v6\n", i>>16, i&0xffff)
		case 1:
			fmt.Fprintf(w, "%d.%d.%d.0/24\n", 11+i>>16, byte(i>>8), byte(i))
		default:
			fmt.Fprintf(w, "%d.%d.%d.%d\n", 100+i>>16, byte(i>>8), byte(i), 1+i%200)
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	policy := doc(
		"  allow: [10.0.0.0/8, \"2001:db8:ffff::/48\"]",
		"  denyFiles: [deny.txt]",
		"  services: [{name: https, ports: [443], limits: {client: {packets: 100/s}}}]",
	)
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(policy), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// BenchmarkLoad100kDeny is LoadFile of a policy with a 100,000-line deny file:
// read, parse every line, sort and sweep for dead and redundant entries.
func BenchmarkLoad100kDeny(b *testing.B) {
	path := write100kDeny(b)
	b.ReportAllocs()
	for b.Loop() {
		p, err := LoadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		if len(p.Spec.Deny) != 100_000 {
			b.Fatalf("%d deny entries", len(p.Spec.Deny))
		}
	}
}

// BenchmarkCompile100kDeny is the step after loading: building loader values.
func BenchmarkCompile100kDeny(b *testing.B) {
	p, err := LoadFile(write100kDeny(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Compile(nil); err != nil {
			b.Fatal(err)
		}
	}
}

func TestLoad100kDeny(t *testing.T) {
	p, err := LoadFile(write100kDeny(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.Deny) != 100_000 || len(p.Warnings) != 0 {
		t.Errorf("%d deny entries, warnings %v", len(p.Spec.Deny), p.Warnings)
	}
}
