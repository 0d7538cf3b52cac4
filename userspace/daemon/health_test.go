package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/metrics"
	"golang.org/x/sys/unix"
)

// health runs d.Health in ns (attachments are looked up there) and returns
// the checks by name.
func health(t *testing.T, d *Daemon, ns *netns.Namespace) map[string]metrics.Check {
	t.Helper()
	var cs []metrics.Check
	if err := ns.Do(func() error { cs = d.Health(); return nil }); err != nil {
		t.Fatal(err)
	}
	out := map[string]metrics.Check{}
	for _, c := range cs {
		out[c.Name] = c
	}
	if len(out) != 3 {
		t.Fatalf("checks %+v, want events, policy and attachments", cs)
	}
	return out
}

func wantHealth(t *testing.T, got map[string]metrics.Check, failing string, detail string) {
	t.Helper()
	for name, c := range got {
		if bad := name == failing; c.OK == bad {
			t.Errorf("%s: ok=%v (%s)", name, c.OK, c.Detail)
		}
	}
	if failing != "" && !strings.Contains(got[failing].Detail, detail) {
		t.Errorf("%s: %q, want it to say %q", failing, got[failing].Detail, detail)
	}
}

// TestHealthFailsWhenItShould drives /healthz's checks against a real
// datapath attached to a veth: each one passes while its part works and
// fails when it stops (no policy yet, the kernel refusing a policy, the
// event reader gone, a hook removed behind the daemon's back).
func TestHealthFailsWhenItShould(t *testing.T) {
	testenv.RequireRoot(t)
	a, err := netns.New("aghla")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := netns.New("aghlb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	_, lb, err := netns.Veth(a, b, 78)
	if err != nil {
		t.Fatal(err)
	}
	pinDir := testPinDir(t)
	d := startBans(t, pinDir, t.TempDir())
	d.cfg.Ifaces = []string{lb.Name}

	wantHealthFailing := func(name, detail string) { t.Helper(); wantHealth(t, health(t, d, b), name, detail) }
	got := health(t, d, b)
	for _, name := range []string{"events", "policy", "attachments"} {
		if got[name].OK {
			t.Errorf("before start: %s ok (%s)", name, got[name].Detail)
		}
	}

	p, err := parseUpload(&control.PolicyUpload{Name: "h.yaml", Source: "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata: {name: h}\nspec: {}\n"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.apply(p, "test"); err != nil {
		t.Fatal(err)
	}
	if err := b.Do(d.attach); err != nil {
		t.Fatal(err)
	}
	if err := d.startTelemetry(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.tel.reader.Close() })
	wantHealthFailing("", "")

	// the kernel refused the latest policy write (simulated: the loader's
	// own errors are tested in package loader); the one in force stays
	d.polMu.Lock()
	d.applyErr = errors.New("update lists4: no space left on device")
	d.polMu.Unlock()
	wantHealthFailing("policy", "the kernel refused the latest policy: update lists4")
	if _, err := d.apply(p, "test"); err != nil {
		t.Fatal(err)
	}
	wantHealthFailing("", "")

	// the hook goes behind the daemon's back: its pin was the last reference
	if err := os.Remove(filepath.Join(pinDir, "links", "native_"+lb.Name)); err != nil {
		t.Fatal(err)
	}
	wantHealthFailing("attachments", "1 of 1")
	// A pin's removal releases its link from a kernel workqueue: the old
	// hook may hold the interface a moment longer (EBUSY).
	err = b.Do(d.attach)
	for deadline := time.Now().Add(2 * time.Second); errors.Is(err, unix.EBUSY) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		err = b.Do(d.attach)
	}
	if err != nil {
		t.Fatal(err)
	}
	wantHealthFailing("", "")

	// the event reader stops
	if err := d.tel.reader.Close(); err != nil {
		t.Fatal(err)
	}
	wantHealthFailing("events", "the ring-buffer reader stopped")
}
