package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// head is the first five lines of every test policy; spec content starts at line 6.
const head = "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata:\n  name: t\nspec:\n"

// doc builds a policy whose spec lines are lines; lines[i] is line 6+i.
func doc(lines ...string) string {
	return head + strings.Join(lines, "\n") + "\n"
}

// files resolves list file names from a map, like a directory would.
func files(m map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		if s, ok := m[name]; ok {
			return []byte(s), nil
		}
		return nil, fmt.Errorf("open %s: %w", name, fs.ErrNotExist)
	}
}

func mustParse(t *testing.T, src string, lists map[string]string) *Policy {
	t.Helper()
	p, err := Parse("p.yaml", []byte(src), files(lists))
	if err != nil {
		t.Fatalf("Parse: %v\nsource:\n%s", err, src)
	}
	return p
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		lists map[string]string
		want  []string // each must appear in the error text
		count int      // how many errors, when it matters
	}{
		{
			name:  "empty file",
			src:   "",
			want:  []string{"p.yaml:1: yaml: the file holds no policy"},
			count: 1,
		},
		{
			name: "syntax error",
			src:  doc("  mode: [enforce", "  defaultAction: pass"),
			want: []string{"p.yaml:", ": yaml: "},
		},
		{
			name: "two documents",
			src:  doc("  mode: enforce") + "---\n" + doc("  mode: monitor"),
			want: []string{"p.yaml:7: yaml: a policy file holds one YAML document"},
		},
		{
			name: "not a mapping",
			src:  "- a\n- b\n",
			want: []string{"p.yaml:1: document: expected a mapping (key: value lines), found a list"},
		},
		{
			name: "header",
			src:  "apiVersion: apiguard.io/v2\nkind: Polcy\nmetadata:\n  nam: x\nspce: {}\n",
			want: []string{
				`p.yaml:1: apiVersion: "apiguard.io/v2" is not supported; it must be apiguard.io/v1`,
				`p.yaml:2: kind: "Polcy" is not supported; it must be Policy`,
				`p.yaml:4: metadata.nam: unknown field "nam" (did you mean "name"?)`,
				`p.yaml:4: metadata.name: missing; every policy has a name`,
				`p.yaml:5: spce: unknown field "spce" (did you mean "spec"?)`,
				`p.yaml:1: spec: missing`,
			},
			count: 6,
		},
		{
			name: "missing header",
			src:  "spec: {}\n",
			want: []string{"p.yaml:1: apiVersion: missing; it must be apiguard.io/v1", "p.yaml:1: kind: missing", "p.yaml:1: metadata: missing"},
		},
		{
			name: "bad policy name",
			src:  "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata:\n  name: \"has space\"\nspec: {}\n",
			want: []string{`p.yaml:4: metadata.name: "has space" is not a valid name`},
		},
		{
			name: "unknown and duplicate keys, bad enums and booleans",
			src: doc(
				"  mode: enforse",
				"  defualtAction: drop",
				"  defaultAction: block",
				"  tcpFlagSanity: yes",
				"  mode: monitor",
			),
			want: []string{
				`p.yaml:6: spec.mode: "enforse" is not one of enforce, monitor (did you mean "enforce"?)`,
				`p.yaml:7: spec.defualtAction: unknown field "defualtAction" (did you mean "defaultAction"?)`,
				`p.yaml:8: spec.defaultAction: "block" is not one of pass, drop`,
				`p.yaml:9: spec.tcpFlagSanity: expected true or false, found "yes"`,
				`p.yaml:10: spec.mode: set twice (first at line 6)`,
			},
			count: 5,
		},
		{
			name: "key lengths",
			src: doc(
				"  clientKey: {ipv4: 33, ipv6: 0}",
				"  prefixKey:",
				"    ipv4: 16",
				"    ipv6: 129",
				"    ipv5: 3",
			),
			want: []string{
				"p.yaml:6: spec.clientKey.ipv4: 33 is outside 1–32",
				"p.yaml:6: spec.clientKey.ipv6: 0 is outside 1–128",
				"p.yaml:9: spec.prefixKey.ipv6: 129 is outside 1–128",
				`p.yaml:10: spec.prefixKey.ipv5: unknown field "ipv5"`,
			},
			count: 4,
		},
		{
			name:  "prefix key longer than client key",
			src:   doc("  clientKey: {ipv4: 24, ipv6: 56}", "  prefixKey: {ipv4: 28, ipv6: 48}"),
			want:  []string{"p.yaml:7: spec.prefixKey.ipv4: /28 is longer than clientKey.ipv4 /24; a prefix must hold whole clients"},
			count: 1,
		},
		{
			name: "bad CIDRs",
			src: doc(
				"  allow:",
				"    - 10.0.0.1/8",
				"    - 10.0.0.0/33",
				"    - not-an-address",
				`    - "fe80::1%eth0"`,
				`    - "::ffff:192.0.2.1"`,
				"    - {a: b}",
				"  deny: 192.0.2.0/24",
			),
			want: []string{
				`p.yaml:7: spec.allow[0]: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`,
				`p.yaml:8: spec.allow[1]: "10.0.0.0/33" is not a valid CIDR`,
				`p.yaml:9: spec.allow[2]: "not-an-address" is not a valid address or CIDR`,
				`p.yaml:10: spec.allow[3]: "fe80::1%eth0": addresses with a zone cannot be matched`,
				`p.yaml:11: spec.allow[4]: "::ffff:192.0.2.1" is an IPv4-mapped IPv6 address, which IPv4 packets never carry; write the IPv4 form 192.0.2.1/32`,
				`p.yaml:12: spec.allow[5]: expected a CIDR such as 192.0.2.0/24, found a mapping`,
			},
			count: 6,
		},
		{
			name: "deny made dead by allow",
			src: doc(
				"  allow: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.7]",
				"  deny:",
				"    - 10.1.0.0/16",
				"    - 192.0.2.7/32",
				"    - 2001:db8:1::/48",
				"    - 10.0.0.0/7",
			),
			want: []string{
				"p.yaml:8: spec.deny[0]: deny 10.1.0.0/16 can never match: allow 10.0.0.0/8 (spec.allow[0], line 6) contains it, and allow is checked first",
				"p.yaml:9: spec.deny[1]: deny 192.0.2.7/32 can never match: allow 192.0.2.7/32 (spec.allow[2], line 6) contains it",
				"p.yaml:10: spec.deny[2]: deny 2001:db8:1::/48 can never match: allow 2001:db8::/32 (spec.allow[1], line 6)",
			},
			// 10.0.0.0/7 contains the allow, which is an exception to it: fine
			count: 3,
		},
		{
			name: "list files",
			src:  doc("  allow: [198.51.100.0/24]", "  denyFiles: [deny.txt, missing.txt, deny.txt]", "  allowFiles: [allow.txt]"),
			lists: map[string]string{
				"deny.txt":  "# header\n192.0.2.0/24\n\n10.0.0.1/8   # typo\n198.51.100.128/25 ; dead\n2001:db8::/129\n",
				"allow.txt": "junk\n",
			},
			want: []string{
				"p.yaml:7: spec.denyFiles[1]: read list file: open missing.txt: file does not exist",
				"p.yaml:7: spec.denyFiles[2]: deny.txt is named twice (first at line 7)",
				`allow.txt:1: spec.allowFiles[0]: not an address or CIDR: a 4-byte entry with characters no address has (not quoted)`,
				`deny.txt:4: spec.denyFiles[0]: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`,
				"deny.txt:5: spec.denyFiles[0]: deny 198.51.100.128/25 can never match: allow 198.51.100.0/24 (spec.allow[0], line 6) contains it",
				`deny.txt:6: spec.denyFiles[0]: "2001:db8::/129" is not a valid CIDR`,
			},
			count: 6,
		},
		{
			name: "services: ports",
			src: doc(
				"  services:",
				"    - name: a",
				"      ports: [0, 65536, \"9000-8000\", http, \"80-\", 443, \"440-450\"]",
				"    - name: b",
				"      ports: [\"8000-8100\"]",
				"    - name: c",
				"      ports: [\"8050-8200\", 443]",
				"    - name: d",
				"      protocol: udp",
				"      ports: [443, 8080]",
				"    - name: e",
				"      ports: []",
				"    - name: f",
			),
			want: []string{
				"p.yaml:8: spec.services[0].ports[0]: port 0 is outside 1–65535",
				"p.yaml:8: spec.services[0].ports[1]: port 65536 is outside 1–65535",
				`p.yaml:8: spec.services[0].ports[2]: range "9000-8000" is reversed; write 8000-9000`,
				`p.yaml:8: spec.services[0].ports[3]: "http" is not a port or a range like 8000-8100`,
				`p.yaml:8: spec.services[0].ports[4]: "80-" is not a port or a range like 8000-8100`,
				"p.yaml:8: spec.services[0].ports[5]: port 443/tcp is listed twice in this service (also spec.services[0].ports[6], line 8)",
				`p.yaml:12: spec.services[2].ports[0]: ports 8050-8100/tcp already belong to service "b" (spec.services[1].ports[0], line 10)`,
				`p.yaml:12: spec.services[2].ports[1]: port 443/tcp already belongs to service "a" (spec.services[0].ports[6], line 8)`,
				"p.yaml:17: spec.services[4].ports: empty; a service needs at least one port",
				"p.yaml:18: spec.services[5].ports: missing; a service needs at least one port",
			},
			// udp 443 and udp 8080 clash with nothing: ports are per protocol
			count: 10,
		},
		{
			name: "services: names and fields",
			src: doc(
				"  services:",
				"    - name: web",
				"      ports: [80]",
				"    - name: web",
				"      ports: [81]",
				"    - ports: [82]",
				"    - name: \"bad name\"",
				"      protocol: sctp",
				"      mode: enforced",
				"      port: [83]",
				"    - just-a-string",
			),
			want: []string{
				`p.yaml:9: spec.services[1].name: service "web" is defined twice (first at line 7)`,
				"p.yaml:11: spec.services[2].name: missing; every service has a name",
				`p.yaml:12: spec.services[3].name: "bad name" is not a valid name`,
				`p.yaml:13: spec.services[3].protocol: "sctp" is not one of tcp, udp`,
				`p.yaml:14: spec.services[3].mode: "enforced" is not one of enforce, monitor (did you mean "enforce"?)`,
				`p.yaml:15: spec.services[3].port: unknown field "port" (did you mean "ports"?)`,
				"p.yaml:12: spec.services[3].ports: missing",
				`p.yaml:16: spec.services[4]: expected a mapping (key: value lines), found "just-a-string"`,
			},
			count: 8,
		},
		{
			name:  "services: too many",
			src:   doc(append([]string{"  services:"}, manyServices(64)...)...),
			want:  []string{"p.yaml:7: spec.services: 64 services; the datapath holds at most 63"},
			count: 1,
		},
		{
			name: "limits: rates and bursts",
			src: doc(
				"  services:",
				"    - name: web",
				"      ports: [443]",
				"      limits:",
				"        client:",
				"          packets: {rate: 200/s, burst: 0}",
				"          bytes: {rate: 2MB/s, burst: 1000}",
				"          connections: {rate: 20, burts: 40}",
				"        prefix:",
				"          packets: 0.025/s",
				"          bytes: 2Mbit/s",
				"          connections: {burst: 5}",
				"        total:",
				"          packets: 0/s",
				"          bytes: {rate: 2XB/s}",
				"          connections: {rate: 5MB/s}",
				"        global:",
				"          packets: 1/h",
			),
			want: []string{
				"p.yaml:11: spec.services[0].limits.client.packets.burst: 0 is below 1: the bucket must hold at least one packet",
				"p.yaml:12: spec.services[0].limits.client.bytes.burst: 1000 is below 1514 bytes, one full Ethernet frame",
				`p.yaml:13: spec.services[0].limits.client.connections.burts: unknown field "burts" (did you mean "burst"?)`,
				`p.yaml:13: spec.services[0].limits.client.connections.rate: "20" has no period: write it like 20/s (per second) or with /m (per minute)`,
				`p.yaml:15: spec.services[0].limits.prefix.packets: "0.025/s" is 1.50 packets per minute; the datapath counts whole packets per minute`,
				`p.yaml:16: spec.services[0].limits.prefix.bytes: "2Mbit/s" is in bits; apiguard limits bytes (that is 250KB/s)`,
				"p.yaml:17: spec.services[0].limits.prefix.connections.rate: missing; a limit needs a rate",
				`p.yaml:19: spec.services[0].limits.total.packets: "0/s" is zero; leave the limit out for no limit`,
				`p.yaml:20: spec.services[0].limits.total.bytes.rate: "2XB/s": unknown unit "XB" (use B, KB, MB, GB, KiB, MiB or GiB)`,
				`p.yaml:21: spec.services[0].limits.total.connections.rate: "5MB/s": connections are counted without a unit`,
				`p.yaml:22: spec.services[0].limits.global: unknown field "global"`,
			},
			count: 11,
		},
		{
			name: "limits: small rates and periods",
			src: doc(
				"  services:",
				"    - name: web",
				"      ports: [443]",
				"      limits:",
				"        client:",
				"          packets: 0.5/m",
				"          connections: 1/h",
				"          bytes: {rate: 1.5KB/s, burst: 1.5}",
			),
			want: []string{
				`p.yaml:11: spec.services[0].limits.client.packets: "0.5/m" is below 1 packet per minute, the datapath's finest rate`,
				`p.yaml:12: spec.services[0].limits.client.connections: "1/h": unknown period "h" (use s or m)`,
				`p.yaml:13: spec.services[0].limits.client.bytes.burst: "1.5" is not a whole number of bytes`,
			},
			count: 3,
		},
		{
			name: "fragments",
			src: doc(
				"  services:",
				"    - name: a",
				"      ports: [443]",
				"      fragments: 0/s",
				"    - name: b",
				"      ports: [444]",
				"      fragments: {rate: 5KB/s, burst: 0}",
				"    - name: c",
				"      ports: [445]",
				"      fragments: {burst: 10}",
				"    - name: d",
				"      ports: [446]",
				"      fragments: [10/s]",
				"    - name: e",
				"      ports: [447]",
				"      fragments: {rate: 10/s, burst: 0}",
			),
			want: []string{
				`p.yaml:9: spec.services[0].fragments: "0/s" is zero; leave the limit out for no limit`,
				`p.yaml:12: spec.services[1].fragments.rate: "5KB/s": packets are counted without a unit`,
				`p.yaml:15: spec.services[2].fragments.rate: missing; a limit needs a rate`,
				`p.yaml:18: spec.services[3].fragments: expected a mapping (key: value lines), found a list`,
				`p.yaml:21: spec.services[4].fragments.burst: 0 is below 1: the bucket must hold at least one packet`,
			},
			count: 5,
		},
		{
			name: "synProxy",
			src: doc(
				"  services:",
				"    - name: dns",
				"      protocol: udp",
				"      ports: [53]",
				"      synProxy: always",
				"    - name: a",
				"      ports: [443]",
				"      synProxy: auto",
				"    - name: b",
				"      ports: [444]",
				"      synProxy: on",
				"    - name: c",
				"      ports: [445]",
				"      limits: {prefix: {connections: 10/s}}",
				"      synProxy: auto",
			),
			want: []string{
				`p.yaml:10: spec.services[0].synProxy: always needs a TCP service: the proxy answers TCP handshakes`,
				`p.yaml:13: spec.services[1].synProxy: auto turns the proxy on when the service's total connections limit runs out: set limits.total.connections, or use always`,
				`p.yaml:16: spec.services[2].synProxy: "on" is not one of off, auto, always`,
				`p.yaml:20: spec.services[3].synProxy: auto turns the proxy on when the service's total connections limit runs out: set limits.total.connections, or use always`,
			},
			count: 4,
		},
		{
			name: "synProxyAnswers",
			src: doc(
				"  synProxyAnswers: 0/s",
			),
			want: []string{
				`p.yaml:6: spec.synProxyAnswers: "0/s" is zero: the bound on SYN-ACKs per source cannot be turned off (leave synProxyAnswers out for the default, 10000/s burst 20000)`,
			},
			count: 1,
		},
		{
			name: "synProxyAnswers burst",
			src: doc(
				"  synProxyAnswers: {rate: 100/s, burst: 0}",
			),
			want: []string{
				`p.yaml:6: spec.synProxyAnswers.burst: 0 is below 1: the bucket must hold at least one connection`,
			},
			count: 1,
		},
		{
			name: "connections on udp",
			src: doc(
				"  services:",
				"    - name: dns",
				"      protocol: udp",
				"      ports: [53]",
				"      limits: {client: {connections: 10/s}}",
			),
			want:  []string{"p.yaml:10: spec.services[0].limits.client.connections: connections count TCP SYNs; a udp service has none"},
			count: 1,
		},
		{
			name: "detection",
			src: doc(
				"  detection:",
				"    synflood: {enabled: true}",
				"    flood: {action: block, window: 10, limitedFor: 2m}",
				"    scan: {window: 2d, ports: 0}",
				"    aggregate: {share: 1.5, minClients: -1}",
				"    bad-flags: {enabled: maybe}",
			),
			want: []string{
				`p.yaml:7: spec.detection.synflood: unknown field "synflood" (did you mean "syn-flood"?)`,
				`p.yaml:8: spec.detection.flood.action: "block" is not one of flag, ban`,
				`p.yaml:8: spec.detection.flood.window: "10" needs a unit, like 10s or 10m`,
				"p.yaml:8: spec.detection.flood.limitedFor: 2m must be above zero and at most the window (1m)",
				"p.yaml:9: spec.detection.scan.window: 2d is outside 1s–24h",
				"p.yaml:9: spec.detection.scan.ports: 0 is outside 1–4294967295",
				`p.yaml:10: spec.detection.aggregate.share: expected a share above 0 and at most 1 (such as 0.5), found "1.5"`,
				"p.yaml:10: spec.detection.aggregate.minClients: -1 is outside",
				`p.yaml:11: spec.detection.bad-flags.enabled: expected true or false, found "maybe"`,
			},
			count: 9,
		},
		{
			name: "bans",
			src:  doc("  bans: {ttl: 2h, maxTTL: 30m, growth: 0.5, forgetAfter: 10ms, for: 1h}"),
			want: []string{
				`p.yaml:6: spec.bans.for: unknown field "for"`,
				`p.yaml:6: spec.bans.growth: expected a factor from 1 (no growth) to 100, found "0.5"`,
				"p.yaml:6: spec.bans.forgetAfter: 10ms is below 1s",
				"p.yaml:6: spec.bans.maxTTL: 30m is below ttl 2h",
			},
			count: 4,
		},
		{
			name: "wrong shapes",
			src: doc(
				"  services: {name: web}",
				"  allow: {a: 1}",
				"  detection: [flood]",
				"  bans: 10m",
				"  clientKey: 32",
			),
			want: []string{
				"p.yaml:6: spec.services: expected a list of services, found a mapping",
				"p.yaml:7: spec.allow: expected a list, found a mapping",
				"p.yaml:8: spec.detection: expected a mapping (key: value lines), found a list",
				`p.yaml:9: spec.bans: expected a mapping (key: value lines), found "10m"`,
				`p.yaml:10: spec.clientKey: expected a mapping (key: value lines), found "32"`,
			},
			count: 5,
		},
		{
			name:  "list file with many bad lines",
			src:   doc("  denyFiles: [junk.txt]"),
			lists: map[string]string{"junk.txt": strings.Repeat("garbage\n", 50)},
			want:  []string{"junk.txt:1: spec.denyFiles[0]: not an address or CIDR: a 7-byte entry", "junk.txt:20: spec.denyFiles[0]: not an address or CIDR: a 7-byte entry", "junk.txt:50: spec.denyFiles[0]: 30 more bad entries not shown"},
			count: maxListErrors + 1,
		},
		{
			name: "what proves a source, and what may be banned",
			src: doc(
				"  detection:",
				"    scan: {banUnproven: yes please}",
				"    auth-failures: {banUnproven: true}",
				"  bans: {proofTTL: 0s, maxPerMinute: 0}",
				"  neverBan: [192.0.2.300, \"\"]",
			),
			want: []string{
				"p.yaml:7: spec.detection.scan.banUnproven: expected true or false",
				`p.yaml:8: spec.detection.auth-failures.banUnproven: unknown field "banUnproven"`,
				"p.yaml:9: spec.bans.maxPerMinute: ",
				"p.yaml:9: spec.bans.proofTTL: 0s is below 1s",
				"p.yaml:10: spec.neverBan[0]: ",
				"p.yaml:10: spec.neverBan[1]: ",
			},
			count: 6,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(tc.src), files(tc.lists))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", p)
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want Errors: %v", err, err)
			}
			text := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("missing %q in:\n%s", w, text)
				}
			}
			if tc.count > 0 && len(errs) != tc.count {
				t.Errorf("got %d errors, want %d:\n%s", len(errs), tc.count, text)
			}
			if got := strings.Count(text, "\n") + 1; got != len(errs) {
				t.Errorf("Error() has %d lines for %d errors", got, len(errs))
			}
			for _, e := range errs {
				if e.File == "" || e.Line < 1 || e.Msg == "" {
					t.Errorf("incomplete error %#v", e)
				}
			}
		})
	}
}

func manyServices(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("    - {name: s%d, ports: [%d]}", i, 1000+i))
	}
	return out
}

func TestErrorsAreSortedByFileAndLine(t *testing.T) {
	src := doc(
		"  denyFiles: [b.txt, a.txt]",
		"  services:",
		"    - name: x",
		"      ports: [0]",
		"  mode: bad",
	)
	_, err := Parse("dir/p.yaml", []byte(src), files(map[string]string{"a.txt": "x\n", "b.txt": "\n\ny\n"}))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got %v", err)
	}
	var got []string
	for _, e := range errs {
		got = append(got, fmt.Sprintf("%s:%d", e.File, e.Line))
	}
	want := []string{"dir/p.yaml:9", "dir/p.yaml:10", "dir/b.txt:3", "dir/a.txt:1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("order %v, want %v\n%v", got, want, err)
	}
}

func TestParseDefaults(t *testing.T) {
	p := mustParse(t, doc("  {}"), nil)
	want := Defaults()
	if !reflect.DeepEqual(p.Spec, want) {
		t.Errorf("spec {} gives\n%+v\nwant the defaults\n%+v", p.Spec, want)
	}
	if p.Name != "t" || p.Source != "p.yaml" {
		t.Errorf("name %q source %q", p.Name, p.Source)
	}
	// the defaults themselves are what the README promises
	if want.Mode != Enforce || want.DefaultAction != Pass || !want.TCPFlagSanity ||
		want.ClientKey != (KeyLengths{32, 64}) || want.PrefixKey != (KeyLengths{24, 48}) ||
		want.Bans.TTL != 10*time.Minute || want.Bans.MaxTTL != 24*time.Hour || want.Bans.Growth != 2 {
		t.Errorf("defaults changed: %+v", want)
	}
}

func TestParseFull(t *testing.T) {
	src := doc(
		"  mode: monitor",
		"  defaultAction: drop",
		"  tcpFlagSanity: false",
		"  clientKey: {ipv4: 30, ipv6: 56}",
		"  prefixKey: {ipv4: 20, ipv6: 40}",
		"  allow: [198.51.100.7, \"2001:db8::1\"]",
		"  allowFiles: [ok.txt]",
		"  deny: [203.0.113.0/24]",
		"  denyFiles: [bad.txt]",
		"  services:",
		"    - name: https",
		"      protocol: tcp",
		"      ports: [443, \"8443-8444\"]",
		"      mode: enforce",
		"      limits:",
		"        client:",
		"          packets: {rate: 200/s, burst: 400}",
		"          bytes: {rate: 2MiB/s}",
		"          connections: 1200/m",
		"        prefix:",
		"          bytes: {rate: 1000B/s}",
		"          packets: {rate: 120/m, burst: 3}",
		"        total:",
		"          bytes: {rate: 1.5GB/s, burst: 4GiB}",
		"      fragments: 10/s",
		"    - name: dns",
		"      protocol: udp",
		"      ports: 53",
		"      mode: monitor",
		"      fragments: {rate: 600/m, burst: 50}",
		"  detection:",
		"    flood: {enabled: false, action: flag, window: 2m, limitedFor: 30s}",
		"    syn-flood: {syns: 500}",
		"    scan: {window: 30s, ports: 50, banUnproven: true}",
		"    deny-probe: {action: ban, hits: 3}",
		"    bad-flags: {packets: 1}",
		"    aggregate: {share: 0.8, minClients: 10, minEvents: 100, window: 5m}",
		"  bans: {ttl: 1h, maxTTL: 7d, growth: 1.5, forgetAfter: 48h, proofTTL: 1h, maxPerMinute: 5}",
		"  neverBan: [192.0.2.53, \"2001:db8:53::/64\"]",
	)
	lists := map[string]string{
		"ok.txt":  "10.0.0.0/8\r\n; comment\n  172.16.0.0/12  \n",
		"bad.txt": "2001:db8:bad::/48\n192.0.2.0/24 # TEST-NET-1\n",
	}
	p := mustParse(t, src, lists)
	s := p.Spec
	if s.Mode != Monitor || s.DefaultAction != Drop || s.TCPFlagSanity {
		t.Errorf("globals: %+v", s)
	}
	if s.ClientKey != (KeyLengths{30, 56}) || s.PrefixKey != (KeyLengths{20, 40}) {
		t.Errorf("keys: %+v %+v", s.ClientKey, s.PrefixKey)
	}
	wantAllow := prefixes("198.51.100.7/32", "2001:db8::1/128", "10.0.0.0/8", "172.16.0.0/12")
	wantDeny := prefixes("203.0.113.0/24", "2001:db8:bad::/48", "192.0.2.0/24")
	if !reflect.DeepEqual(s.Allow, wantAllow) || !reflect.DeepEqual(s.Deny, wantDeny) {
		t.Errorf("allow %v deny %v", s.Allow, s.Deny)
	}
	if !reflect.DeepEqual(s.AllowFiles, []string{"ok.txt"}) || !reflect.DeepEqual(s.DenyFiles, []string{"bad.txt"}) {
		t.Errorf("files %v %v", s.AllowFiles, s.DenyFiles)
	}
	if len(s.Services) != 2 {
		t.Fatalf("services: %+v", s.Services)
	}
	https := Service{
		Name: "https", Protocol: TCP, Mode: Enforce,
		Ports: []PortRange{{443, 443}, {8443, 8444}},
		Client: Limits{
			Packets:     Rate{PerSecond: 200, Burst: 400},
			Bytes:       Rate{PerSecond: 2 << 20, Burst: 2 << 20}, // default burst: one second's worth
			Connections: Rate{PerSecond: 20, Burst: 20},           // 1200/m is 20/s
		},
		Prefix: Limits{
			Bytes:   Rate{PerSecond: 1000, Burst: MinBytesBurst}, // one second is less than a frame
			Packets: Rate{PerSecond: 2, Burst: 3},
		},
		Total:     Limits{Bytes: Rate{PerSecond: 1_500_000_000, Burst: 4 << 30}},
		Fragments: Rate{PerSecond: 10, Burst: 10},
		SynProxy:  SynProxyOff,
	}
	if !reflect.DeepEqual(s.Services[0], https) {
		t.Errorf("https:\n%+v\nwant\n%+v", s.Services[0], https)
	}
	dns := Service{Name: "dns", Protocol: UDP, Mode: Monitor, Ports: []PortRange{{53, 53}}, Fragments: Rate{PerSecond: 10, Burst: 50}, SynProxy: SynProxyOff}
	if !reflect.DeepEqual(s.Services[1], dns) {
		t.Errorf("dns: %+v", s.Services[1])
	}
	d := s.Detection
	if d.Flood != (FloodDetection{Detector{Action: ActionFlag, Window: 2 * time.Minute}, 30 * time.Second}) {
		t.Errorf("flood %+v", d.Flood)
	}
	if d.SYNFlood != (SYNFloodDetection{Detector{Enabled: true, Action: ActionBan, Window: 10 * time.Second}, 500}) {
		t.Errorf("syn-flood %+v", d.SYNFlood)
	}
	if d.Scan != (ScanDetection{Detector{Enabled: true, Action: ActionBan, Window: 30 * time.Second, BanUnproven: true}, 50}) {
		t.Errorf("scan %+v", d.Scan)
	}
	if d.DenyProbe != (DenyProbeDetection{Detector{Enabled: true, Action: ActionBan, Window: time.Minute}, 3}) {
		t.Errorf("deny-probe %+v", d.DenyProbe)
	}
	if d.BadFlags != (BadFlagsDetection{Detector{Enabled: true, Action: ActionFlag, Window: time.Minute}, 1}) {
		t.Errorf("bad-flags %+v", d.BadFlags)
	}
	if d.Aggregate != (AggregateDetection{Detector{Enabled: true, Action: ActionFlag, Window: 5 * time.Minute}, 0.8, 10, 100}) {
		t.Errorf("aggregate %+v", d.Aggregate)
	}
	if s.Bans != (Bans{time.Hour, 7 * 24 * time.Hour, 1.5, 48 * time.Hour, time.Hour, 5}) {
		t.Errorf("bans %+v", s.Bans)
	}
	if !reflect.DeepEqual(s.NeverBan, prefixes("192.0.2.53/32", "2001:db8:53::/64")) {
		t.Errorf("neverBan %v", s.NeverBan)
	}
	if len(p.Warnings) != 0 {
		t.Errorf("warnings: %v", p.Warnings)
	}
}

// The datapath records proven sources while a packet detector is on: its
// flags say whether the source was proven, which decides whether it bans.
func TestProveSources(t *testing.T) {
	off := mustParse(t, doc("  detection:",
		"    flood: {enabled: false}", "    syn-flood: {enabled: false}", "    scan: {enabled: false}",
		"    deny-probe: {enabled: false}", "    bad-flags: {enabled: false}", "    aggregate: {enabled: false}"), nil)
	on := mustParse(t, doc("  detection:", "    scan: {enabled: false}"), nil)
	for _, c := range []struct {
		p    *Policy
		want bool
	}{{off, false}, {on, true}} {
		lp, err := c.p.Compile(nil)
		if err != nil {
			t.Fatal(err)
		}
		if lp.ProveSources != c.want {
			t.Errorf("ProveSources %v, want %v", lp.ProveSources, c.want)
		}
	}
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}
