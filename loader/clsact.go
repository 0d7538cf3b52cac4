package loader

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The netlink clsact path, for kernels (or setups) without TCX: a direct-action
// bpf filter named tcFilterName on the ingress or egress hook. The filter holds
// its program, so it outlives this process; bpffs holds only BPF objects, so a
// pinned clone of the program marks the interface for Detach.

// installClsactFilter adds the clsact qdisc if missing and installs prog on
// hook (netlink.HANDLE_MIN_INGRESS or HANDLE_MIN_EGRESS), replacing an earlier
// apiguard filter in place. It reports whether one was there already.
func installClsactFilter(dev *net.Interface, hook uint32, prog *ebpf.Program) (bool, error) {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: dev.Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	// add, not replace: the other hook's filter may already hang off this clsact
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("add clsact qdisc to %s: %w", dev.Name, err)
	}
	existed := false
	if filters, err := netlink.FilterList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: dev.Index}}, hook); err == nil {
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == tcFilterName {
				existed = true
			}
		}
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: dev.Index,
			Parent:    hook,
			Handle:    1,
			Protocol:  unix.ETH_P_ALL,
			Priority:  1,
		},
		Fd:           prog.FD(),
		Name:         tcFilterName,
		DirectAction: true,
	}
	if err := netlink.FilterReplace(filter); err != nil {
		return existed, fmt.Errorf("add bpf filter to %s: %w", dev.Name, err)
	}
	return existed, nil
}

// pinClone pins a clone of prog at path: pinning one *Program at a second path
// would move its first pin.
func pinClone(prog *ebpf.Program, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	_ = os.Remove(path)
	clone, err := prog.Clone()
	if err != nil {
		return fmt.Errorf("clone program: %w", err)
	}
	defer clone.Close()
	if err := clone.Pin(path); err != nil {
		return fmt.Errorf("pin program %s: %w", path, err)
	}
	return nil
}

// removeClsactFilters deletes apiguard's filters from one hook of iface.
func removeClsactFilters(iface string, hook uint32) error {
	dev, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("find %s: %w", iface, err)
	}
	filters, err := netlink.FilterList(dev, hook)
	if err != nil {
		return fmt.Errorf("list filters of %s: %w", iface, err)
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == tcFilterName {
			if err := netlink.FilterDel(f); err != nil {
				return fmt.Errorf("delete filter on %s: %w", iface, err)
			}
		}
	}
	return nil
}
