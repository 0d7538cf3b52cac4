// Package promcheck runs promtool (Debian's prometheus package) from tests:
// metrics output and alerting rules must pass its checks. Without promtool a
// test skips on a laptop; under CI=true a missing promtool is a failure.
package promcheck

import (
	"bytes"
	"os/exec"
	"testing"

	"github.com/apiguard/apiguard/test/testenv"
)

// Path returns promtool's path or stops the test.
func Path(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	testenv.Missing(tb, "promtool is not installed (apt-get install prometheus)")
	return ""
}

// Metrics runs `promtool check metrics` on an exposition and fails the test
// with promtool's complaints.
func Metrics(tb testing.TB, exposition []byte) {
	tb.Helper()
	cmd := exec.Command(Path(tb), "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// Run runs promtool with args and fails the test with its output on error.
func Run(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(Path(tb), args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("promtool %v: %v\n%s", args, err, out)
	}
	return string(out)
}
