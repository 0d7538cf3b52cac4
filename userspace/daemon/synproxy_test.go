package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

// A policy that turns the SYN proxy on is applied only where the host can run
// it; refused, the policy in force stays. The check runs in the daemon's
// network namespace (here a fresh one, whose lo is the guarded interface).
func TestSynProxyPolicyRefusedWithoutSyncookies(t *testing.T) {
	testenv.RequireRoot(t)
	ns, err := netns.New("sp-daemon")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	if err := ns.IP("link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	d := startBans(t, testPinDir(t), t.TempDir())
	parse := func(name, proxy string) *parsedPolicy {
		p, err := parseUpload(&control.PolicyUpload{Name: name + ".yaml", Source: `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: ` + name + `}
spec:
  services:
    - name: api
      ports: [8080]
      limits: {total: {connections: 100/s}}
      synProxy: ` + proxy + `
`})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	apply := func(p *parsedPolicy) error {
		var err error
		if derr := ns.Do(func() error { _, err = d.apply(p, "test"); return nil }); derr != nil {
			t.Fatal(derr)
		}
		return err
	}
	if err := apply(parse("off", "off")); err != nil {
		t.Fatal(err)
	}
	if err := ns.Sysctl("net.ipv4.tcp_syncookies", "0"); err != nil {
		t.Fatal(err)
	}
	err = apply(parse("auto", "auto"))
	if err == nil || !strings.Contains(err.Error(), "tcp_syncookies") || !strings.Contains(err.Error(), "policy in force stays") {
		t.Fatalf("synProxy with tcp_syncookies=0: %v, want a refusal that names it", err)
	}
	if got := d.CurrentPolicy().Name; got != "off" {
		t.Errorf("policy in force %q after the refusal, want off", got)
	}
	if err := ns.Sysctl("net.ipv4.tcp_syncookies", "1"); err != nil {
		t.Fatal(err)
	}
	if err := apply(parse("auto", "auto")); err != nil {
		t.Fatal(err)
	}
	st, err := d.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sp := st.SynProxy; sp == nil || len(sp.Services) != 1 || sp.Services[0] != (control.SynProxyService{Service: "api", Mode: "auto"}) {
		t.Errorf("status: %+v, want api auto, off (no flood)", st.SynProxy)
	}
}
