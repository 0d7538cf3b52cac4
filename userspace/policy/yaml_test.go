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
	if s[1].Client.Packets != (Rate{PerSecond: 100, Burst: 200}) {
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
		want Rate
		err  string
	}{
		{"200/s", unitPackets, Rate{PerSecond: 200}, ""},
		{"200 / s", unitPackets, Rate{PerSecond: 200}, ""},
		{"6000/m", unitConns, Rate{PerSecond: 100}, ""},
		{"2MB/s", unitBytes, Rate{PerSecond: 2_000_000}, ""},
		{"2kB/s", unitBytes, Rate{PerSecond: 2000}, ""},
		{"1.5MiB/s", unitBytes, Rate{PerSecond: 1572864}, ""},
		{"60MB/m", unitBytes, Rate{PerSecond: 1_000_000}, ""},
		{"512B/s", unitBytes, Rate{PerSecond: 512}, ""},
		{"512/s", unitBytes, Rate{PerSecond: 512}, ""},
		{"1GiB/s", unitBytes, Rate{PerSecond: 1 << 30}, ""},
		{"100mbps/s", unitBytes, Rate{}, "in bits"},
		{"-5/s", unitPackets, Rate{}, "does not start with a number"},
		{"1e3/s", unitPackets, Rate{}, "counted without a unit"},
		{"99999999999999999999/s", unitPackets, Rate{}, "too large"},
		{"/s", unitPackets, Rate{}, "does not start with a number"},
		{"1./s", unitPackets, Rate{}, "does not start with a number"},
		// below 1/s: a whole number per minute, kept exactly
		{"30/m", unitPackets, Rate{PerMinute: 30}, ""},
		{"1/m", unitConns, Rate{PerMinute: 1}, ""},
		{"0.5/s", unitConns, Rate{PerMinute: 30}, ""},
		{"90/m", unitPackets, Rate{PerMinute: 90}, ""},
		{"0.01/s", unitPackets, Rate{}, "below 1 packet per minute"},
		{"0.5/m", unitConns, Rate{}, "below 1 connection per minute"},
		{"0.123/s", unitPackets, Rate{}, "7.38 packets per minute; the datapath counts whole packets per minute"},
		{"30B/m", unitBytes, Rate{}, "below 1 B per second"},
		{"90B/m", unitBytes, Rate{PerMinute: 90}, ""},
		{"18446744073709551615/m", unitPackets, Rate{PerMinute: 18446744073709551615}, ""},
	} {
		got, err := parseRate(tc.in, tc.k)
		if err == nil && got.PerMinute != 0 {
			// the default burst is a second's worth rounded up, with no wrap
			if b := defaultBurst(got, tc.k); b < got.PerMinute/60 || b == 0 {
				t.Errorf("parseRate(%q): default burst %d", tc.in, b)
			}
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseRate(%q) = %+v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseRate(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}
