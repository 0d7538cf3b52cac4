package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/apiguard/apiguard/loader"
)

// Names of what a lab creates carry the pid of the process that made it.
const (
	nsPrefix  = "aglab-"        // namespaces: aglab-<pid>-<role>-<random>
	pinPrefix = "apiguard-lab-" // pins: /sys/fs/bpf/apiguard-lab-<pid>-<random>
)

// The lab's directory: os.TempDir()/apiguard-lab-<pid>-<random>.
const dirPrefix = "apiguard-lab-"

var (
	staleNS  = regexp.MustCompile(`^` + nsPrefix + `([0-9]+)-[a-z]+-[0-9a-f]{8}$`)
	stalePin = regexp.MustCompile(`^` + pinPrefix + `([0-9]+)-[0-9a-f]{8}$`)
	staleDir = regexp.MustCompile(`^` + dirPrefix + `([0-9]+)-[0-9]+$`)
)

// CleanStale removes the namespaces and pins of labs whose process is gone:
// what a lab killed with SIGKILL could not remove itself. Labs of running
// processes are left alone. It returns what it removed.
func CleanStale() ([]string, error) {
	var removed []string
	var errs []error
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if m := staleNS.FindStringSubmatch(f[0]); m != nil && !alive(m[1]) {
			// a daemon or role process that outlived the lab: end it first
			if pids, err := exec.Command("ip", "netns", "pids", f[0]).Output(); err == nil {
				for _, p := range strings.Fields(string(pids)) {
					if n, err := strconv.Atoi(p); err == nil && n > 1 {
						if err := syscall.Kill(n, syscall.SIGKILL); err == nil {
							removed = append(removed, fmt.Sprintf("process %d in %s", n, f[0]))
						}
					}
				}
			}
			if out, err := exec.Command("ip", "netns", "del", f[0]).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("remove namespace %s: %w: %s", f[0], err, out))
				continue
			}
			removed = append(removed, "namespace "+f[0])
		}
	}
	dirs, err := os.ReadDir("/sys/fs/bpf")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, d := range dirs {
		if m := stalePin.FindStringSubmatch(d.Name()); m != nil && !alive(m[1]) {
			p := filepath.Join("/sys/fs/bpf", d.Name())
			if err := loader.Detach(p); err != nil {
				errs = append(errs, fmt.Errorf("remove pins %s: %w", p, err))
				continue
			}
			removed = append(removed, "pins "+p)
		}
	}
	tmp, err := os.ReadDir(os.TempDir())
	if err != nil {
		errs = append(errs, err)
	}
	for _, d := range tmp {
		if m := staleDir.FindStringSubmatch(d.Name()); m != nil && d.IsDir() && !alive(m[1]) {
			p := filepath.Join(os.TempDir(), d.Name())
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, "directory "+p)
		}
	}
	return removed, errors.Join(errs...)
}

func alive(pid string) bool {
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		return false
	}
	_, err = os.Stat(fmt.Sprintf("/proc/%d", n))
	return err == nil
}
