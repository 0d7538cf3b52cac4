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
	"golang.org/x/sys/unix"
)

// AttachMode is how the guard hooks into an interface.
type AttachMode string

const (
	// Native XDP runs in the driver before any allocation: the default.
	AttachNative AttachMode = "native"
	// Generic XDP runs after the kernel built an skb: correct, but much slower.
	AttachGeneric AttachMode = "generic"
	// TCX attaches the TC program with a bpf_link (Linux 6.6+).
	AttachTCX AttachMode = "tcx"
	// TC attaches the TC program as a clsact filter through netlink: the fallback
	// for kernels without TCX.
	AttachTC AttachMode = "tc"
)

// ParseAttachMode validates a mode given by a user.
func ParseAttachMode(s string) (AttachMode, error) {
	switch m := AttachMode(s); m {
	case AttachNative, AttachGeneric, AttachTCX, AttachTC:
		return m, nil
	}
	return "", fmt.Errorf("unknown attach mode %q (want native, generic, tcx or tc)", s)
}

// Attachment describes a program attached to an interface.
type Attachment struct {
	Iface   string
	Mode    AttachMode
	Adopted bool // an earlier run's attachment was taken over without a gap
}

const tcFilterName = "apiguard"

func linkPinName(mode AttachMode, iface string) string {
	return string(mode) + "_" + iface
}

// Attach hooks the guard to iface. With a pin directory, an attachment left by
// an earlier run is taken over by swapping its program in place, so no packet
// goes unguarded during a restart. In every mode a TC egress program goes on
// the same interface too: it follows the server's side of connections to
// services with connection caps (egress.go).
//
// Hooks an earlier run left on the same interface in another mode are removed
// once the new ones are in place (no gap): two guards on one interface would
// count and limit every packet twice.
func (d *Datapath) Attach(iface string, mode AttachMode) (Attachment, error) {
	// The kernel holds one XDP program per interface: native and generic
	// exclude each other, so that switch alone has a gap.
	if other := map[AttachMode]AttachMode{AttachNative: AttachGeneric, AttachGeneric: AttachNative}[mode]; other != "" {
		if err := d.removeIngress(iface, other); err != nil {
			return Attachment{Iface: iface, Mode: mode}, err
		}
	}
	att, err := d.attachIngress(iface, mode)
	if err != nil {
		return att, err
	}
	if err := d.attachEgress(iface, mode); err != nil {
		return att, err
	}
	// synproxy.go: the XDP modes hand proxied handshakes over at TC
	if err := d.attachSynProxy(iface, mode); err != nil {
		return att, err
	}
	return att, d.removeOtherModes(iface, mode)
}

// removeOtherModes takes off iface the ingress hooks of every mode but mode,
// and the egress hook of the kind mode does not use.
func (d *Datapath) removeOtherModes(iface string, mode AttachMode) error {
	var errs []error
	for _, m := range []AttachMode{AttachNative, AttachGeneric, AttachTCX, AttachTC} {
		if m != mode {
			errs = append(errs, d.removeIngress(iface, m))
		}
	}
	if d.opts.PinDir == "" {
		return errors.Join(errs...)
	}
	other := AttachTC
	if _, err := os.Stat(egressPinPath(d.opts.PinDir, AttachTCX, iface)); mode == AttachTC || err != nil {
		other = AttachTCX // the egress hook is a clsact filter (mode tc, or a kernel without TCX)
	}
	errs = append(errs, removePinnedHook(egressPinPath(d.opts.PinDir, other, iface), other, iface, netlink.HANDLE_MIN_EGRESS))
	return errors.Join(errs...)
}

// removeIngress takes iface's ingress hook in mode off, when there is one:
// pinned, or held by this Datapath. (Unpinned clsact filters are left: only
// pins say which filters an earlier run of ours installed.)
func (d *Datapath) removeIngress(iface string, mode AttachMode) error {
	name := linkPinName(mode, iface)
	if d.opts.PinDir != "" {
		return removePinnedHook(filepath.Join(d.opts.PinDir, linksDir, name), mode, iface, netlink.HANDLE_MIN_INGRESS)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.links[name]
	if l == nil {
		return nil
	}
	delete(d.links, name)
	if err := l.Close(); err != nil {
		return fmt.Errorf("detach %s from %s: %w", mode, iface, err)
	}
	return nil
}

// removePinnedHook is removeHook for a pin that may not exist.
func removePinnedHook(path string, mode AttachMode, iface string, hook uint32) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := removeHook(path, mode, iface, hook); err != nil {
		return err
	}
	slog.Info("removed an attachment in another mode", "iface", iface, "mode", mode)
	return nil
}

func (d *Datapath) attachIngress(iface string, mode AttachMode) (Attachment, error) {
	dev, err := net.InterfaceByName(iface)
	if err != nil {
		return Attachment{}, fmt.Errorf("attach to %s: %w", iface, err)
	}
	att := Attachment{Iface: iface, Mode: mode}
	if mode == AttachTC {
		adopted, err := d.attachClsact(dev)
		att.Adopted = adopted
		return att, err
	}
	if mode == AttachGeneric {
		slog.Warn("generic XDP: packets are filtered only after the kernel allocated an skb for them; use native mode where the driver supports it", "iface", iface)
	}

	name := linkPinName(mode, iface)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.opts.PinDir != "" {
		path := filepath.Join(d.opts.PinDir, linksDir, name)
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			prog := d.progFor(mode)
			uerr := l.Update(prog)
			if uerr == nil && mode == AttachTCX {
				// a program put ahead of the guard since: the link
				// keeps its place, so only a new one heads the chain
				if id, err := programID(prog); err == nil {
					uerr = tcxFirst(dev, id, mode)
				}
			}
			if uerr == nil {
				l.Close()
				att.Adopted = true
				return att, nil
			}
			// the old link is unusable (interface re-created, say), or
			// behind another program: replace it (TCX holds a program
			// once, so the old link goes first)
			slog.Warn("pinned link could not be adopted; attaching afresh", "link", path, "err", uerr)
			if err := os.Remove(path); err != nil {
				l.Close()
				return att, fmt.Errorf("remove stale link pin %s: %w", path, err)
			}
			if err := l.Close(); err != nil {
				return att, fmt.Errorf("detach the stale link %s: %w", path, err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return att, fmt.Errorf("open pinned link %s: %w", path, err)
		}
	}

	var l link.Link
	switch mode {
	case AttachNative, AttachGeneric:
		flags := link.XDPDriverMode
		if mode == AttachGeneric {
			flags = link.XDPGenericMode
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: d.objs.ApiguardXdp, Interface: dev.Index, Flags: flags})
		if err != nil && mode == AttachNative && errors.Is(err, unix.EOPNOTSUPP) {
			return att, fmt.Errorf("attach XDP to %s: driver has no native XDP (use --attach generic or tcx): %w", iface, err)
		}
	case AttachTCX:
		// first in the chain: a program ahead of it that passes a packet
		// (TCX_PASS) ends the chain, and the guard never sees the packet
		l, err = link.AttachTCX(link.TCXOptions{Program: d.objs.ApiguardTc, Interface: dev.Index, Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
	default:
		return att, fmt.Errorf("unknown attach mode %q", mode)
	}
	if err != nil {
		return att, fmt.Errorf("attach %s to %s: %w", mode, iface, err)
	}
	if d.opts.PinDir == "" {
		if old, ok := d.links[name]; ok {
			old.Close()
		}
		d.links[name] = l
		return att, nil
	}
	dir := filepath.Join(d.opts.PinDir, linksDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		l.Close()
		return att, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := l.Pin(filepath.Join(dir, name)); err != nil {
		l.Close()
		return att, fmt.Errorf("pin link %s: %w", name, err)
	}
	return att, l.Close() // the pin keeps it attached
}

func (d *Datapath) progFor(mode AttachMode) *ebpf.Program {
	if mode == AttachTCX || mode == AttachTC {
		return d.objs.ApiguardTc
	}
	return d.objs.ApiguardXdp
}

// attachClsact installs (or replaces in place) the ingress filter and marks
// the interface for Detach.
func (d *Datapath) attachClsact(dev *net.Interface) (bool, error) {
	adopted, err := installClsactFilter(dev, netlink.HANDLE_MIN_INGRESS, d.objs.ApiguardTc)
	if err != nil || d.opts.PinDir == "" {
		return adopted, err
	}
	return adopted, pinClone(d.objs.ApiguardTc, filepath.Join(d.opts.PinDir, linksDir, linkPinName(AttachTC, dev.Name)))
}

// Attachments lists what is pinned under pinDir.
func Attachments(pinDir string) ([]Attachment, error) {
	entries, err := os.ReadDir(filepath.Join(pinDir, linksDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list attachments: %w", err)
	}
	var out []Attachment
	for _, e := range entries {
		mode, iface, ok := strings.Cut(e.Name(), "_")
		if !ok {
			continue
		}
		out = append(out, Attachment{Iface: iface, Mode: AttachMode(mode)})
	}
	return out, nil
}

// Detach removes every attachment and pin under pinDir: enforcement stops.
func Detach(pinDir string) error {
	var errs []error
	linkDir := filepath.Join(pinDir, linksDir)
	atts, err := Attachments(pinDir)
	if err != nil {
		return err
	}
	errs = append(errs, detachEgress(pinDir)...)
	errs = append(errs, detachSide(pinDir, synProxyDir, netlink.HANDLE_MIN_INGRESS)...)
	for _, a := range atts {
		path := filepath.Join(linkDir, linkPinName(a.Mode, a.Iface))
		if err := removeHook(path, a.Mode, a.Iface, netlink.HANDLE_MIN_INGRESS); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(pinDir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", pinDir, err))
	}
	return errors.Join(errs...)
}

// removeHook takes one pinned hook off its interface: a clsact filter (hook
// is its parent, ingress or egress) or a bpf_link, whose last reference goes
// with its pin.
func removeHook(path string, mode AttachMode, iface string, hook uint32) error {
	if mode == AttachTC {
		var errs []error
		if err := removeClsactFilters(iface, hook); err != nil {
			errs = append(errs, err)
		}
		if err := os.Remove(path); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", path, err))
		}
		return errors.Join(errs...)
	}
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer l.Close() // last reference: the program leaves the interface
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin %s: %w", path, err)
	}
	return nil
}
