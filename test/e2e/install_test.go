package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
)

// installedService reads what `systemctl start apiguard` would run from a
// staged `make install`: the unit's ExecStart with $APIGUARD_ARGS expanded
// from its EnvironmentFile, as systemd splits them (on blanks; the shipped
// values hold no quoting beyond the outer pair).
func installedService(t *testing.T, root string) []string {
	t.Helper()
	var execStart, envFile string
	for _, l := range strings.Split(readFile(t, filepath.Join(root, "lib/systemd/system/apiguard.service")), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			execStart = v
		}
		if v, ok := strings.CutPrefix(l, "EnvironmentFile=-"); ok {
			envFile = v
		}
	}
	if execStart == "" || envFile != "/etc/default/apiguard" {
		t.Fatalf("the installed unit's ExecStart %q or EnvironmentFile %q changed shape", execStart, envFile)
	}
	env := map[string]string{}
	f, err := os.Open(filepath.Join(root, envFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = strings.Trim(v, `"`)
		}
	}
	var args []string
	for _, w := range strings.Fields(execStart) {
		if name, ok := strings.CutPrefix(w, "$"); ok {
			args = append(args, strings.Fields(env[name])...)
			continue
		}
		args = append(args, w)
	}
	return args
}

// TestInstalledService: what `make install` puts in place starts as the
// unit starts it. There is no systemd to run `systemctl start apiguard` in
// the test environment, so the test stages `make install` (PREFIX=/usr, as
// the .deb), reads the unit's ExecStart and the shipped
// /etc/default/apiguard, and runs that command line, under the unit's
// capability bounding set and groups, in a namespace whose default route
// leaves through a veth: the installed binary attaches to it (--iface
// auto, native XDP), applies the installed default policy, and names the
// commit it was built from. The lab only moves the pins, the control socket
// and the state directory out of the host's way.
func TestInstalledService(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "make")
	testenv.RequireTool(t, "git")
	wrap, _ := unitWrap(t)
	root := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mk := exec.CommandContext(ctx, "make", "--no-print-directory", "install", "DESTDIR="+root, "PREFIX=/usr")
	mk.Dir = "../.."
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}

	args := installedService(t, root)
	want := []string{"/usr/bin/apiguard", "daemon", "--policy", "/etc/apiguard/policy.yaml",
		"--metrics-addr", "127.0.0.1:9470", "--log-format", "json", "--iface", "auto"}
	if !slices.Equal(args, want) {
		// the lab passes --policy, --iface and --log-format json and leaves
		// the metrics address at its default: a new argument needs a look here
		t.Fatalf("the installed service runs %q, want %q", args, want)
	}
	bin := filepath.Join(root, args[0])
	policyPath := filepath.Join(root, args[3])

	p := newPair(t)
	if err := p.guarded.IP("route", "add", "default", "dev", p.guardEnd.Name); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d, err := lab.NewDaemon(lab.DaemonConfig{Bin: bin, NS: p.guarded, Iface: args[9], Policy: policyPath, Dir: dir, Wrap: wrap})
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
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Interfaces) != 1 || st.Interfaces[0].Name != p.guardEnd.Name || st.Interfaces[0].Mode != "native" {
		t.Errorf("interfaces %+v, want %s in native XDP", st.Interfaces, p.guardEnd.Name)
	}
	if st.Policy.Name != "default" || st.Policy.Generation == 0 || len(st.Services) == 0 {
		t.Errorf("policy %+v with %d services, want the installed default policy in force", st.Policy, len(st.Services))
	}
	commit, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := d.CLI("version")
	if err != nil || !strings.Contains(out, "commit:   "+strings.TrimSpace(string(commit))) {
		t.Errorf("the installed apiguard version does not name commit %s: %v\n%s", commit, err, out)
	}
	if !strings.Contains(st.Version, strings.TrimSpace(string(commit))[:7]) {
		t.Errorf("the daemon's status names version %q, not the commit", st.Version)
	}
}
