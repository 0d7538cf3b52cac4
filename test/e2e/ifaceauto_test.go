package e2e

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
)

// shippedArgs is APIGUARD_ARGS of the /etc/default/apiguard that make
// install and the .deb ship: what `systemctl start apiguard` runs with.
func shippedArgs(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../../deploy/systemd/apiguard.default")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "APIGUARD_ARGS="); ok {
			return strings.Fields(strings.Trim(v, `"`))
		}
	}
	t.Fatal("apiguard.default sets no APIGUARD_ARGS")
	return nil
}

// TestIfaceAuto: with the shipped arguments (--iface auto) the daemon guards
// the interfaces of the default routes: the IPv6 one leaves through a veth,
// whose driver runs XDP natively, the IPv4 one through an ifb, whose driver
// does not. The veth gets native XDP; the ifb falls back to generic XDP and
// says so in status. A restart adopts both hooks as they are.
func TestIfaceAuto(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildBinary(t)
	p := newPair(t)
	args := shippedArgs(t)
	if !slices.Equal(args, []string{"--iface", "auto"}) {
		t.Fatalf("the shipped APIGUARD_ARGS are %q: this test runs --iface auto", args)
	}
	const ifb = "agauto0"
	for _, cmd := range [][]string{
		{"link", "add", ifb, "type", "ifb"},
		{"link", "set", ifb, "up"},
		{"route", "add", "default", "dev", ifb},
		{"-6", "route", "add", "default", "dev", p.guardEnd.Name},
	} {
		if err := p.guarded.IP(cmd...); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(policyPath, []byte(basePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := lab.NewDaemon(lab.DaemonConfig{Bin: bin, NS: p.guarded, Iface: args[1], Policy: policyPath, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	check := func(adopted bool) {
		t.Helper()
		st, err := d.Status()
		if err != nil {
			t.Fatal(err)
		}
		modes := map[string]string{}
		for _, i := range st.Interfaces {
			modes[i.Name] = i.Mode
			if i.Adopted != adopted {
				t.Errorf("%s adopted = %v, want %v", i.Name, i.Adopted, adopted)
			}
		}
		if want := map[string]string{ifb: "generic", p.guardEnd.Name: "native"}; len(modes) != 2 || modes[ifb] != "generic" || modes[p.guardEnd.Name] != "native" {
			t.Errorf("interfaces %v, want %v", modes, want)
		}
		warned := false
		for _, w := range st.Warnings {
			warned = warned || strings.HasPrefix(w, ifb+": generic XDP")
		}
		if !warned {
			t.Errorf("status does not say %s fell back to generic XDP: %q", ifb, st.Warnings)
		}
		out, _, err := d.CLI("status")
		if err != nil || !strings.Contains(out, "WARNING: "+ifb+": generic XDP") {
			t.Errorf("apiguard status: %v\n%s", err, out)
		}
	}
	check(false)
	if err := d.WaitLog(0, "native XDP is not available; using generic XDP", ifb); err != nil {
		t.Error(err)
	}
	// a restart keeps the same choice and adopts both hooks without a gap
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	check(true)
}

// TestIfaceAutoWithoutDefaultRoute: no default route, nothing to guard: the
// daemon refuses to start and says what to do.
func TestIfaceAutoWithoutDefaultRoute(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildBinary(t)
	p := newPair(t)
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(policyPath, []byte(basePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := lab.NewDaemon(lab.DaemonConfig{Bin: bin, NS: p.guarded, Iface: "auto", Policy: policyPath, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	err = d.Start()
	if err == nil || !strings.Contains(err.Error(), "no default route: name the interfaces with --iface") {
		t.Fatalf("start without a default route: %v", err)
	}
}
