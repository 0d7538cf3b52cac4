package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/safefile"
	"golang.org/x/sys/unix"
)

// portList is "[1, 2, ..., n]" in flow style.
func portList(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, i)
	}
	b.WriteByte(']')
	return b.String()
}

const bombHead = "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: bomb}\nspec:\n  services:\n"

// serviceBomb is the policy of issue 14: services that all use one aliased
// list of ports. Every service claims every port again, so the checks that
// follow the parse would report ports × (services-1) overlaps.
func serviceBomb(services, ports int) []byte {
	var b strings.Builder
	b.WriteString(bombHead)
	fmt.Fprintf(&b, "    - {name: s0, ports: &p %s}\n", portList(ports))
	for i := 1; i < services; i++ {
		fmt.Fprintf(&b, "    - {name: s%d, ports: *p}\n", i)
	}
	return []byte(b.String())
}

// honestPolicy is as long as serviceBomb(services, ports) with no alias: the
// same port list written once, in one service. It is the baseline: what a
// policy of that size costs to refuse when nothing in it multiplies.
func honestPolicy(ports int) []byte {
	return []byte(bombHead + fmt.Sprintf("    - {name: s0, ports: %s}\n", portList(ports)))
}

// nestedBomb is aliases of aliases ("billion laughs"): each level lists the
// one before ten times, so a few lines stand for 10^levels values.
func nestedBomb(levels int) []byte {
	var b strings.Builder
	b.WriteString(bombHead)
	b.WriteString("    - name: s0\n      ports: [1]\n      limits: {client: {packets: &l0 [1,1,1,1,1,1,1,1,1,1]}}\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "    - name: s%d\n      ports: [%d]\n      limits: {client: {packets: &l%d [", i, i+1, i)
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "*l%d", i-1)
		}
		b.WriteString("]}}\n")
	}
	return []byte(b.String())
}

// allocated is what parsing data allocates: bytes and objects.
func allocated(data []byte) (bytes, objects uint64, err error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = Parse("bomb.yaml", data, nil)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, after.Mallocs - before.Mallocs, err
}

// TestAliasBombsAreRefusedCheaply: a policy whose aliases stand for more
// values than MaxPolicyNodes is refused before any value is checked, at the
// cost of decoding its text. The measure is memory, not time: refusing the
// bomb may allocate at most twice what accepting an honest policy of its
// size does.
func TestAliasBombsAreRefusedCheaply(t *testing.T) {
	honest := honestPolicy(10_000)
	hb, ho, err := allocated(honest)
	if err != nil {
		t.Fatalf("the honest baseline is refused: %v", err)
	}
	t.Logf("honest %d KB policy: %d KB allocated, %d objects", len(honest)/1000, hb/1000, ho)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		// 100 services x 10,000 ports: 41 KB, 3 s and 544 MB before the limit
		{"100 services x 10k aliased ports", serviceBomb(100, 10_000), "yaml: the policy expands to more than 100000 values, with alias *p (line 15)"},
		// 10^12 values in 1 KB
		{"nested aliases", nestedBomb(12), "yaml: the policy expands to more than 100000 values, with alias *l"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, o, err := allocated(tc.data)
			var es Errors
			if !errors.As(err, &es) || len(es) != 1 || !strings.Contains(es[0].Error(), tc.want) {
				t.Fatalf("err = %v, want one problem saying %q", err, tc.want)
			}
			t.Logf("%d KB policy: %d KB allocated, %d objects", len(tc.data)/1000, b/1000, o)
			if limit := 2 * max(hb, uint64(len(tc.data))*100); b > limit {
				t.Errorf("refusing it allocated %d KB, over %d KB (twice the honest policy's %d KB)", b/1000, limit/1000, hb/1000)
			}
		})
	}
	// under the limit the same shape is parsed: its 81,000 overlapping ports
	// are reported, the first maxErrors of them
	_, err = Parse("under.yaml", serviceBomb(10, 9_000), nil)
	var es Errors
	if !errors.As(err, &es) || len(es) != maxErrors+1 || !strings.Contains(es[0].Msg, "already belongs to service") ||
		es[maxErrors].Msg != "80800 more problems not shown" {
		t.Errorf("under the limit: %d problems, first %v, last %v", len(es), es[0], es[len(es)-1])
	}
	if _, err := Parse("ok.yaml", []byte(bombHead+"    - {name: a, ports: &p [80, 443]}\n    - {name: b, protocol: udp, ports: *p}\n"), nil); err != nil {
		t.Errorf("a small alias is refused: %v", err)
	}
}

// BenchmarkAliasBomb reports what refusing the issue-14 bomb costs against
// an honest policy of the same size (the baseline, which is valid and
// checked in full), measured in the same run.
func BenchmarkAliasBomb(b *testing.B) {
	for _, bc := range []struct {
		name string
		data []byte
	}{{"honest", honestPolicy(10_000)}, {"bomb", serviceBomb(100, 10_000)}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				if _, err := Parse("p.yaml", bc.data, nil); (err == nil) != (bc.name == "honest") {
					b.Fatalf("%s: %v", bc.name, err)
				}
			}
		})
	}
}

func TestPolicyAndListFilesAreBounded(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	head := "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: t}\nspec:\n"
	fifo := filepath.Join(dir, "fifo.txt")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, lists string
		want        []string
	}{
		// a FIFO with no writer must not hang a reload; /dev/zero must not fill memory
		{"fifo", "  denyFiles: [fifo.txt]", []string{"p.yaml:5: spec.denyFiles[0]: read list file: " + fifo + " is a FIFO: not a regular file"}},
		{"dev zero", "  denyFiles: [/dev/zero]", []string{"read list file: /dev/zero is a character device: not a regular file"}},
		{"environ", "  allowFiles: [/proc/self/environ]", []string{"read list file: /proc/self/environ is on procfs: a kernel pseudo file"}},
		{"allowFrom fifo", "  services:\n    - {name: a, ports: [80], allowFromFiles: [fifo.txt]}", []string{"spec.services[0].allowFromFiles[0]: read list file: " + fifo + " is a FIFO"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write("p.yaml", head+tc.lists+"\n")
			done := make(chan error, 1)
			go func() { _, err := LoadFile(path); done <- err }()
			err := <-done
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want %q", err, w)
				}
			}
		})
	}

	// the policy file itself
	if _, err := LoadFile(fifo); !errors.Is(err, safefile.ErrNotRegular) {
		t.Errorf("a FIFO as the policy: %v", err)
	}
	big := write("big.yaml", head+"  deny:\n"+strings.Repeat("    - 192.0.2.1\n", MaxPolicyBytes/16+1))
	if _, err := LoadFile(big); !errors.Is(err, safefile.ErrTooLarge) {
		t.Errorf("a policy over MaxPolicyBytes: %v", err)
	}
	// an upload has no file: Parse checks the size itself
	_, err := Parse("up.yaml", make([]byte, MaxPolicyBytes+1), nil)
	if err == nil || !strings.Contains(err.Error(), "up.yaml:1: document: the file holds 1.0 MiB; a policy holds at most 1 MiB") {
		t.Errorf("an upload over MaxPolicyBytes: %v", err)
	}
}

// TestListFilesTogetherAreBounded: naming one big file many times, or many
// files, stops at MaxListBytes, and lines past what the datapath could hold
// are not kept.
func TestListFilesTogetherAreBounded(t *testing.T) {
	half := strings.Repeat("\n", MaxListBytes/2+1)
	read := func(string) ([]byte, error) { return []byte(half), nil }
	src := "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: t}\nspec:\n  denyFiles: [a, b, c, d]\n"
	_, err := Parse("p.yaml", []byte(src), read)
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("err = %v", err)
	}
	want := []string{
		"p.yaml:5: spec.denyFiles[1]: the list files of a policy hold at most 64 MiB together; with b this one passes that",
		"p.yaml:5: spec.denyFiles[2]: not read: the list files before it already hold more than 64 MiB",
		"p.yaml:5: spec.denyFiles[3]: not read",
	}
	got := es.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}

	// one file of more lines than every table holds together: reading stops
	lines := strings.Repeat("192.0.2.1\n", maxListEntries+10)
	before := func() uint64 { var m runtime.MemStats; runtime.GC(); runtime.ReadMemStats(&m); return m.TotalAlloc }
	b0 := before()
	_, err = Parse("p.yaml", []byte("apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: t}\nspec:\n  denyFiles: [a]\n"),
		func(string) ([]byte, error) { return []byte(lines), nil })
	alloc := before() - b0
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("a:%d: spec.denyFiles[0]: the list files hold more than %d lines", maxListEntries+1, maxListEntries)) {
		t.Errorf("err = %v", err)
	}
	t.Logf("a %d MB list of %d lines: %d MB allocated", len(lines)>>20, maxListEntries+10, alloc>>20)
}

// TestListFileErrorsQuoteNoSecrets: a policy may name any file the daemon
// can read as a list; lines that are no address never reach the error.
func TestListFileErrorsQuoteNoSecrets(t *testing.T) {
	const secret = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	files := map[string]string{
		"env":    "PATH=/usr/bin\x00" + secret + "\x00HOME=/root",
		"shadow": "root:$y$j9T$abcdefgh$0123456789:19000:0:99999:7:::\n",
		"key":    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123\n",
		"netrc":  "machine api.example.com login bob password hunter2\n",
		"pass":   "deadbeef:cafe\n", // hex and a colon, but no address: parse error, quoted (short, address alphabet)
	}
	src := "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: t}\nspec:\n  denyFiles: [env, shadow, key, netrc]\n"
	_, err := Parse("p.yaml", []byte(src), func(p string) ([]byte, error) { return []byte(files[p]), nil })
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, leak := range []string{"wJalr", "AWS", "PATH", "root", "$y$", "0123456789abcdef", "hunter2", "bob", "example"} {
		if strings.Contains(msg, leak) {
			t.Errorf("the errors quote %q:\n%s", leak, msg)
		}
	}
	for _, w := range []string{
		"env:1: spec.denyFiles[0]: not an address or CIDR: a 87-byte entry with characters no address has (not quoted)",
		"shadow:1: spec.denyFiles[1]: not an address or CIDR",
		"key:1: spec.denyFiles[2]: not an address or CIDR: a 68-byte entry",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, msg)
		}
	}
}

// TestBanDurationsAreBounded: ttl and maxTTL become kernel expiries; past
// loader.MaxBanTTL the kernel's clock cannot hold them.
func TestBanDurationsAreBounded(t *testing.T) {
	src := func(bans string) []byte {
		return []byte("apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: t}\nspec:\n  bans: " + bans + "\n")
	}
	_, err := Parse("p.yaml", src("{ttl: 3650d, maxTTL: 3651d, forgetAfter: 20000d}"), nil)
	if err == nil || !strings.Contains(err.Error(), "p.yaml:5: spec.bans.maxTTL: 3651d is above 3650d, the longest ban with an expiry") ||
		strings.Contains(err.Error(), "forgetAfter") || strings.Contains(err.Error(), "spec.bans.ttl") {
		t.Errorf("err = %v", err)
	}
	_, err = Parse("p.yaml", src("{ttl: 2562047h47m16s}"), nil)
	if err == nil || !strings.Contains(err.Error(), "spec.bans.ttl: 2562047h47m16s is above 3650d") {
		t.Errorf("err = %v", err)
	}
	pol, err := Parse("p.yaml", src("{ttl: 1h, maxTTL: 3650d}"), nil)
	if err != nil || pol.Spec.Bans.MaxTTL != 3650*24*time.Hour {
		t.Errorf("ten years refused: %v", err)
	}
}

// TestErrorsQuoteShortExcerpts: a value quoted in an error is cut short, and
// no control character reaches the output (a newline would forge a line of
// "file:line: field: message").
func TestErrorsQuoteShortExcerpts(t *testing.T) {
	huge := strings.Repeat("A", 512<<10)
	var b strings.Builder
	b.WriteString(bombHead)
	fmt.Fprintf(&b, "    - {name: &n %q, ports: [1]}\n", huge)
	for i := 1; i < MaxServices; i++ {
		fmt.Fprintf(&b, "    - {name: *n, ports: [%d]}\n", i+1)
	}
	b.WriteString("  denyFiles: [\"evil\\nfake.yaml:1: spec: injected\"]\n")
	_, err := Parse("p.yaml", []byte(b.String()), func(string) ([]byte, error) { return []byte("x\n"), nil })
	var es Errors
	if !errors.As(err, &es) || len(es) < MaxServices {
		t.Fatalf("err = %v", err)
	}
	total := 0
	for _, e := range es {
		total += len(e.Error())
		if len(e.Msg) > maxMsg+len("…") {
			t.Errorf("a %d-byte message", len(e.Msg))
		}
	}
	if total > 100<<10 {
		t.Errorf("%d errors take %d KB for a %d KB policy", len(es), total>>10, b.Len()>>10)
	}
	out := es.Error()
	if n := strings.Count(out, "\n"); n != len(es)-1 || strings.Contains(out, "\nfake.yaml") {
		t.Errorf("%d problems print as %d lines:\n%s", len(es), n+1, out[:min(len(out), 2000)])
	}
}
