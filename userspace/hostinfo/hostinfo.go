// Package hostinfo tells what the host's kernel offers apiguard: BTF, TCX,
// and which attach modes each interface's driver supports (the kernel's
// netdev xdp-features, Linux 6.3+). It only reads: nothing is loaded or
// attached, so an unprivileged `apiguard version` can say it too.
package hostinfo

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Kernel is what the running kernel offers.
type Kernel struct {
	Release string `json:"release"`
	// BTF: the kernel describes its own types (/sys/kernel/btf/vmlinux).
	BTF bool `json:"btf"`
	// TCX: bpf_link based TC attachment (Linux 6.6+), judged by version.
	TCX bool `json:"tcx"`
	// Interfaces are the host's interfaces but loopback.
	Interfaces []Interface `json:"interfaces"`
	// XDPFeaturesError says why the drivers' XDP features are unknown
	// (kernels before 6.3 have no netdev family).
	XDPFeaturesError string `json:"xdp_features_error,omitempty"`
}

// Interface is one interface and what its driver does with XDP.
type Interface struct {
	Name string `json:"name"`
	// NativeXDP: the driver runs XDP programs itself (XDP_PASS/DROP/TX);
	// nil when the kernel cannot say.
	NativeXDP *bool `json:"native_xdp,omitempty"`
}

// netdev generic netlink family (include/uapi/linux/netdev.h).
const (
	netdevFamily         = "netdev"
	netdevCmdDevGet      = 1
	netdevAttrIfindex    = 1
	netdevAttrXDPFeature = 3
	// NETDEV_XDP_ACT_BASIC: XDP_PASS, XDP_DROP, XDP_ABORTED, XDP_TX.
	xdpActBasic = 1 << 0
)

// BTFPath is where the kernel exposes its BTF.
const BTFPath = "/sys/kernel/btf/vmlinux"

// Read gathers the kernel's features. Errors reading one part are reported
// in that part, not returned: the rest is still worth printing.
func Read() Kernel {
	var k Kernel
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		k.Release = unix.ByteSliceToString(uts.Release[:])
	}
	if _, err := os.Stat(BTFPath); err == nil {
		k.BTF = true
	}
	k.TCX = atLeast(k.Release, 6, 6)
	ifs, err := net.Interfaces()
	if err != nil {
		k.XDPFeaturesError = fmt.Sprintf("list interfaces: %v", err)
		return k
	}
	fam, ferr := netlink.GenlFamilyGet(netdevFamily)
	if ferr != nil {
		k.XDPFeaturesError = fmt.Sprintf("the kernel has no netdev netlink family (Linux 6.3+): %v", ferr)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		i := Interface{Name: ifc.Name}
		if ferr == nil {
			feats, err := xdpFeatures(fam.ID, ifc.Index)
			if err == nil {
				native := feats&xdpActBasic != 0
				i.NativeXDP = &native
			} else if k.XDPFeaturesError == "" {
				k.XDPFeaturesError = fmt.Sprintf("%s: %v", ifc.Name, err)
			}
		}
		k.Interfaces = append(k.Interfaces, i)
	}
	sort.Slice(k.Interfaces, func(a, b int) bool { return k.Interfaces[a].Name < k.Interfaces[b].Name })
	return k
}

// NativeXDP asks the kernel whether iface's driver runs XDP itself.
func NativeXDP(iface string) (bool, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return false, err
	}
	fam, err := netlink.GenlFamilyGet(netdevFamily)
	if err != nil {
		return false, fmt.Errorf("the kernel has no netdev netlink family (Linux 6.3+): %w", err)
	}
	feats, err := xdpFeatures(fam.ID, ifc.Index)
	if err != nil {
		return false, err
	}
	return feats&xdpActBasic != 0, nil
}

func xdpFeatures(family uint16, ifindex int) (uint64, error) {
	req := nl.NewNetlinkRequest(int(family), unix.NLM_F_REQUEST)
	// the genetlink header written out: nl.Genlmsg serialises two bytes of
	// whatever follows it as the reserved field, which the kernel's strict
	// validation refuses (EINVAL) whenever they are not zero
	// (raw data follows any AddData, so the attribute is raw too)
	req.AddRawData([]byte{netdevCmdDevGet, 1, 0, 0})
	req.AddRawData(nl.NewRtAttr(netdevAttrIfindex, nl.Uint32Attr(uint32(ifindex))).Serialize())
	msgs, err := req.Execute(unix.NETLINK_GENERIC, 0)
	if err != nil {
		return 0, fmt.Errorf("netdev dev-get: %w", err)
	}
	for _, m := range msgs {
		if len(m) < nl.SizeofGenlmsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[nl.SizeofGenlmsg:])
		if err != nil {
			return 0, fmt.Errorf("netdev dev-get: %w", err)
		}
		for _, a := range attrs {
			if a.Attr.Type == netdevAttrXDPFeature && len(a.Value) >= 8 {
				return nl.NativeEndian().Uint64(a.Value[:8]), nil
			}
		}
	}
	return 0, errors.New("netdev dev-get: no xdp-features in the answer")
}

// atLeast reports whether a release such as "6.18.44-fc" is at least major.minor.
func atLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	digits := strings.IndexFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	if digits < 0 {
		digits = len(parts[1])
	}
	mi, err2 := strconv.Atoi(parts[1][:digits])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
