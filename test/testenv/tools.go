package testenv

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"testing"

	"github.com/apiguard/apiguard/test/bench/trafgen"
	"golang.org/x/sys/unix"
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
	Missing(tb, name+" is not installed (apt-get install "+name+")")
	return ""
}

// RequireCPUs stops the test unless n CPUs are online: it skips on a smaller
// machine, but under CI=true a skip would hide an untested kernel path.
func RequireCPUs(tb testing.TB, n int) {
	tb.Helper()
	if have := runtime.NumCPU(); have < n {
		Missing(tb, fmt.Sprintf("needs %d CPUs, this machine has %d", n, have))
	}
}

// OnOneCPU keeps the calling goroutine on CPU 0 until the test ends: for tests
// that count what per-CPU datapath state (event throttling) lets through,
// where a thread migration would legitimately change the count.
func OnOneCPU(tb testing.TB) {
	tb.Helper()
	runtime.LockOSThread()
	var orig, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("read CPU affinity: %v", err)
	}
	one.Set(0)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("pin to CPU 0: %v", err)
	}
	tb.Cleanup(func() {
		unix.SchedSetaffinity(0, &orig)
		runtime.UnlockOSThread()
	})
}

// RequireLiveFrames stops a test of the live-frames generator where the kernel
// refuses BPF_PROG_TEST_RUN in live-frames mode. It skips saying why, also
// under CI=true: no setting makes such a kernel run it, and the generators that
// replace it are tested on their own. Any other failure of the probe fails.
func RequireLiveFrames(tb testing.TB) {
	tb.Helper()
	RequireRoot(tb)
	err := trafgen.ProbeLiveFrames()
	if errors.Is(err, trafgen.ErrLiveFramesRefused) {
		tb.Skipf("cannot run here: %v", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
}
