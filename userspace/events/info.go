package events

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/apiguard/apiguard/loader"
)

// Info is an event as people and scripts read it: names instead of codes, wall
// time instead of the kernel's monotonic clock. `apiguard events -o json`
// prints one Info per line.
type Info struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Reason   string    `json:"reason"`
	Action   string    `json:"action"`
	Client   string    `json:"client"`
	Service  uint32    `json:"service,omitempty"`
	Proto    string    `json:"proto"`
	Port     uint16    `json:"port,omitempty"`
	TCPFlags string    `json:"tcp_flags,omitempty"`
	// Count is, for limit events, the client's drops so far; otherwise 1.
	Count uint64 `json:"count"`
}

// Describe converts ev; wall maps its kernel timestamp to wall time
// (loader.MonoToWall in the daemon).
func Describe(ev *loader.Event, wall func(mono uint64) time.Time) Info {
	in := Info{
		Time:    wall(ev.Ts),
		Type:    loader.EventType(ev.Type).String(),
		Reason:  loader.Reason(ev.Reason).String(),
		Action:  loader.Action(ev.Action).String(),
		Client:  client(ev).String(),
		Service: ev.Service,
		Proto:   protoName(ev.Proto),
		Port:    ev.Dport,
		Count:   ev.Count,
	}
	if ev.Proto == loader.ProtoTCP {
		in.TCPFlags = TCPFlagString(ev.TcpFlags)
	}
	return in
}

// client is the event's source; a service-total event names none (all zeros),
// shown as the unspecified address of its family.
func client(ev *loader.Event) netip.Addr {
	a := loader.SourceAddr(ev)
	if ev.Family == 4 && a.IsUnspecified() {
		return netip.IPv4Unspecified()
	}
	return a
}

func protoName(p uint8) string {
	switch p {
	case loader.ProtoTCP:
		return "tcp"
	case loader.ProtoUDP:
		return "udp"
	case 1:
		return "icmp"
	case 58:
		return "icmpv6"
	}
	return fmt.Sprintf("proto-%d", p)
}

var tcpFlagNames = []struct {
	bit  uint8
	name string
}{{0x02, "SYN"}, {0x10, "ACK"}, {0x01, "FIN"}, {0x04, "RST"}, {0x08, "PSH"}, {0x20, "URG"}, {0x40, "ECE"}, {0x80, "CWR"}}

// TCPFlagString names the set flags, "SYN|ACK"; "NULL" when none is set.
func TCPFlagString(f uint8) string {
	if f == 0 {
		return "NULL"
	}
	var parts []string
	for _, n := range tcpFlagNames {
		if f&n.bit != 0 {
			parts = append(parts, n.name)
		}
	}
	return strings.Join(parts, "|")
}

// String is the one-line form of the default table output.
func (in Info) String() string {
	s := fmt.Sprintf("%s %-12s %-11s %-7s %-39s %s", in.Time.Format(time.RFC3339Nano), in.Type, in.Reason, in.Action, in.Client, in.Proto)
	if in.Port != 0 {
		s += fmt.Sprintf("/%d", in.Port)
	}
	if in.Service != 0 {
		s += fmt.Sprintf(" service=%d", in.Service)
	}
	if in.TCPFlags != "" {
		s += " flags=" + in.TCPFlags
	}
	if in.Count > 1 {
		s += fmt.Sprintf(" drops=%d", in.Count)
	}
	return s
}
