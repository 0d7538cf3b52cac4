package loader

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// ErrNotAttached says an attachment is no longer in the kernel: the interface
// went (and with it an XDP or TCX link), someone removed the hook, or another
// program took its place.
var ErrNotAttached = errors.New("not attached")

// CheckAttachment reports whether a's ingress hook is still in the kernel and
// runs this datapath's program on a's interface. It reads the kernel, not
// what this process remembers: `apiguard detach`, `ip link del`, or `tc
// filter del` show up here.
func (d *Datapath) CheckAttachment(a Attachment) error {
	dev, err := net.InterfaceByName(a.Iface)
	if err != nil {
		return fmt.Errorf("%s (%s): interface: %v: %w", a.Iface, a.Mode, err, ErrNotAttached)
	}
	want, err := programID(d.progFor(a.Mode))
	if err != nil {
		return err
	}
	// TCX runs before clsact filters, and stops at the first program that
	// passes a packet: one ahead of the guard may let through what it drops
	if err := tcxFirst(dev, want, a.Mode); err != nil {
		return err
	}
	if a.Mode == AttachTC {
		return checkClsact(dev, want)
	}
	l, err := d.attachedLink(a)
	if err != nil {
		return err
	}
	defer l.close()
	info, err := l.link.Info()
	if err != nil {
		return fmt.Errorf("%s (%s): read link: %w", a.Iface, a.Mode, err)
	}
	var ifindex uint32
	switch {
	case info.XDP() != nil:
		ifindex = info.XDP().Ifindex
	case info.TCX() != nil:
		ifindex = info.TCX().Ifindex
	}
	switch {
	case ifindex != uint32(dev.Index):
		// a link whose interface went is defunct (ifindex 0), and stays so
		// when an interface of the same name comes back
		return fmt.Errorf("%s (%s): the link is on ifindex %d, the interface is %d: %w", a.Iface, a.Mode, ifindex, dev.Index, ErrNotAttached)
	case info.Program != want:
		return fmt.Errorf("%s (%s): the link runs program %d, not ours (%d): %w", a.Iface, a.Mode, info.Program, want, ErrNotAttached)
	}
	return nil
}

// tcxFirst checks that no TCX ingress program runs before the guard: in
// mode tcx the guard heads the chain, in the other modes the chain is empty
// (XDP runs before TCX, so only the TC modes are concerned). A kernel without
// TCX has no chain to check.
func tcxFirst(dev *net.Interface, want ebpf.ProgramID, mode AttachMode) error {
	if mode != AttachTCX && mode != AttachTC {
		return nil
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: dev.Index, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		if mode == AttachTC {
			return nil // no TCX: the clsact fallback's kernels
		}
		return fmt.Errorf("%s (%s): query the TCX chain: %w", dev.Name, mode, err)
	}
	for _, p := range res.Programs {
		if p.ID == want {
			return nil
		}
		fix := "a restart puts the guard first"
		if mode == AttachTC {
			fix = "TCX runs before every clsact filter: attach in mode tcx"
		}
		return fmt.Errorf("%s (%s): TCX program %d runs before the guard and may pass what it would drop (%s): %w",
			dev.Name, mode, p.ID, fix, ErrNotAttached)
	}
	return nil
}

// heldLink is a link to check, closed after when it was opened for that.
type heldLink struct {
	link  link.Link
	owned bool
}

func (h heldLink) close() {
	if h.owned {
		h.link.Close()
	}
}

func (d *Datapath) attachedLink(a Attachment) (heldLink, error) {
	name := linkPinName(a.Mode, a.Iface)
	if d.opts.PinDir == "" {
		d.mu.Lock()
		l, ok := d.links[name]
		d.mu.Unlock()
		if !ok {
			return heldLink{}, fmt.Errorf("%s (%s): no link held: %w", a.Iface, a.Mode, ErrNotAttached)
		}
		return heldLink{link: l}, nil
	}
	path := filepath.Join(d.opts.PinDir, linksDir, name)
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return heldLink{}, fmt.Errorf("%s (%s): its pin %s is gone: %w", a.Iface, a.Mode, path, ErrNotAttached)
	}
	if err != nil {
		return heldLink{}, fmt.Errorf("%s (%s): open %s: %w", a.Iface, a.Mode, path, err)
	}
	return heldLink{link: l, owned: true}, nil
}

func checkClsact(dev *net.Interface, want ebpf.ProgramID) error {
	filters, err := netlink.FilterList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: dev.Index}}, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return fmt.Errorf("%s (tc): list filters: %w", dev.Name, err)
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == tcFilterName && ebpf.ProgramID(bf.Id) == want {
			return nil
		}
	}
	return fmt.Errorf("%s (tc): no apiguard filter with program %d on the ingress hook: %w", dev.Name, want, ErrNotAttached)
}

func programID(p *ebpf.Program) (ebpf.ProgramID, error) {
	info, err := p.Info()
	if err != nil {
		return 0, fmt.Errorf("program info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("program info: the kernel gives no id")
	}
	return id, nil
}
