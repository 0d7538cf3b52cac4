package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return Config{Ifaces: []string{"eth0"}, PolicyPath: "p.yaml", PinDir: "/sys/fs/bpf/x", Socket: "/run/x.sock", StateDir: "/var/lib/x"}
	}
	if _, err := New(good()); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no iface", func(c *Config) { c.Ifaces = nil }, "give at least one --iface"},
		{"twice", func(c *Config) { c.Ifaces = []string{"eth0", "eth0"} }, "eth0 is given twice"},
		{"long name", func(c *Config) { c.Ifaces = []string{"a-very-long-interface"} }, "longer than 15 bytes"},
		{"slash", func(c *Config) { c.Ifaces = []string{"eth/0"} }, "not a valid interface name"},
		{"no policy", func(c *Config) { c.PolicyPath = "" }, "give --policy FILE"},
		{"attach", func(c *Config) { c.Attach = "fast" }, `unknown attach mode "fast"`},
		{"relative bpffs", func(c *Config) { c.PinDir = "pins" }, `--bpffs "pins": want an absolute path`},
		{"metrics", func(c *Config) { c.MetricsAddr = "9470" }, `--metrics-addr "9470"`},
		{"tiny flow table", func(c *Config) { c.FlowCapacity = 10 }, "--flow-capacity 10: want 1024 to 16777216 connections"},
		{"flow sweep", func(c *Config) { c.FlowSweepEvery = -time.Second }, "flow sweep interval -1s is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			_, err := New(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	// every problem is reported at once
	_, err := New(Config{})
	if err == nil || !strings.Contains(err.Error(), "--iface") || !strings.Contains(err.Error(), "--policy") {
		t.Errorf("empty config: %v", err)
	}
}

func TestRunAllFirstErrorStopsTheRest(t *testing.T) {
	boom := errors.New("boom")
	var stopped atomic.Int32
	waitForCancel := func(ctx context.Context) error {
		<-ctx.Done()
		stopped.Add(1)
		return nil
	}
	err := runAll(context.Background(), slog.New(slog.DiscardHandler), []component{
		{"a", waitForCancel},
		{"b", func(context.Context) error { return boom }},
		{"c", waitForCancel},
	})
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "b: ") {
		t.Errorf("err = %v, want b's error", err)
	}
	if stopped.Load() != 2 {
		t.Errorf("%d components saw the cancel, want 2", stopped.Load())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := runAll(ctx, slog.New(slog.DiscardHandler), []component{{"a", waitForCancel}}); err != nil {
		t.Errorf("a clean stop returned %v", err)
	}
}

func TestJSONState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.json")
	var v map[string]int
	found, err := readJSONFile(path, &v)
	if found || err != nil {
		t.Fatalf("missing file: found=%v err=%v", found, err)
	}
	if err := writeJSONFile(path, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if found, err := readJSONFile(path, &v); !found || err != nil || v["a"] != 1 {
		t.Fatalf("read back: %v %v %v", found, err, v)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readJSONFile(path, &v); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
		t.Errorf("damaged file: %v", err)
	}
}

func TestParseUpload(t *testing.T) {
	src := `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: up}
spec:
  denyFiles: [lists/deny.txt]
`
	p, err := parseUpload(&control.PolicyUpload{Name: "p.yaml", Source: src, Files: map[string]string{"lists/deny.txt": "192.0.2.0/24\n198.51.100.7\n"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.pol.Name != "up" || len(p.pol.Spec.Deny) != 2 {
		t.Errorf("parsed %+v", p.pol.Spec.Deny)
	}
	// the daemon never falls back to its own file system for a missing list
	_, err = parseUpload(&control.PolicyUpload{Name: "p.yaml", Source: src})
	var pe *control.PolicyError
	if !errors.As(err, &pe) || len(pe.Problems) != 1 {
		t.Fatalf("err = %v, want one problem", err)
	}
	if got := pe.Problems[0]; got.File != "p.yaml" || got.Line != 5 || !strings.Contains(got.Message, "lists/deny.txt was not sent with the policy") {
		t.Errorf("problem = %+v", got)
	}
	// problems inside a list file name that file and line
	_, err = parseUpload(&control.PolicyUpload{Name: "p.yaml", Source: src, Files: map[string]string{"lists/deny.txt": "192.0.2.0/24\nnot-a-cidr\n"}})
	if !errors.As(err, &pe) || len(pe.Problems) != 1 || pe.Problems[0].File != "lists/deny.txt" || pe.Problems[0].Line != 2 {
		t.Errorf("err = %v, want a problem at lists/deny.txt:2", err)
	}
}

func TestSourceCodes(t *testing.T) {
	for _, s := range []string{SourceManual, SourceDetector} {
		if got := sourceName(sourceCode(s)); got != s {
			t.Errorf("source %q comes back as %q", s, got)
		}
	}
	if sourceCode("something else") != 0 || sourceName(0) != sourceUnknown || sourceName(99) != sourceUnknown {
		t.Error("unknown sources must map to code 0 and back to unknown")
	}
}

func TestLockPinDir(t *testing.T) {
	dir := t.TempDir()
	if inUse, err := PinDirInUse(dir); inUse || err != nil {
		t.Fatalf("free dir: inUse=%v err=%v", inUse, err)
	}
	unlock, err := LockPinDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockPinDir(dir); err == nil || !strings.Contains(err.Error(), "another apiguard daemon") {
		t.Errorf("second lock: %v", err)
	}
	if inUse, err := PinDirInUse(dir); !inUse || err != nil {
		t.Errorf("locked dir: inUse=%v err=%v", inUse, err)
	}
	unlock()
	if inUse, err := PinDirInUse(dir); inUse || err != nil {
		t.Errorf("unlocked dir: inUse=%v err=%v", inUse, err)
	}
	if inUse, err := PinDirInUse(filepath.Join(dir, "none")); inUse || err != nil {
		t.Errorf("missing dir: inUse=%v err=%v", inUse, err)
	}
}

// testPinDir is a fresh bpffs directory that is detached and removed when the
// test ends.
func testPinDir(t testing.TB) string {
	t.Helper()
	dir := fmt.Sprintf("/sys/fs/bpf/apiguard-daemon-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		if err := loader.Detach(dir); err != nil {
			t.Errorf("clean up %s: %v", dir, err)
		}
	})
	return dir
}

// startBans loads (or adopts) the datapath at pinDir and opens the ban book in
// stateDir, as Run does, without attaching anywhere.
func startBans(t testing.TB, pinDir, stateDir string) *Daemon {
	t.Helper()
	d, err := New(Config{Ifaces: []string{"lo"}, PolicyPath: "unused.yaml", PinDir: pinDir, StateDir: stateDir,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.load(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.dp.Close() })
	if err := d.openBans(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.bans.close() })
	return d
}

func banByPrefix(t *testing.T, d *Daemon, p string) (control.Ban, bool) {
	t.Helper()
	bans, err := d.listBans(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bans {
		if b.Prefix == p {
			return b, true
		}
	}
	return control.Ban{}, false
}

// TestBanReasonsSurviveRestarts drives the ban book against a real datapath:
// reasons outlive the daemon, bans made behind its back read "unknown", and
// bans lost with the maps come back from the state directory.
func TestBanReasonsSurviveRestarts(t *testing.T) {
	testenv.RequireRoot(t)
	pinDir, stateDir := testPinDir(t), t.TempDir()

	d := startBans(t, pinDir, stateDir)
	if _, err := d.Ban(netip.MustParsePrefix("192.0.2.7/32"), 10*time.Minute, "scanner", SourceManual); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Ban(netip.MustParsePrefix("2001:db8::/48"), 0, "flood", SourceDetector); err != nil {
		t.Fatal(err)
	}
	// a ban written into the map by something other than the daemon
	if err := d.dp.Ban(loader.Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := d.dp.Close(); err != nil {
		t.Fatal(err)
	}

	// a restart adopts the pinned maps and reads the reasons back
	d = startBans(t, pinDir, stateDir)
	if !d.dp.Adopted() {
		t.Fatal("the second load did not adopt the pinned maps")
	}
	b, ok := banByPrefix(t, d, "192.0.2.7/32")
	if !ok || b.Reason != "scanner" || b.Source != SourceManual || b.Expires == nil || b.Created == nil {
		t.Errorf("manual ban after restart: %+v (found %v)", b, ok)
	}
	if until := time.Until(*b.Expires); until < 9*time.Minute || until > 10*time.Minute {
		t.Errorf("manual ban expires in %v, want about 10m", until)
	}
	b, ok = banByPrefix(t, d, "2001:db8::/48")
	if !ok || b.Reason != "flood" || b.Source != SourceDetector || b.Expires != nil {
		t.Errorf("detector ban after restart: %+v (found %v)", b, ok)
	}
	b, ok = banByPrefix(t, d, "198.51.100.0/24")
	if !ok || b.Reason != "unknown" || b.Source != sourceUnknown {
		t.Errorf("foreign ban: %+v (found %v)", b, ok)
	}

	if err := d.Unban(netip.MustParsePrefix("192.0.2.7/32")); err != nil {
		t.Fatal(err)
	}
	if err := d.Unban(netip.MustParsePrefix("192.0.2.7/32")); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("second unban: %v, want ErrNotFound", err)
	}
	if err := d.dp.Close(); err != nil {
		t.Fatal(err)
	}

	// the maps are lost (a reboot, a detach): the book restores what it knows
	if err := loader.Detach(pinDir); err != nil {
		t.Fatal(err)
	}
	d = startBans(t, pinDir, stateDir)
	if d.dp.Adopted() {
		t.Fatal("fresh maps reported as adopted")
	}
	bans, err := d.listBans(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(bans) != 1 || bans[0].Prefix != "2001:db8::/48" || bans[0].Reason != "flood" {
		t.Errorf("bans after the maps were lost: %+v, want only the detector's ban restored", bans)
	}
}

func TestSweepForgetsExpiredBans(t *testing.T) {
	testenv.RequireRoot(t)
	d := startBans(t, testPinDir(t), t.TempDir())
	if _, err := d.Ban(netip.MustParsePrefix("192.0.2.1/32"), time.Second, "short", SourceManual); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Ban(netip.MustParsePrefix("192.0.2.2/32"), time.Hour, "long", SourceManual); err != nil {
		t.Fatal(err)
	}
	// sweep as if two seconds had passed: no waiting in the test
	if err := d.sweepOnce(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	kernel, err := d.dp.Bans()
	if err != nil {
		t.Fatal(err)
	}
	if len(kernel) != 1 || kernel[0].Prefix.String() != "192.0.2.2/32" {
		t.Errorf("kernel bans after the sweep: %+v", kernel)
	}
	if _, ok := d.bans.recs[netip.MustParsePrefix("192.0.2.1/32")]; ok {
		t.Error("the swept ban's record is still in the book")
	}
	// what the journal replays
	book, err := openBook(filepath.Dir(d.bans.path), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer book.close()
	if len(book.recs) != 1 || book.recs[netip.MustParsePrefix("192.0.2.2/32")].Reason != "long" {
		t.Errorf("saved book after the sweep: %+v", book.recs)
	}
}

func TestAllowListedClientsAreNotBanned(t *testing.T) {
	testenv.RequireRoot(t)
	d := startBans(t, testPinDir(t), t.TempDir())
	p, err := parseUpload(&control.PolicyUpload{Name: "allow.yaml", Source: `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: allow}
spec:
  allow: [192.0.2.0/24, "2001:db8::/32"]
`})
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.apply(p, "test")
	if err != nil {
		t.Fatal(err)
	}
	if res.Generation == 0 || !res.KernelChanged {
		t.Errorf("apply: %+v", res)
	}
	if d.CurrentPolicy() == nil || d.CurrentPolicy().Name != "allow" {
		t.Errorf("CurrentPolicy = %+v", d.CurrentPolicy())
	}
	for addr, want := range map[string]bool{
		"192.0.2.9": true, "::ffff:192.0.2.9": true, "2001:db8::1": true, "198.51.100.1": false, "2001:db9::1": false,
	} {
		if got := d.IsAllowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("IsAllowed(%s) = %v, want %v", addr, got, want)
		}
	}
	_, err = d.Ban(netip.MustParsePrefix("192.0.2.9/32"), time.Minute, "nope", SourceDetector)
	if !errors.Is(err, control.ErrInvalid) || !strings.Contains(err.Error(), "allow list (192.0.2.0/24)") {
		t.Errorf("ban of an allow-listed address: %v", err)
	}
	// a wider ban that only overlaps the allow list still bans the rest
	if _, err := d.Ban(netip.MustParsePrefix("192.0.0.0/16"), time.Minute, "wide", SourceManual); err != nil {
		t.Errorf("ban of a prefix around the allow list: %v", err)
	}
	// applying the same policy again changes nothing
	res, err = d.apply(p, "test")
	if err != nil || res.Changed || res.KernelChanged {
		t.Errorf("re-apply: %+v, %v", res, err)
	}
}
