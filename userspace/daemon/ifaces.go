package daemon

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/hostinfo"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AutoIface is the --iface value that guards the interfaces of the host's
// default routes (IPv4 and IPv6, every path of a multipath route), as they
// are when the daemon starts.
const AutoIface = "auto"

// defaultRouteIfaces lists the interfaces the main table's default routes
// leave through (through nexthop objects too), sorted. Loopback never counts.
func defaultRouteIfaces() ([]string, error) {
	idx := map[int]bool{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("--iface auto: list routes: %w", err)
		}
		for _, r := range routes {
			if !isDefault(r.Dst) {
				continue
			}
			if r.LinkIndex > 0 {
				idx[r.LinkIndex] = true
			}
			for _, nh := range r.MultiPath {
				if nh.LinkIndex > 0 {
					idx[nh.LinkIndex] = true
				}
			}
		}
	}
	nhs, err := defaultNexthops()
	if err != nil {
		return nil, fmt.Errorf("--iface auto: %w", err)
	}
	for _, nh := range nhs {
		if nh.oif > 0 {
			idx[nh.oif] = true
		}
	}
	var names []string
	for i := range idx {
		ifc, err := net.InterfaceByIndex(i)
		if err != nil {
			return nil, fmt.Errorf("--iface auto: interface %d of a default route: %w", i, err)
		}
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		names = append(names, ifc.Name)
	}
	if len(names) == 0 {
		return nil, errors.New("--iface auto: the host has no default route: name the interfaces with --iface")
	}
	slices.Sort(names)
	return names, nil
}

// isDefault: netlink reports a default route with no destination, or with
// 0.0.0.0/0 or ::/0 depending on the library's version.
func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0 && dst.IP.IsUnspecified()
}

// resolveIfaces turns --iface auto into the interfaces of the default routes.
func (d *Daemon) resolveIfaces() error {
	if !d.autoIfaces() {
		return nil
	}
	names, err := defaultRouteIfaces()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := checkIfaceName(n); err != nil {
			return fmt.Errorf("--iface auto: %w", err)
		}
	}
	d.log.Info("--iface auto: guarding the interfaces of the default routes", "ifaces", names)
	d.ifaces = names
	return nil
}

// guarded lists the interfaces the daemon guards: --iface's, or those auto
// resolved to.
func (d *Daemon) guarded() []string {
	if d.ifaces != nil {
		return d.ifaces
	}
	return d.cfg.Ifaces
}

func (d *Daemon) autoIfaces() bool {
	return len(d.cfg.Ifaces) == 1 && d.cfg.Ifaces[0] == AutoIface
}

// attachOne hooks the guard to one interface. Under --iface auto, native
// XDP is best effort: an interface whose driver has no native XDP gets
// generic XDP, with a warning in the log and in status. Where the kernel
// tells (xdp-features, Linux 6.3+) generic is chosen without trying native,
// so that a restart adopts the pinned generic hook without a gap.
func (d *Daemon) attachOne(ifc string) (loader.Attachment, error) {
	mode := d.cfg.Attach
	if mode != loader.AttachNative || !d.autoIfaces() {
		return d.dp.Attach(ifc, mode)
	}
	native, ferr := hostinfo.NativeXDP(ifc)
	if ferr == nil && !native {
		return d.fallBackToGeneric(ifc, "its driver has no native XDP")
	}
	att, err := d.dp.Attach(ifc, loader.AttachNative)
	if err == nil {
		return att, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTSUP) {
		return att, err
	}
	return d.fallBackToGeneric(ifc, fmt.Sprintf("native XDP refused: %v", err))
}

func (d *Daemon) fallBackToGeneric(ifc, why string) (loader.Attachment, error) {
	att, err := d.dp.Attach(ifc, loader.AttachGeneric)
	if err != nil {
		return att, err
	}
	msg := fmt.Sprintf("%s: generic XDP (%s): packets are filtered after the kernel built an skb for them", ifc, why)
	d.log.Warn("--iface auto: native XDP is not available; using generic XDP", "iface", ifc, "why", why)
	d.attachWarnings = append(d.attachWarnings, msg)
	return att, nil
}
