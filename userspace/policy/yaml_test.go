package policy

import (
	"strings"
	"testing"
)

func TestAnchorsAndMergeKeys(t *testing.T) {
	src := doc(
		"  services:",
		"    - name: a",
		"      ports: [80]",
		"      limits: &std",
		"        client:",
		"          packets: {rate: 100/s, burst: 200}",
		"    - name: b",
		"      ports: [81]",
		"      limits: *std",
		"    - &base",
		"      name: c",
		"      ports: [82]",
		"      mode: monitor",
		"    - <<: *base",
		"      name: d",
		"      ports: [83]",
	)
	p := mustParse(t, src, nil)
	s := p.Spec.Services
	if len(s) != 4 {
		t.Fatalf("services %+v", s)
	}
	if s[1].Client.Packets != (Rate{100, 200}) {
		t.Errorf("alias: %+v", s[1].Client)
	}
	if s[3].Name != "d" || s[3].Mode != Monitor || len(s[3].Ports) != 1 || s[3].Ports[0].First != 83 {
		t.Errorf("merge: %+v", s[3])
	}
}

func TestMergeKeyStillChecksKeys(t *testing.T) {
	src := doc(
		"  services:",
		"    - &base {name: c, ports: [82], mdoe: monitor}",
		"    - <<: *base",
		"      name: d",
		"      ports: [83]",
	)
	_, err := Parse("p.yaml", []byte(src), nil)
	if err == nil || !strings.Contains(err.Error(), `p.yaml:7: spec.services[0].mdoe: unknown field "mdoe" (did you mean "mode"?)`) {
		t.Errorf("got %v", err)
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"packets", "bytes", "connections"}
	for in, want := range map[string]string{
		"packet":     "packets",
		"Bytes":      "bytes",
		"conections": "connections",
		"pkts":       "",
		"x":          "",
	} {
		if got := suggest(in, known); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNoReadFile(t *testing.T) {
	_, err := Parse("p.yaml", []byte(doc("  denyFiles: [x.txt]")), nil)
	if err == nil || !strings.Contains(err.Error(), "p.yaml:6: spec.denyFiles[0]: cannot read list file x.txt") {
		t.Errorf("got %v", err)
	}
}

func TestUnitParsing(t *testing.T) {
	for _, tc := range []struct {
		in   string
		k    unitKind
		want uint64
		err  string
	}{
		{"200/s", unitPackets, 200, ""},
		{"200 / s", unitPackets, 200, ""},
		{"6000/m", unitConns, 100, ""},
		{"2MB/s", unitBytes, 2_000_000, ""},
		{"2kB/s", unitBytes, 2000, ""},
		{"1.5MiB/s", unitBytes, 1572864, ""},
		{"60MB/m", unitBytes, 1_000_000, ""},
		{"512B/s", unitBytes, 512, ""},
		{"512/s", unitBytes, 512, ""},
		{"1GiB/s", unitBytes, 1 << 30, ""},
		{"100mbps/s", unitBytes, 0, "in bits"},
		{"-5/s", unitPackets, 0, "does not start with a number"},
		{"1e3/s", unitPackets, 0, "counted without a unit"},
		{"99999999999999999999/s", unitPackets, 0, "too large"},
		{"/s", unitPackets, 0, "does not start with a number"},
		{"1./s", unitPackets, 0, "does not start with a number"},
	} {
		got, err := parseRate(tc.in, tc.k)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseRate(%q) = %d, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}
