package policy

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCrowdSecSection(t *testing.T) {
	p := mustParse(t, doc(
		"  crowdsec:",
		"    lapi: http://127.0.0.1:8080",
		"    bouncer:",
		"      apiKeyFile: secrets/bouncer.key",
		"      pollInterval: 5s",
		"      scopes: [ip]",
		"      origins: [crowdsec, cscli, CAPI]",
		"    report:",
		"      machineIDEnv: CS_MACHINE",
		"      passwordFile: /etc/apiguard/cs-password",
		"      banDuration: 4h",
	), nil)
	want := CrowdSec{
		Enabled: true, LAPI: "http://127.0.0.1:8080",
		Bouncer: CrowdSecBouncer{Enabled: true, APIKey: Secret{File: "secrets/bouncer.key"}, PollInterval: 5 * time.Second,
			Scopes: []string{"Ip"}, Origins: []string{"crowdsec", "cscli", "CAPI"}, MinPrefix: KeyLengths{IPv4: 16, IPv6: 32}},
		Report: CrowdSecReport{Enabled: true, MachineID: Secret{Env: "CS_MACHINE"}, Password: Secret{File: "/etc/apiguard/cs-password"}, BanDuration: 4 * time.Hour},
	}
	if !reflect.DeepEqual(p.Spec.CrowdSec, want) {
		t.Fatalf("got %+v\nwant %+v", p.Spec.CrowdSec, want)
	}
	d := strings.Join(Diff(nil, p), "\n")
	if !strings.Contains(d, "crowdsec: (none) -> lapi http://127.0.0.1:8080; bouncer key from file secrets/bouncer.key every 5s") {
		t.Fatalf("diff does not show the section:\n%s", d)
	}

	// defaults, and a credentials file as cscli writes it
	p = mustParse(t, doc(
		"  crowdsec:",
		"    lapi: https://lapi.example:8080",
		"    bouncer: {apiKeyEnv: CROWDSEC_KEY}",
		"    report: {credentialsFile: /etc/crowdsec/local_api_credentials.yaml}",
	), nil)
	c := p.Spec.CrowdSec
	if c.Bouncer.PollInterval != DefaultCrowdSecPoll || !reflect.DeepEqual(c.Bouncer.Scopes, []string{"Ip", "Range"}) ||
		c.Bouncer.APIKey.Env != "CROWDSEC_KEY" || c.Report.CredentialsFile != "/etc/crowdsec/local_api_credentials.yaml" || c.Report.BanDuration != 0 {
		t.Fatalf("defaults: %+v", c)
	}
	if p := mustParse(t, doc("  mode: enforce"), nil); p.Spec.CrowdSec.Enabled {
		t.Fatal("no section, but enabled")
	}
	if len(p.Warnings) != 0 {
		t.Fatalf("warnings for an https LAPI: %v", p.Warnings)
	}
}

func TestCrowdSecTLSAndScope(t *testing.T) {
	p := mustParse(t, doc(
		"  crowdsec:",
		"    lapi: https://lapi.internal:8080",
		"    tls: {caFile: lapi-ca.pem, certFile: /etc/apiguard/bouncer.pem, keyFile: /etc/apiguard/bouncer.key}",
		"    bouncer:",
		"      minPrefix: {ipv4: 24, ipv6: 48}",
	), nil)
	want := CrowdSec{Enabled: true, LAPI: "https://lapi.internal:8080",
		TLS:     CrowdSecTLS{CAFile: "lapi-ca.pem", CertFile: "/etc/apiguard/bouncer.pem", KeyFile: "/etc/apiguard/bouncer.key"},
		Bouncer: CrowdSecBouncer{Enabled: true, PollInterval: DefaultCrowdSecPoll, Scopes: []string{"Ip", "Range"}, MinPrefix: KeyLengths{IPv4: 24, IPv6: 48}}}
	if !reflect.DeepEqual(p.Spec.CrowdSec, want) {
		t.Fatalf("got %+v\nwant %+v (a client certificate stands for the API key)", p.Spec.CrowdSec, want)
	}
	if d := strings.Join(Diff(nil, p), "\n"); !strings.Contains(d, "CA lapi-ca.pem, client certificate /etc/apiguard/bouncer.pem") ||
		!strings.Contains(d, "ranges up to /24 and /48") {
		t.Fatalf("diff:\n%s", d)
	}

	// plain HTTP: quiet to this host, a warning to any other
	for lapi, warn := range map[string]bool{"http://127.0.0.1:8080": false, "http://localhost:8080": false, "http://[::1]:8080": false,
		"http://10.1.2.3:8080": true, "http://lapi.internal:8080": true, "https://10.1.2.3:8080": false} {
		p := mustParse(t, doc("  crowdsec:", "    lapi: "+lapi, "    bouncer: {apiKeyEnv: K}"), nil)
		got := p.Warnings.Error()
		if warn != strings.Contains(got, "spec.crowdsec.lapi: plain HTTP to") {
			t.Errorf("%s: warnings %q", lapi, got)
		}
	}
}

func TestCrowdSecErrors(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  []string
	}{
		{"inline key", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    bouncer:", "      apiKey: s3cret"},
			[]string{"p.yaml:9: spec.crowdsec.bouncer.apiKey: credentials never go in the policy text", "p.yaml:9: spec.crowdsec.bouncer: missing apiKeyFile or apiKeyEnv"}},
		{"inline password", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    report:", "      machineIDEnv: M", "      password: pw"},
			[]string{"p.yaml:10: spec.crowdsec.report.password: credentials never go in the policy text"}},
		{"both file and env", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    bouncer: {apiKeyFile: k, apiKeyEnv: K}"},
			[]string{"p.yaml:8: spec.crowdsec.bouncer.apiKeyEnv: set either apiKeyFile or apiKeyEnv, not both"}},
		{"bad env", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    bouncer: {apiKeyEnv: 1-bad}"},
			[]string{"p.yaml:8: spec.crowdsec.bouncer.apiKeyEnv: \"1-bad\" is not an environment variable name"}},
		{"bad url", []string{"  crowdsec:", "    lapi: 127.0.0.1:8080", "    bouncer: {apiKeyEnv: K}"},
			[]string{"p.yaml:7: spec.crowdsec.lapi:"}},
		{"user in url", []string{"  crowdsec:", "    lapi: http://u:p@127.0.0.1:8080", "    bouncer: {apiKeyEnv: K}"},
			[]string{"p.yaml:7: spec.crowdsec.lapi: credentials never go in the policy text"}},
		{"no lapi", []string{"  crowdsec:", "    bouncer: {apiKeyEnv: K}"},
			[]string{"spec.crowdsec.lapi: missing"}},
		{"nothing to do", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080"},
			[]string{"p.yaml:7: spec.crowdsec: neither bouncer nor report is set"}},
		{"poll", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    bouncer: {apiKeyEnv: K, pollInterval: 100ms}"},
			[]string{"p.yaml:8: spec.crowdsec.bouncer.pollInterval: 100ms is outside 1s–1h"}},
		{"scopes", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    bouncer: {apiKeyEnv: K, scopes: [ip, country, ip]}"},
			[]string{"spec.crowdsec.bouncer.scopes[1]: \"country\" is not one of ip, range", "spec.crowdsec.bouncer.scopes[2]: \"ip\" is listed twice"}},
		{"origins", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    bouncer: {apiKeyEnv: K, origins: [\"a b\"]}"},
			[]string{"spec.crowdsec.bouncer.origins[0]: \"a b\" is not an origin name"}},
		{"report creds", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    report: {banDuration: 10s}"},
			[]string{"spec.crowdsec.report: missing machineIDFile or machineIDEnv", "missing passwordFile or passwordEnv", "spec.crowdsec.report.banDuration: 10s is outside 1m–720h"}},
		{"creds twice", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    report: {credentialsFile: c.yaml, passwordEnv: P}"},
			[]string{"spec.crowdsec.report.credentialsFile: set either credentialsFile or machineID and password, not both"}},
		{"typo", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    bouncer: {apiKeyEnv: K, pollIntervall: 5s}"},
			[]string{"did you mean \"pollInterval\""}},
		{"tls on http", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    tls: {caFile: ca.pem}", "    bouncer: {apiKeyEnv: K}"},
			[]string{"p.yaml:8: spec.crowdsec.tls: set, but lapi http://127.0.0.1:8080 is not https://"}},
		{"cert without key", []string{"  crowdsec:", "    lapi: https://127.0.0.1:8080", "    tls: {certFile: c.pem}", "    bouncer: {apiKeyEnv: K}"},
			[]string{"p.yaml:8: spec.crowdsec.tls: certFile and keyFile go together"}},
		{"empty ca", []string{"  crowdsec:", "    lapi: https://127.0.0.1:8080", "    tls: {caFile: \"\"}", "    bouncer: {apiKeyEnv: K}"},
			[]string{"spec.crowdsec.tls.caFile: empty file name"}},
		{"min prefix", []string{"  crowdsec:", "    lapi: http://127.0.0.1:8080", "    bouncer: {apiKeyEnv: K, minPrefix: {ipv4: 0, ipv6: 129}}"},
			[]string{"spec.crowdsec.bouncer.minPrefix.ipv4: 0 is outside 1–32", "spec.crowdsec.bouncer.minPrefix.ipv6: 129 is outside 1–128"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(doc(tc.lines...)), files(nil))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error repeats the secret:\n%v", err)
			}
		})
	}
}
