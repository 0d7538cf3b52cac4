package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// The egress hook: apiguard_egress sees the server's replies, so connections
// to services with connection caps are followed in both directions. XDP has no
// egress hook for locally sent traffic, so whatever the ingress mode, egress is
// TC: TCX where the kernel has it (6.6+), else a clsact filter. It never drops.
//
// Its pins live in links/egress/<tcx|tc>_<iface>: the directory name has no
// "_", so Attachments, which lists the ingress hooks, passes it by.

const egressDir = "egress"

func egressPinPath(pinDir string, mode AttachMode, iface string) string {
	return filepath.Join(pinDir, linksDir, egressDir, linkPinName(mode, iface))
}

func (d *Datapath) attachEgress(iface string, ingress AttachMode) error {
	dev, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("attach egress to %s: %w", iface, err)
	}
	if err := d.guardIface(dev.Index); err != nil {
		return fmt.Errorf("attach egress to %s: %w", iface, err)
	}
	if ingress != AttachTC {
		err := d.attachEgressTCX(dev)
		if err == nil || !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		slog.Info("the kernel has no TCX: the egress hook is a clsact filter", "iface", iface)
	}
	return d.attachEgressClsact(dev)
}

// guardIface records that the guard is on the interface of this index: a
// segment without a socket that came in through it and leaves through any
// guarded interface was routed through this host, and proves nothing
// (apiguard.c sender_of). An entry stays after a detach: such traffic then
// only proves nothing, the safe side.
func (d *Datapath) guardIface(index int) error {
	if err := d.objs.GuardedIfaces.Update(uint32(index), uint8(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("record guarded interface %d: %w", index, err)
	}
	return nil
}

func (d *Datapath) attachEgressTCX(dev *net.Interface) error {
	return d.attachSideTCX(dev, d.objs.ApiguardEgress, ebpf.AttachTCXEgress, egressDir)
}

// attachSideTCX puts prog on dev at the TCX hook attach, pinned under
// links/<dir>/tcx_<iface> (an earlier run's link there gets prog swapped in
// place): the egress hook, and the SYN proxy's ingress hand-over.
func (d *Datapath) attachSideTCX(dev *net.Interface, prog *ebpf.Program, attach ebpf.AttachType, dir string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	path := filepath.Join(d.opts.PinDir, linksDir, dir, linkPinName(AttachTCX, dev.Name))
	if d.opts.PinDir == "" && d.links[dir+"/"+linkPinName(AttachTCX, dev.Name)] != nil {
		return nil // this Datapath's program is on it already
	}
	if d.opts.PinDir != "" {
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			uerr := l.Update(prog)
			l.Close()
			if uerr == nil {
				return nil
			}
			slog.Warn("pinned link could not be updated; attaching afresh", "link", path, "err", uerr)
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove stale link pin %s: %w", path, err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open pinned link %s: %w", path, err)
		}
	}
	l, err := link.AttachTCX(link.TCXOptions{Program: prog, Interface: dev.Index, Attach: attach})
	if err != nil {
		return fmt.Errorf("attach TCX %s to %s: %w", dir, dev.Name, err)
	}
	if d.opts.PinDir == "" {
		name := dir + "/" + linkPinName(AttachTCX, dev.Name)
		if old, ok := d.links[name]; ok {
			old.Close()
		}
		d.links[name] = l
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		l.Close()
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return fmt.Errorf("pin %s link %s: %w", dir, path, err)
	}
	return l.Close() // the pin keeps it attached
}

// attachEgressClsact installs (or replaces in place) the egress filter and
// marks the interface for Detach.
func (d *Datapath) attachEgressClsact(dev *net.Interface) error {
	if _, err := installClsactFilter(dev, netlink.HANDLE_MIN_EGRESS, d.objs.ApiguardEgress); err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	if d.opts.PinDir == "" {
		return nil
	}
	return pinClone(d.objs.ApiguardEgress, egressPinPath(d.opts.PinDir, AttachTC, dev.Name))
}

// detachEgress removes every egress hook pinned under pinDir.
func detachEgress(pinDir string) []error {
	return detachSide(pinDir, egressDir, netlink.HANDLE_MIN_EGRESS)
}

// detachSide removes the hooks pinned under links/<side>.
func detachSide(pinDir, side string, hook uint32) []error {
	dir := filepath.Join(pinDir, linksDir, side)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return []error{fmt.Errorf("list %s hooks: %w", side, err)}
	}
	var errs []error
	for _, e := range entries {
		mode, iface, ok := strings.Cut(e.Name(), "_")
		if !ok {
			continue
		}
		if err := removeHook(filepath.Join(dir, e.Name()), AttachMode(mode), iface, hook); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
