package privs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/test/testenv"
	"golang.org/x/sys/unix"
)

// The drop runs in a child process (this test binary again): a test must not
// take capabilities away from the tests after it.
func TestMain(m *testing.M) {
	if os.Getenv("PRIVS_TEST_CHILD") == "1" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

// child drops AfterStart with many threads running and prints each thread's
// permitted set as /proc shows it, then Held's view.
func child() int {
	done := make(chan struct{})
	for range 8 {
		go func() { <-done }() // threads that exist before the drop
	}
	dropped, err := Drop(AfterStart...)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("dropped:", strings.Join(dropped, ","))
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "CapPrm:\t"); ok {
				fmt.Println("thread:", v)
			}
		}
	}
	held, _ := Held()
	fmt.Println("held:", strings.Join(held, ","))
	close(done)
	// uid 0 gets its bounding set back from any execve, unless no_new_privs
	// holds it to what it has
	out, err := exec.Command("cat", "/proc/self/status").Output()
	if err != nil {
		fmt.Println("error: exec after the drop:", err)
		return 1
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "CapPrm:\t"); ok {
			fmt.Println("exec:", v)
		}
	}
	return 0
}

// runChild runs the child in bin and returns what it printed.
func runChild(t *testing.T, bin string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "PRIVS_TEST_CHILD=1")
	return cmd.CombinedOutput()
}

// cgoLinked says whether this test binary links cgo (test helpers may
// bring it in through the net package).
func cgoLinked() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return true
	}
	for _, s := range bi.Settings {
		if s.Key == "CGO_ENABLED" {
			return s.Value == "1"
		}
	}
	return false
}

func TestDropOnEveryThread(t *testing.T) {
	testenv.RequireRoot(t)
	bin := os.Args[0]
	if cgoLinked() {
		// with cgo the drop is refused, and says why
		if out, err := runChild(t, bin); err == nil || !strings.Contains(string(out), "built with cgo") {
			t.Errorf("with cgo: %v\n%s", err, out)
		}
		// the daemon is built without it: so is the binary that tests the drop
		bin = filepath.Join(t.TempDir(), "privs.test")
		build := exec.Command("go", "test", "-c", "-o", bin, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build without cgo: %v\n%s", err, out)
		}
	}
	out, err := runChild(t, bin)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var threads, execed []uint64
	var dropped, held []string
	for _, l := range strings.Split(string(out), "\n") {
		switch k, v, _ := strings.Cut(l, ": "); k {
		case "dropped":
			dropped = strings.Split(v, ",")
		case "held":
			held = strings.Split(v, ",")
		case "thread":
			n, err := strconv.ParseUint(v, 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			threads = append(threads, n)
		case "exec":
			n, err := strconv.ParseUint(v, 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			execed = append(execed, n)
		}
	}
	for _, c := range []string{"CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"} {
		if !slices.Contains(dropped, c) || slices.Contains(held, c) {
			t.Errorf("%s: dropped %v, held %v", c, dropped, held)
		}
	}
	if !slices.Contains(held, "CAP_BPF") {
		t.Errorf("CAP_BPF went: held %v", held)
	}
	gone := uint64(1)<<unix.CAP_PERFMON | 1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_SYS_ADMIN | 1<<unix.CAP_SYS_RESOURCE
	if len(threads) < 2 {
		t.Fatalf("only %d threads seen:\n%s", len(threads), out)
	}
	for i, p := range threads {
		if p&gone != 0 || p&(1<<unix.CAP_BPF) == 0 {
			t.Errorf("thread %d of %d: CapPrm %x", i, len(threads), p)
		}
	}
	// the test runs as root outside systemd's NoNewPrivileges: what the
	// daemon dropped, a program it runs must not hold again
	if len(execed) != 1 {
		t.Fatalf("no capabilities read from a program run after the drop:\n%s", out)
	}
	if execed[0]&gone != 0 {
		t.Errorf("a program run after the drop holds CapPrm %x: %x of it was dropped", execed[0], execed[0]&gone)
	}
}

func TestName(t *testing.T) {
	if Name(unix.CAP_BPF) != "CAP_BPF" || Name(unix.CAP_NET_ADMIN) != "CAP_NET_ADMIN" || Name(99) != "CAP_99" {
		t.Error(Name(unix.CAP_BPF), Name(unix.CAP_NET_ADMIN), Name(99))
	}
}
