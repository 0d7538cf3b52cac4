package policy

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAccessLogsAndAPIDetection(t *testing.T) {
	src := `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: api}
spec:
  detection:
    auth-failures: {failures: 5, window: 30s, loginPaths: [/login, /oauth/token]}
    enumeration: {objects: 20, templates: ["/items/{id}", "/users/{user}/orders/{id}"], learn: false}
    app-throttled: {responses: 10, action: flag}
    error-burst: {enabled: false}
  accessLogs:
    - path: /var/log/nginx/access.log
      forwarded: true
      trustedProxies: [10.0.0.0/8, 192.0.2.1]
    - path: /var/log/api/access.json
      format: json
      fields: {client: client.ip, time: ts, path: http.path, status: http.status, latency: ms, latencyUnit: ms}
      fromStart: true
      maxLineLength: 4096
`
	pol, err := Parse("api.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := pol.Spec.Detection
	if d.AuthFailures.Failures != 5 || d.AuthFailures.Window != 30*time.Second || !reflect.DeepEqual(d.AuthFailures.LoginPaths, []string{"/login", "/oauth/token"}) {
		t.Errorf("auth-failures %+v", d.AuthFailures)
	}
	if d.Enumeration.Objects != 20 || d.Enumeration.Learn || len(d.Enumeration.Templates) != 2 || d.Enumeration.Action != ActionBan {
		t.Errorf("enumeration %+v", d.Enumeration)
	}
	if d.AppThrottled.Responses != 10 || d.AppThrottled.Action != ActionFlag || d.ErrorBurst.Enabled || d.ErrorBurst.Responses != 50 {
		t.Errorf("app-throttled %+v error-burst %+v", d.AppThrottled, d.ErrorBurst)
	}
	want := []AccessLog{
		{Path: "/var/log/nginx/access.log", Format: "combined", Forwarded: true,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")}},
		{Path: "/var/log/api/access.json", Format: "json", FromStart: true, MaxLineLength: 4096,
			Fields: LogFields{Client: "client.ip", Time: "ts", Path: "http.path", Status: "http.status", Latency: "ms", LatencyUnit: "ms"}},
	}
	if !reflect.DeepEqual(pol.Spec.AccessLogs, want) {
		t.Errorf("access logs\n%+v\nwant\n%+v", pol.Spec.AccessLogs, want)
	}
	if len(pol.Warnings) != 0 {
		t.Errorf("warnings for a /8: %v", pol.Warnings)
	}
}

// Any host in a trusted range can blame any address: a range wider than a /8
// is a warning at its line.
func TestTrustedProxiesTooWide(t *testing.T) {
	src := `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: wide}
spec:
  accessLogs:
    - path: /var/log/nginx/access.log
      forwarded: true
      trustedProxies:
        - 10.0.0.0/8
        - 0.0.0.0/0
        - 192.0.2.1
        - fc00::/7
`
	pol, err := Parse("wide.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := pol.Warnings.Error()
	for _, want := range []string{
		"wide.yaml:10: spec.accessLogs[0].trustedProxies[1]: 0.0.0.0/0 is wider than a /8: any host in it",
		"wide.yaml:12: spec.accessLogs[0].trustedProxies[3]: fc00::/7 is wider than a /8",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q:\n%s", want, got)
		}
	}
	if len(pol.Warnings) != 2 {
		t.Errorf("%d warnings, want 2:\n%s", len(pol.Warnings), got)
	}
}

func TestAccessLogErrorsHaveLines(t *testing.T) {
	src := `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: bad}
spec:
  detection:
    auth-failures: {failures: 0, loginPaths: [login]}
    enumeration: {templates: ["/items/list", "/a/{b"], objects: 100000}
  accessLogs:
    - path: relative.log
    - path: /var/log/a.log
      format: xml
    - path: /var/log/a.log
      fields: {client: ip}
      trustedProxies: [not-an-address]
      maxLineLength: 10
    - format: json
      fields: {client: "", latencyUnit: h, colour: red}
`
	_, err := Parse("bad.yaml", []byte(src), nil)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"bad.yaml:6: spec.detection.auth-failures.failures: 0 is outside",
		`bad.yaml:6: spec.detection.auth-failures.loginPaths[0]: "login" does not start with /`,
		`bad.yaml:7: spec.detection.enumeration.templates[0]: "/items/list": no {variable} segment`,
		`bad.yaml:7: spec.detection.enumeration.templates[1]: "/a/{b": segment "{b"`,
		"bad.yaml:7: spec.detection.enumeration.objects: 100000 is outside 1–16383",
		`bad.yaml:9: spec.accessLogs[0].path: "relative.log" is not an absolute path`,
		`bad.yaml:11: spec.accessLogs[1].format: "xml" is not one of combined, json`,
		"bad.yaml:12: spec.accessLogs[2].path: /var/log/a.log is followed twice (first at line 10)",
		"bad.yaml:13: spec.accessLogs[2].fields: only a json log has fields",
		`bad.yaml:14: spec.accessLogs[2].trustedProxies[0]: "not-an-address" is not an address or CIDR`,
		"bad.yaml:15: spec.accessLogs[2].maxLineLength: 10 is outside 64–1048576",
		"bad.yaml:16: spec.accessLogs[3].path: missing",
		"bad.yaml:17: spec.accessLogs[3].fields.client: empty key",
		`bad.yaml:17: spec.accessLogs[3].fields.latencyUnit: "h" is not one of s, ms, us, ns`,
		`bad.yaml:17: spec.accessLogs[3].fields.colour: unknown field "colour"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
}

func TestProbeDetection(t *testing.T) {
	src := `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: probes}
spec:
  detection:
    injection-probe: {requests: 3, window: 5m}
    sensitive-files: {requests: 2, paths: [/internal/debug, "*.pem", secret*, Thumbs.db], action: flag}
    scanner-agent: {agents: [acme-scanner], defaults: false}
  accessLogs:
    - path: /var/log/api/access.json
      format: json
      fields: {client: ip, time: ts, path: uri, query: args, userAgent: ua, status: code}
`
	pol, err := Parse("probes.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := pol.Spec.Detection
	if d.InjectionProbe.Requests != 3 || d.InjectionProbe.Window != 5*time.Minute || d.InjectionProbe.Action != ActionBan || !d.InjectionProbe.Enabled {
		t.Errorf("injection-probe %+v", d.InjectionProbe)
	}
	if d.SensitiveFiles.Requests != 2 || d.SensitiveFiles.Action != ActionFlag || !d.SensitiveFiles.Defaults ||
		!reflect.DeepEqual(d.SensitiveFiles.Paths, []string{"/internal/debug", "*.pem", "secret*", "Thumbs.db"}) {
		t.Errorf("sensitive-files %+v", d.SensitiveFiles)
	}
	if d.ScannerAgent.Requests != 5 || d.ScannerAgent.Defaults || !reflect.DeepEqual(d.ScannerAgent.Agents, []string{"acme-scanner"}) {
		t.Errorf("scanner-agent %+v", d.ScannerAgent)
	}
	if f := pol.Spec.AccessLogs[0].Fields; f.Query != "args" || f.UserAgent != "ua" {
		t.Errorf("fields %+v", f)
	}
	// the defaults when the policy says nothing
	def := Defaults().Detection
	if !def.InjectionProbe.Enabled || def.InjectionProbe.Requests != 10 || !def.SensitiveFiles.Defaults || def.SensitiveFiles.Requests != 5 ||
		!def.ScannerAgent.Defaults || def.ScannerAgent.Requests != 5 || def.ScannerAgent.Action != ActionBan {
		t.Errorf("defaults %+v %+v %+v", def.InjectionProbe, def.SensitiveFiles, def.ScannerAgent)
	}
}

func TestProbeDetectionErrors(t *testing.T) {
	src := `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: bad}
spec:
  detection:
    injection-probe: {requests: 0, classes: [sql]}
    sensitive-files: {paths: ["*", "a/b", "/x/*.bak"]}
    scanner-agent:
      defaults: false
      agents: []
`
	_, err := Parse("bad.yaml", []byte(src), nil)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"bad.yaml:6: spec.detection.injection-probe.requests: 0 is outside",
		`bad.yaml:6: spec.detection.injection-probe.classes: unknown field "classes"`,
		`bad.yaml:7: spec.detection.sensitive-files.paths[0]: "*" would match every path`,
		`bad.yaml:7: spec.detection.sensitive-files.paths[1]: "a/b": a segment pattern has no '/'`,
		`bad.yaml:7: spec.detection.sensitive-files.paths[2]: "/x/*.bak": a path pattern (/...) has no '*'`,
		"bad.yaml:9: spec.detection.scanner-agent.defaults: false with no agents: nothing would ever count",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
}

// The patterns a policy adds share the matcher's bound with the defaults.
func TestProbePatternBound(t *testing.T) {
	list := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf("agent-%d", i)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	src := func(agents string, defaults bool) []byte {
		return fmt.Appendf(nil, "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: b}\nspec:\n  detection:\n    scanner-agent: {defaults: %v, agents: %s}\n", defaults, agents)
	}
	if _, err := Parse("b.yaml", src(list(200), true), nil); err == nil || !strings.Contains(err.Error(), "200 patterns; at most") {
		t.Fatalf("200 agents with the defaults: %v", err)
	}
	if _, err := Parse("b.yaml", src(list(200), false), nil); err != nil {
		t.Fatalf("200 agents without the defaults: %v", err)
	}
}
