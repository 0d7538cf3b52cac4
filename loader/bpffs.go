package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const bpffsRoot = "/sys/fs/bpf"

// PinScope is what EnsureBPFFS found out about the bpffs that holds the pins.
type PinScope struct {
	// Mounted is true when EnsureBPFFS mounted the bpffs itself.
	Mounted bool
	// Ephemeral says why the pins cannot outlive this process ("" when they
	// can): a bpffs that only this process's mount namespace holds goes with
	// the namespace, that is with the last process in it, and every pin,
	// hence every program and map, with it.
	Ephemeral string
}

// EnsureBPFFS makes sure dir can hold pins: its nearest existing ancestor must
// be on a bpf filesystem. /sys/fs/bpf is mounted when it is not (minimal hosts
// and containers often lack it); any other location must already be bpffs.
// It then checks that the pins can outlive this process (PinScope.Ephemeral).
func EnsureBPFFS(dir string) (PinScope, error) {
	mounted, err := ensureBPFFS(dir)
	if err != nil {
		return PinScope{Mounted: mounted}, err
	}
	return PinScope{Mounted: mounted, Ephemeral: pinsOutliveUs(dir, mounted, "/proc/1/mountinfo")}, nil
}

func ensureBPFFS(dir string) (bool, error) {
	dir = filepath.Clean(dir)
	probe := dir
	for {
		if _, err := os.Stat(probe); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("check %s: %w", probe, err)
		}
		parent := filepath.Dir(probe)
		if parent == probe {
			break
		}
		probe = parent
	}
	var st unix.Statfs_t
	if err := unix.Statfs(probe, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", probe, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return false, nil
	}
	if probe != bpffsRoot && !isUnder(dir, bpffsRoot) {
		return false, fmt.Errorf("%s is not on a bpf filesystem (mount one with 'mount -t bpf bpf DIR')", dir)
	}
	if err := os.MkdirAll(bpffsRoot, 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", bpffsRoot, err)
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs at %s: %w", bpffsRoot, err)
	}
	return true, nil
}

// initPIDNamespace is the inode of the initial PID namespace
// (PROC_PID_INIT_INO): fixed by the kernel.
const initPIDNamespace = 0xEFFFFFFC

const pinAdvice = "; for a network namespace run the daemon with `nsenter --net=/run/netns/NAME` (not `ip netns exec`), or mount bpffs at /sys/fs/bpf on the host first"

// pinsOutliveUs says why the pins under dir will not outlive this process,
// or "" when they will: the bpffs holding them is mounted in the mount
// namespace of PID 1 (pid1Mounts is its mountinfo), so the host keeps it.
//
// `ip netns exec` runs its command in a mount namespace of its own (to mount
// a /sys of the network namespace), where /sys/fs/bpf is no bpffs: the one
// the daemon mounts there is seen by no other process and goes when the
// daemon exits, even by kill -9. In a container, the container's mount
// namespace goes with the container. The check compares file systems (the
// device numbers mountinfo shows), not mounts: the host's bpffs bind-mounted
// into a container is the same file system.
func pinsOutliveUs(dir string, mounted bool, pid1Mounts string) string {
	if mounted {
		var pidNS unix.Stat_t
		if err := unix.Stat("/proc/self/ns/pid", &pidNS); err == nil && pidNS.Ino != initPIDNamespace {
			return "this process mounted the bpffs holding the pins inside a container (a PID namespace of its own): pins and enforcement go with the container" + pinAdvice
		}
	}
	dev, err := bpffsDevice(dir)
	if err != nil {
		if mounted {
			return fmt.Sprintf("this process mounted the bpffs holding the pins and cannot tell whether the host sees it (%v)%s", err, pinAdvice)
		}
		return ""
	}
	data, err := os.ReadFile(pid1Mounts)
	if err != nil {
		if mounted {
			return fmt.Sprintf("this process mounted the bpffs holding the pins and cannot read PID 1's mounts to see whether it is the host's (%v)%s", err, pinAdvice)
		}
		return "" // someone else mounted it: theirs to keep
	}
	for _, line := range strings.Split(string(data), "\n") {
		// ID parent major:minor root mountpoint options [optional...] - fstype source super
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != dev {
			continue
		}
		for i := 3; i+1 < len(f); i++ {
			if f[i] == "-" && f[i+1] == "bpf" {
				return ""
			}
		}
	}
	who := "in a mount namespace other than PID 1's"
	if mounted {
		who = "by this process " + who
	}
	return fmt.Sprintf("the bpffs holding the pins (device %s) was mounted %s: pins, programs and maps go when the daemon exits, even by kill -9%s", dev, who, pinAdvice)
}

// bpffsDevice is the major:minor of the bpffs dir is on (of its nearest
// existing ancestor), as mountinfo writes it.
func bpffsDevice(dir string) (string, error) {
	probe := filepath.Clean(dir)
	for {
		var st unix.Stat_t
		err := unix.Stat(probe, &st)
		if err == nil {
			return fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)), nil
		}
		if !errors.Is(err, unix.ENOENT) || filepath.Dir(probe) == probe {
			return "", fmt.Errorf("stat %s: %w", probe, err)
		}
		probe = filepath.Dir(probe)
	}
}

func isUnder(path, root string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !filepath.IsAbs(rel) && (len(rel) < 3 || rel[:3] != "../")
}
