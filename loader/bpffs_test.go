package loader

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/test/testenv"
)

// TestPinsOutliveUs: the pins outlive the daemon when PID 1's mounts hold the
// bpffs they are on, whoever mounted it; otherwise the reason says so.
func TestPinsOutliveUs(t *testing.T) {
	testenv.RequireRoot(t)
	dir := filepath.Join(bpffsRoot, "apiguard-scope-test-none") // need not exist
	if w := pinsOutliveUs(dir, false, "/proc/self/mountinfo"); w != "" {
		t.Errorf("the host's bpffs: %q", w)
	}
	if w := pinsOutliveUs(dir, true, "/proc/self/mountinfo"); w != "" {
		t.Errorf("a bpffs mounted here, in PID 1's namespace: %q", w)
	}
	// PID 1's mounts without it
	self, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(self), "\n") {
		if !strings.Contains(l, " - bpf ") {
			kept = append(kept, l)
		}
	}
	other := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(other, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mounted := range []bool{false, true} {
		w := pinsOutliveUs(dir, mounted, other)
		if !strings.Contains(w, "go when the daemon exits, even by kill -9") || !strings.Contains(w, "nsenter --net=/run/netns/NAME") ||
			strings.Contains(w, "mounted by this process") != mounted {
			t.Errorf("mounted=%v, PID 1 without the bpffs: %q", mounted, w)
		}
	}
	// PID 1's mounts unreadable: a warning only if the mount is ours
	if w := pinsOutliveUs(dir, false, filepath.Join(t.TempDir(), "none")); w != "" {
		t.Errorf("not ours, unknown: %q", w)
	}
	if w := pinsOutliveUs(dir, true, filepath.Join(t.TempDir(), "none")); !strings.Contains(w, "cannot read PID 1's mounts") {
		t.Errorf("ours, unknown: %q", w)
	}
}
