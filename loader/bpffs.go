package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const bpffsRoot = "/sys/fs/bpf"

// EnsureBPFFS makes sure dir can hold pins: its nearest existing ancestor must
// be on a bpf filesystem. /sys/fs/bpf is mounted when it is not (minimal hosts
// and containers often lack it); any other location must already be bpffs.
func EnsureBPFFS(dir string) error {
	dir = filepath.Clean(dir)
	probe := dir
	for {
		if _, err := os.Stat(probe); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("check %s: %w", probe, err)
		}
		parent := filepath.Dir(probe)
		if parent == probe {
			break
		}
		probe = parent
	}
	var st unix.Statfs_t
	if err := unix.Statfs(probe, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", probe, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if probe != bpffsRoot && !isUnder(dir, bpffsRoot) {
		return fmt.Errorf("%s is not on a bpf filesystem (mount one with 'mount -t bpf bpf DIR')", dir)
	}
	if err := os.MkdirAll(bpffsRoot, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", bpffsRoot, err)
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", bpffsRoot, err)
	}
	return nil
}

func isUnder(path, root string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !filepath.IsAbs(rel) && (len(rel) < 3 || rel[:3] != "../")
}
