package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/test/testenv"
)

// run runs a command in the repository root and returns its output.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// files lists what is under root, relative to it, without dpkg's database.
func files(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "var/lib/dpkg" {
			return filepath.SkipDir
		}
		if rel != "." && !d.IsDir() {
			out = append(out, "/"+rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// checkEnvFileMode: /etc/default/apiguard is the unit's EnvironmentFile,
// where a policy's apiKeyEnv or passwordEnv credential is set on a host: it
// is root's only, not world-readable as /etc/default files often are.
func checkEnvFileMode(t *testing.T, root string) {
	t.Helper()
	if fi, err := os.Stat(filepath.Join(root, "etc/default/apiguard")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("/etc/default/apiguard: %v %v, want mode 0600", fi, err)
	}
}

// TestMakeInstall stages `make install` and checks what an operator gets:
// the unit runs the installed binary, the interface choice is the shipped
// /etc/default/apiguard's, the policy validates, man pages and completions
// come from the binary itself.
func TestMakeInstall(t *testing.T) {
	root := t.TempDir()
	run(t, nil, "make", "--no-print-directory", "install", "DESTDIR="+root, "PREFIX=/opt/ag")
	got := files(t, root)
	for _, want := range []string{
		"/opt/ag/bin/apiguard", "/opt/ag/lib/systemd/system/apiguard.service",
		"/etc/apiguard/policy.yaml", "/etc/default/apiguard",
		"/opt/ag/share/man/man1/apiguard.1", "/opt/ag/share/man/man1/apiguard-policy-apply.1",
		"/opt/ag/share/bash-completion/completions/apiguard",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("make install did not install %s (installed %v)", want, got)
		}
	}
	unit := string(read(t, filepath.Join(root, "opt/ag/lib/systemd/system/apiguard.service")))
	if !strings.Contains(unit, "ExecStart=/opt/ag/bin/apiguard daemon") || strings.Contains(unit, "/usr/local/bin") {
		t.Errorf("the installed unit does not run the installed binary:\n%s", unit)
	}
	def := string(read(t, filepath.Join(root, "etc/default/apiguard")))
	if !strings.Contains(def, `APIGUARD_ARGS="--iface auto"`) {
		t.Errorf("/etc/default/apiguard does not choose the interfaces:\n%s", def)
	}
	if fi, err := os.Stat(filepath.Join(root, "var/lib/apiguard")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v %v", fi, err)
	}
	checkEnvFileMode(t, root)
	bin := filepath.Join(root, "opt/ag/bin/apiguard")
	if out := run(t, nil, bin, "policy", "validate", filepath.Join(root, "etc/apiguard/policy.yaml")); !strings.Contains(out, "is valid") {
		t.Errorf("the installed policy: %s", out)
	}
	// the version names the commit the Makefile built
	commit := strings.TrimSpace(run(t, nil, "git", "rev-parse", "HEAD"))
	if out := run(t, nil, bin, "version"); !strings.Contains(out, "commit:   "+commit) {
		t.Errorf("apiguard version does not name commit %s:\n%s", commit, out)
	}

	// an edited configuration survives a second install
	pol := filepath.Join(root, "etc/apiguard/policy.yaml")
	if err := os.WriteFile(pol, []byte("# edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, nil, "make", "--no-print-directory", "install", "DESTDIR="+root, "PREFIX=/opt/ag")
	if string(read(t, pol)) != "# edited\n" {
		t.Error("make install overwrote the operator's policy")
	}
	run(t, nil, "make", "--no-print-directory", "uninstall", "DESTDIR="+root, "PREFIX=/opt/ag")
	if left := files(t, root); !slices.Equal(left, []string{"/etc/apiguard/policy.yaml", "/etc/default/apiguard"}) {
		t.Errorf("after make uninstall: %v, want only the configuration", left)
	}
}

// TestDebPackage builds the .deb with nfpm (make deb) and installs, removes
// and purges it with dpkg in a throwaway root: the host's dpkg database and
// files are not touched, and the maintainer scripts (run outside a chroot,
// with DPKG_ROOT set) leave the host's systemd and pins alone.
func TestDebPackage(t *testing.T) {
	testenv.RequireRoot(t) // dpkg --root writes files owned by root
	testenv.RequireTool(t, "dpkg")
	out := run(t, nil, "make", "--no-print-directory", "deb")
	var deb string
	for _, l := range strings.Split(out, "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(l), "created package: "); ok {
			deb = p // relative to the repository root, where run runs
		}
	}
	if deb == "" {
		t.Fatalf("make deb named no package:\n%s", out)
	}
	info := run(t, nil, "dpkg-deb", "--info", deb)
	for _, want := range []string{"Package: apiguard", "conffiles", "postinst", "prerm", "postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(filepath.Join("..", deb))
	if err != nil {
		t.Fatal(err)
	}
	dpkg := func(args ...string) string {
		return run(t, nil, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless"}, args...)...)
	}
	dpkg("-i", abs)
	got := files(t, root)
	for _, want := range []string{"/usr/bin/apiguard", "/lib/systemd/system/apiguard.service", "/etc/apiguard/policy.yaml",
		"/etc/default/apiguard", "/usr/share/man/man1/apiguard.1.gz", "/usr/share/doc/apiguard/copyright"} {
		if !slices.Contains(got, want) {
			t.Errorf("dpkg -i did not install %s", want)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "var/lib/apiguard")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v %v", fi, err)
	}
	checkEnvFileMode(t, root)
	if unit := string(read(t, filepath.Join(root, "lib/systemd/system/apiguard.service"))); !strings.Contains(unit, "ExecStart=/usr/bin/apiguard daemon") {
		t.Errorf("the packaged unit does not run /usr/bin/apiguard")
	}
	if st := dpkg("-s", "apiguard"); !strings.Contains(st, "Status: install ok installed") {
		t.Fatalf("dpkg -s: %s", st)
	}
	dpkg("-r", "apiguard")
	if left := files(t, root); !slices.Equal(left, []string{"/etc/apiguard/policy.yaml", "/etc/default/apiguard"}) {
		t.Errorf("after dpkg -r: %v, want only the configuration files", left)
	}
	dpkg("-P", "apiguard")
	if left := files(t, root); len(left) != 0 {
		t.Errorf("after dpkg -P: %v left", left)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/apiguard")); !os.IsNotExist(err) {
		t.Errorf("state directory after purge: %v", err)
	}
}

// TestVersionFromBuildInfo: a binary built without the Makefile's -ldflags
// (go build or go install in a clone) still names its commit, from the VCS
// stamp of Go's build info. The build runs in a fresh local clone of HEAD:
// Go does not stamp builds in a git worktree (.git is a file there), and
// this machine's GOFLAGS turn stamping off, so -buildvcs=true is explicit.
func TestVersionFromBuildInfo(t *testing.T) {
	testenv.RequireTool(t, "git")
	commit := strings.TrimSpace(run(t, nil, "git", "rev-parse", "HEAD"))
	clone := filepath.Join(t.TempDir(), "src")
	run(t, nil, "git", "clone", "--quiet", "--no-checkout", "--shared", ".", clone)
	run(t, nil, "git", "-C", clone, "checkout", "--quiet", commit)
	bin := filepath.Join(t.TempDir(), "apiguard")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "./cmd/apiguard")
	build.Dir = clone
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build in a clone: %v\n%s", err, out)
	}
	out := run(t, nil, bin, "version")
	if !strings.Contains(out, "commit:   "+commit+"\n") || strings.Contains(out, "date:     unknown") {
		t.Errorf("apiguard version built by go build does not name commit %s and its date:\n%s", commit, out)
	}
}
