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

	"github.com/apiguard/apiguard/loader"
)

// Names of what a lab creates carry the pid of the process that made it.
const (
	nsPrefix  = "aglab-"        // namespaces: aglab-<pid>-<role>-<random>
	pinPrefix = "apiguard-lab-" // pins: /sys/fs/bpf/apiguard-lab-<pid>-<random>
)

var (
	staleNS  = regexp.MustCompile(`^` + nsPrefix + `([0-9]+)-[a-z]+-[0-9a-f]{8}$`)
	stalePin = regexp.MustCompile(`^` + pinPrefix + `([0-9]+)-[0-9a-f]{8}$`)
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
