package daemon

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Routes through nexthop objects ("ip route add default nhid 20") carry no
// interface or gateway in a route dump when net.ipv4.nexthop_compat_mode is
// 0, as routing daemons that manage nexthop objects set it, and
// vishvananda/netlink reads neither a route's nexthop id nor the objects.
// defaultNexthops reads both from rtnetlink, so that --iface auto finds the
// interfaces of such a default route and the never-ban set its gateways.

// rtaNHID is RTA_NH_ID (linux/rtnetlink.h), which x/sys/unix does not name.
const rtaNHID = 30

// nexthop is one path of a default route: the interface and the gateway
// (nil when the path is direct).
type nexthop struct {
	oif int
	gw  net.IP
}

type nexthopObject struct {
	nexthop
	group []uint32
}

// defaultNexthops lists the paths of the main table's default routes that
// go through nexthop objects, groups expanded. Routes that name their
// paths themselves are netlink.RouteList's.
func defaultNexthops() ([]nexthop, error) {
	ids := map[uint32]bool{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := nl.NewNetlinkRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
		req.AddData(&nl.RtMsg{RtMsg: unix.RtMsg{Family: fam}})
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWROUTE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, m := range msgs {
			if len(m) < unix.SizeofRtMsg {
				continue
			}
			rt := nl.DeserializeRtMsg(m)
			if rt.Dst_len != 0 {
				continue
			}
			attrs, err := nl.ParseRouteAttr(m[unix.SizeofRtMsg:])
			if err != nil {
				return nil, fmt.Errorf("read a default route: %w", err)
			}
			table, id := uint32(rt.Table), uint32(0)
			for _, a := range attrs {
				switch {
				case a.Attr.Type == unix.RTA_TABLE && len(a.Value) >= 4:
					table = nl.NativeEndian().Uint32(a.Value)
				case a.Attr.Type == rtaNHID && len(a.Value) >= 4:
					id = nl.NativeEndian().Uint32(a.Value)
				}
			}
			if table == unix.RT_TABLE_MAIN && id != 0 {
				ids[id] = true
			}
		}
	}
	if len(ids) == 0 {
		return nil, nil // no nexthop objects in use: nothing to ask the kernel
	}
	objs, err := nexthopObjects()
	if err != nil {
		return nil, err
	}
	var out []nexthop
	for id := range ids {
		o, ok := objs[id]
		if !ok {
			continue // removed since the route dump
		}
		if len(o.group) == 0 {
			out = append(out, o.nexthop)
			continue
		}
		// a group holds plain nexthops only (the kernel refuses nested groups)
		for _, member := range o.group {
			if m, ok := objs[member]; ok {
				out = append(out, m.nexthop)
			}
		}
	}
	return out, nil
}

// nexthopObjects reads every nexthop object by id.
func nexthopObjects() (map[uint32]nexthopObject, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEXTHOP, unix.NLM_F_DUMP)
	req.AddRawData(make([]byte, unix.SizeofNhmsg)) // any family
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEXTHOP)
	if err != nil {
		return nil, fmt.Errorf("list nexthop objects: %w", err)
	}
	out := map[uint32]nexthopObject{}
	for _, m := range msgs {
		if len(m) < unix.SizeofNhmsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[unix.SizeofNhmsg:])
		if err != nil {
			return nil, fmt.Errorf("read a nexthop object: %w", err)
		}
		var id uint32
		var o nexthopObject
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.NHA_ID:
				if len(a.Value) >= 4 {
					id = nl.NativeEndian().Uint32(a.Value)
				}
			case unix.NHA_OIF:
				if len(a.Value) >= 4 {
					o.oif = int(nl.NativeEndian().Uint32(a.Value))
				}
			case unix.NHA_GATEWAY:
				if len(a.Value) == net.IPv4len || len(a.Value) == net.IPv6len {
					o.gw = net.IP(append([]byte(nil), a.Value...))
				}
			case unix.NHA_GROUP:
				for i := 0; i+unix.SizeofNexthopGrp <= len(a.Value); i += unix.SizeofNexthopGrp {
					o.group = append(o.group, nl.NativeEndian().Uint32(a.Value[i:]))
				}
			}
		}
		if id != 0 {
			out[id] = o
		}
	}
	return out, nil
}
