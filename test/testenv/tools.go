package testenv

import (
	"fmt"
	"os/exec"
	"runtime"
	"testing"
)

// RequireTool returns the path of a program the test drives (nginx...), or
// stops the test: it skips without it, but under CI=true (where .ci/run
// installs it) its absence is a failure.
func RequireTool(tb testing.TB, name string) string {
	tb.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	missing(tb, name+" is not installed (apt-get install "+name+")")
	return ""
}

// RequireCPUs stops the test unless n CPUs are online: it skips on a smaller
// machine, but under CI=true a skip would hide an untested kernel path.
func RequireCPUs(tb testing.TB, n int) {
	tb.Helper()
	if have := runtime.NumCPU(); have < n {
		missing(tb, fmt.Sprintf("needs %d CPUs, this machine has %d", n, have))
	}
}
