package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestWarnings(t *testing.T) {
	src := doc(
		"  allow: [10.0.0.0/8, 10.1.0.0/16]",
		"  deny: [192.0.2.0/24, 192.0.2.128/25, 192.0.2.0/24]",
		"  denyFiles: [d.txt]",
	)
	p := mustParse(t, src, map[string]string{"d.txt": "198.51.100.0/24\n198.51.100.0/24\n"})
	want := []string{
		"p.yaml:6: spec.allow[1]: allow 10.1.0.0/16 is redundant: allow 10.0.0.0/8 (spec.allow[0], line 6) contains it",
		"p.yaml:7: spec.deny[1]: deny 192.0.2.128/25 is redundant: deny 192.0.2.0/24 (spec.deny[0], line 7) contains it",
		"p.yaml:7: spec.deny[2]: deny 192.0.2.0/24 is listed twice (also spec.deny[0], line 7)",
		"d.txt:2: spec.denyFiles[0]: deny 198.51.100.0/24 is listed twice (also d.txt:1)",
	}
	text := p.Warnings.Error()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("missing warning %q in:\n%s", w, text)
		}
	}
	if len(p.Warnings) != len(want) {
		t.Errorf("%d warnings, want %d:\n%s", len(p.Warnings), len(want), text)
	}
}

func TestWarningsAreBounded(t *testing.T) {
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "10.0.%d.0/24\n10.0.%d.0/24\n", i, i)
	}
	p := mustParse(t, doc("  denyFiles: [d.txt]"), map[string]string{"d.txt": b.String()})
	if len(p.Warnings) != maxWarnings+1 || !strings.Contains(p.Warnings.Error(), "90 more duplicate entries not shown") {
		t.Errorf("%d warnings:\n%s", len(p.Warnings), p.Warnings)
	}
}

func TestAllowInsideDenyIsAnException(t *testing.T) {
	// deny a network but let one host of it through: allow is checked first
	p := mustParse(t, doc("  deny: [10.0.0.0/8, \"2001:db8::/32\"]", "  allow: [10.1.2.3, \"2001:db8::1\"]"), nil)
	if len(p.Warnings) != 0 || len(p.Spec.Deny) != 2 || len(p.Spec.Allow) != 2 {
		t.Errorf("spec %+v warnings %v", p.Spec, p.Warnings)
	}
}

func TestDeadDenyAmongManyEntries(t *testing.T) {
	// nested and neighbouring entries on both sides of the dead one
	var deny strings.Builder
	for i := range 256 {
		fmt.Fprintf(&deny, "10.%d.0.0/16\n", i)
	}
	deny.WriteString("172.16.5.0/24\n")
	src := doc("  allow: [10.20.0.0/16, 10.30.40.0/24, 172.16.0.0/12]", "  denyFiles: [d.txt]")
	_, err := Parse("p.yaml", []byte(src), files(map[string]string{"d.txt": deny.String()}))
	if err == nil {
		t.Fatal("accepted dead entries")
	}
	text := err.Error()
	for _, w := range []string{
		"d.txt:21: spec.denyFiles[0]: deny 10.20.0.0/16 can never match: allow 10.20.0.0/16",
		"d.txt:257: spec.denyFiles[0]: deny 172.16.5.0/24 can never match: allow 172.16.0.0/12",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("missing %q in:\n%s", w, text)
		}
	}
	// 10.30.0.0/16 contains the allow 10.30.40.0/24: an exception, not an error
	if n := strings.Count(text, "\n") + 1; n != 2 {
		t.Errorf("%d errors:\n%s", n, text)
	}
}

func TestListCapacity(t *testing.T) {
	var b strings.Builder
	for i := range ListCapacity + 1 {
		fmt.Fprintf(&b, "%d.%d.%d.%d\n", 1+i>>24, byte(i>>16), byte(i>>8), byte(i))
	}
	_, err := Parse("p.yaml", []byte(doc("  denyFiles: [big.txt]")), files(map[string]string{"big.txt": b.String()}))
	if err == nil || !strings.Contains(err.Error(), "spec.deny: 262145 distinct IPv4 entries; the datapath holds at most 262144") {
		t.Errorf("got %v", err)
	}
}

func TestParseCIDR(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"192.0.2.1", "192.0.2.1/32", ""},
		{"2001:db8::1", "2001:db8::1/128", ""},
		{"0.0.0.0/0", "0.0.0.0/0", ""},
		{"::/0", "::/0", ""},
		{"192.0.2.0/24", "192.0.2.0/24", ""},
		{"192.0.2.1/24", "", "did you mean 192.0.2.0/24?"},
		{"2001:db8::1/32", "", "did you mean 2001:db8::/32?"},
		{"192.0.2.0/", "", "not a valid CIDR"},
		{"010.0.0.1", "", "not a valid address"},
		{"::ffff:10.0.0.0/104", "", "write the IPv4 form 10.0.0.0/8"},
	} {
		got, err := parseCIDR(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseCIDR(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("parseCIDR(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestListFileByteOrderMark(t *testing.T) {
	p := mustParse(t, doc("  denyFiles: [d.txt]"), map[string]string{"d.txt": "\ufeff192.0.2.0/24\r\n198.51.100.0/24"})
	if want := prefixes("192.0.2.0/24", "198.51.100.0/24"); !slices.Equal(p.Spec.Deny, want) {
		t.Errorf("deny %v", p.Spec.Deny)
	}
}
