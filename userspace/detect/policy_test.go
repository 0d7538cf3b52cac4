package detect

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/policy"
)

// The policy's defaults and the detector's are one set of numbers.
func TestFromPolicyDefaults(t *testing.T) {
	spec := policy.Defaults()
	if got, want := FromPolicy(&spec, 0), DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Fatalf("policy defaults give\n%+v\nthe detector's are\n%+v", got, want)
	}
}

func TestFromPolicyFile(t *testing.T) {
	src := `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: detection-test}
spec:
  mode: monitor
  clientKey: {ipv4: 32, ipv6: 56}
  prefixKey: {ipv4: 20, ipv6: 40}
  detection:
    flood: {window: 2m, limitedFor: 30s, action: flag}
    syn-flood: {enabled: false}
    scan: {ports: 100000, window: 30s, banUnproven: true}
    deny-probe: {hits: 3, action: ban}
    bad-flags: {packets: 2}
    aggregate: {share: 0.8, minClients: 2, minEvents: 5, action: ban}
  bans: {ttl: 5m, maxTTL: 1h, growth: 3, forgetAfter: 2h, proofTTL: 20m, maxPerMinute: 7}
`
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := FromPolicy(&pol.Spec, 2*time.Second)
	want := DefaultConfig()
	want.Flood = FloodRule{Rule{Enabled: true, Action: ActionFlag, Window: 2 * time.Minute}, 30 * time.Second}
	want.SYNFlood.Enabled = false
	want.Scan = ScanRule{Rule{Enabled: true, Action: ActionBan, Window: 30 * time.Second, BanUnproven: true}, maxScanPorts - 1}
	want.DenyProbe = DenyProbeRule{Rule{Enabled: true, Action: ActionBan, Window: time.Minute}, 3}
	want.BadFlags.Packets = 2
	want.Aggregate = AggregateRule{Rule{Enabled: true, Action: ActionBan, Window: time.Minute}, 0.8, 2, 5}
	want.Bans = BanPolicy{TTL: 5 * time.Minute, MaxTTL: time.Hour, Growth: 3, ForgetAfter: 2 * time.Hour,
		ProofTTL: 20 * time.Minute, MaxPerMinute: 7}
	want.Monitor = true
	want.ClientBits6, want.PrefixBits4, want.PrefixBits6 = 56, 20, 40
	want.EventInterval = 2 * time.Second
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a valid policy gives an invalid detector config: %v", err)
	}
}

// Every shipped policy gives a configuration the detector accepts.
func TestShippedPoliciesConfigureTheDetector(t *testing.T) {
	files, _ := filepath.Glob("../../policies/*.yaml")
	more, _ := filepath.Glob("../../policies/examples/*.yaml")
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no shipped policies found")
	}
	for _, f := range files {
		pol, err := policy.LoadFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cfg := FromPolicy(&pol.Spec, 0)
		if _, err := New(cfg, Options{}); err != nil {
			t.Errorf("%s: %v", strings.TrimPrefix(f, "../../"), err)
		}
	}
}
