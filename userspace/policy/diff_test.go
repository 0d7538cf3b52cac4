package policy

import (
	"slices"
	"strings"
	"testing"
)

const diffBase = `  allow: [10.0.0.0/8, 172.16.0.0/12]
  deny: [192.0.2.0/24, 198.51.100.0/24]
  services:
    - name: https
      ports: [443]
      limits:
        client:
          packets: {rate: 100/s, burst: 200}
          bytes: 1MB/s
    - name: old
      ports: [9000]
`

func TestDiffSame(t *testing.T) {
	a := mustParse(t, head+diffBase, nil)
	b := mustParse(t, head+diffBase, nil)
	if d := Diff(a, b); len(d) != 0 {
		t.Errorf("same file, diff %q", d)
	}
	// order and duplicates of list entries do not change what is enforced
	shuffled := strings.Replace(diffBase, "[192.0.2.0/24, 198.51.100.0/24]", "[198.51.100.0/24, 192.0.2.0/24, 192.0.2.0/24]", 1)
	c := mustParse(t, head+shuffled, nil)
	if d := Diff(a, c); len(d) != 0 {
		t.Errorf("reordered list, diff %q", d)
	}
}

func TestDiffChanges(t *testing.T) {
	changed := `  mode: monitor
  defaultAction: drop
  prefixKey: {ipv4: 20}
  allow: [10.0.0.0/8]
  deny: [192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, "2001:db8::/32"]
  services:
    - name: https
      ports: [443, "8443-8444"]
      mode: monitor
      limits:
        client:
          packets: {rate: 200/s, burst: 200}
          connections: {rate: 10/s, burst: 30}
      fragments: 20/s
      synProxy: always
    - name: api
      protocol: udp
      ports: [8080]
  detection:
    scan: {ports: 50, action: flag}
  bans: {ttl: 20m}
`
	a := mustParse(t, head+diffBase, nil)
	b := mustParse(t, head+changed, nil)
	want := []string{
		"~ mode: enforce -> monitor",
		"~ defaultAction: pass -> drop",
		"~ prefixKey: ipv4 /24, ipv6 /48 -> ipv4 /20, ipv6 /48",
		"- allow 172.16.0.0/12",
		"+ deny 203.0.113.0/24",
		"+ deny 2001:db8::/32",
		"- service old (tcp 9000)",
		"~ service https ports: 443 -> 443,8443-8444",
		"~ service https mode: enforce -> monitor",
		"~ service https synProxy: off -> always",
		"~ service https: fragments unlimited -> 20/s",
		"~ service https: client packets 100/s burst 200 -> 200/s",
		"~ service https: client bytes 1MB/s -> unlimited",
		"~ service https: client connections unlimited -> 10/s burst 30",
		"+ service api (udp 8080)",
		"~ detection scan action: ban -> flag",
		"~ detection scan ports: 20 -> 50",
		"~ bans ttl: 10m -> 20m",
	}
	got := Diff(a, b)
	if !slices.Equal(got, want) {
		t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// and back: every + becomes a -
	back := Diff(b, a)
	if len(back) != len(want) {
		t.Errorf("reverse diff has %d lines, want %d:\n%s", len(back), len(want), strings.Join(back, "\n"))
	}
	if !slices.Contains(back, "- deny 203.0.113.0/24") || !slices.Contains(back, "+ service old (tcp 9000)") {
		t.Errorf("reverse diff:\n%s", strings.Join(back, "\n"))
	}
}

func TestDiffFromNothing(t *testing.T) {
	p := mustParse(t, head+"  deny: [192.0.2.0/24]\n  services: [{name: web, ports: [80], mode: monitor}]\n", nil)
	want := []string{"~ name: (none) -> t", "+ deny 192.0.2.0/24", "+ service web (tcp 80, monitor)"}
	if got := Diff(nil, p); !slices.Equal(got, want) {
		t.Errorf("Diff(nil, p) = %q, want %q", got, want)
	}
	if got := Diff(nil, nil); len(got) != 0 {
		t.Errorf("Diff(nil, nil) = %q", got)
	}
}

func TestFormatRate(t *testing.T) {
	for _, tc := range []struct {
		r    Rate
		k    unitKind
		want string
	}{
		{Rate{}, unitPackets, "unlimited"},
		{Rate{PerSecond: 100, Burst: 100}, unitPackets, "100/s"},
		{Rate{PerSecond: 100, Burst: 250}, unitConns, "100/s burst 250"},
		{Rate{PerSecond: 2 << 20, Burst: 2 << 20}, unitBytes, "2MiB/s"},
		{Rate{PerSecond: 1000, Burst: MinBytesBurst}, unitBytes, "1KB/s"},
		{Rate{PerSecond: 1234, Burst: 1_000_000}, unitBytes, "1234B/s burst 1MB"},
		{Rate{PerSecond: 3_000_000_000, Burst: 4 << 30}, unitBytes, "3GB/s burst 4GiB"},
	} {
		if got := formatRate(tc.r, tc.k); got != tc.want {
			t.Errorf("formatRate(%+v, %v) = %q, want %q", tc.r, tc.k, got, tc.want)
		}
	}
}

func TestLimitsString(t *testing.T) {
	l := Limits{Packets: Rate{PerSecond: 200, Burst: 400}, Bytes: Rate{PerSecond: 2_000_000, Burst: 2_000_000}, Connections: Rate{PerSecond: 20, Burst: 20}}
	if got, want := l.String(), "packets 200/s burst 400, bytes 2MB/s, connections 20/s"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := (Limits{}).String(); got != "none" {
		t.Errorf("empty limits: %q", got)
	}
}
