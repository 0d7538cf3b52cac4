// Package testenv decides whether a test that needs the kernel may run here.
// On a laptop without root such tests skip; under CI=true a skip is a failure,
// so nothing green hides an untested kernel path.
package testenv

import (
	"os"
	"testing"
)

// RequireRoot stops the test unless it runs as root with bpffs available.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		if _, err := os.Stat("/sys/fs/bpf"); err == nil {
			return
		}
		Missing(tb, "bpffs is not mounted at /sys/fs/bpf")
		return
	}
	Missing(tb, "needs root for BPF and network namespaces")
}

// Missing stops a test that cannot run here for the reason why: a skip on a
// laptop, a failure under CI=true. Every helper that checks for something a
// test needs (a tool, a service) ends in it, so the rule lives in one place.
func Missing(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true and this test cannot run: %s", why)
	}
	tb.Skip(why)
}
