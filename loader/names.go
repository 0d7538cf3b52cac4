package loader

import (
	"fmt"
	"net/netip"
)

// Action is what the datapath did with a packet.
type Action uint8

const (
	ActionPass    = Action(GuardAgActionAG_ACT_PASS)
	ActionDrop    = Action(GuardAgActionAG_ACT_DROP)
	ActionMonitor = Action(GuardAgActionAG_ACT_MONITOR) // a drop that monitor mode let through
	numActions    = int(GuardAgActionAG_ACT_MAX)
)

var actionNames = [numActions]string{"pass", "drop", "monitor"}

func (a Action) String() string {
	if int(a) < numActions {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", a)
}

// Reason is why; every verdict has exactly one.
type Reason uint8

const numReasons = int(GuardAgReasonAG_R_MAX)

// Reason names are metric label values: lower_snake_case, stable.
var reasonNames = [numReasons]string{
	GuardAgReasonAG_R_OK:          "ok",
	GuardAgReasonAG_R_NO_SERVICE:  "no_service",
	GuardAgReasonAG_R_ALLOW:       "allow",
	GuardAgReasonAG_R_NOT_IP:      "not_ip",
	GuardAgReasonAG_R_ICMP:        "icmp",
	GuardAgReasonAG_R_NDP:         "ndp",
	GuardAgReasonAG_R_FRAGMENT:    "fragment",
	GuardAgReasonAG_R_TRUNCATED:   "truncated",
	GuardAgReasonAG_R_MALFORMED:   "malformed",
	GuardAgReasonAG_R_EXT_LIMIT:   "ipv6_ext_limit",
	GuardAgReasonAG_R_DENY:        "deny",
	GuardAgReasonAG_R_BAN:         "ban",
	GuardAgReasonAG_R_TCP_FLAGS:   "tcp_flags",
	GuardAgReasonAG_R_CLIENT_PPS:  "client_pps",
	GuardAgReasonAG_R_CLIENT_BPS:  "client_bps",
	GuardAgReasonAG_R_CLIENT_CPS:  "client_cps",
	GuardAgReasonAG_R_PREFIX_PPS:  "prefix_pps",
	GuardAgReasonAG_R_PREFIX_BPS:  "prefix_bps",
	GuardAgReasonAG_R_PREFIX_CPS:  "prefix_cps",
	GuardAgReasonAG_R_SERVICE_PPS: "service_pps",
	GuardAgReasonAG_R_SERVICE_BPS: "service_bps",
	GuardAgReasonAG_R_SERVICE_CPS: "service_cps",
	GuardAgReasonAG_R_HOST:        "host_essential",
	// connection filtering (docs/conntrack.md)
	GuardAgReasonAG_R_ACL:                      "acl",
	GuardAgReasonAG_R_CONN_CLIENT_ESTABLISHED:  "conn_client_established",
	GuardAgReasonAG_R_CONN_CLIENT_HALF_OPEN:    "conn_client_half_open",
	GuardAgReasonAG_R_CONN_SERVICE_ESTABLISHED: "conn_service_established",
	GuardAgReasonAG_R_CONN_SERVICE_HALF_OPEN:   "conn_service_half_open",
	GuardAgReasonAG_R_FLOW_TABLE_FULL:          "flow_table_full",
	// a frame the kernel would unwrap further than the parser reads (bpf/include/parse.h)
	GuardAgReasonAG_R_VLAN_STACK: "vlan_stack",
	// fragments (bpf/include/frag.h)
	GuardAgReasonAG_R_FRAG_BUDGET: "fragment_budget",
	// SYN proxy (docs/synproxy.md)
	GuardAgReasonAG_R_SYN_COOKIE:      "syn_cookie",
	GuardAgReasonAG_R_BAD_COOKIE:      "bad_cookie",
	GuardAgReasonAG_R_SYN_UNPROXYABLE: "syn_unproxyable",
	GuardAgReasonAG_R_SYNACK_LIMITED:  "synack_limited",
}

func (r Reason) String() string {
	if int(r) < numReasons && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}

// Reasons lists every reason, for callers that want all label values.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// EventType is the kind of state change an event reports.
type EventType uint8

var eventNames = map[EventType]string{
	EventType(GuardAgEventTypeAG_EV_LIMITED):         "limited",
	EventType(GuardAgEventTypeAG_EV_SYN_LIMITED):     "syn_limited",
	EventType(GuardAgEventTypeAG_EV_DENY_HIT):        "deny_hit",
	EventType(GuardAgEventTypeAG_EV_BAN_HIT):         "ban_hit",
	EventType(GuardAgEventTypeAG_EV_BAD_FLAGS):       "bad_flags",
	EventType(GuardAgEventTypeAG_EV_NO_SERVICE):      "no_service",
	EventType(GuardAgEventTypeAG_EV_MAP_PRESSURE):    "map_pressure",
	EventType(GuardAgEventTypeAG_EV_ACL_HIT):         "acl_hit",
	EventType(GuardAgEventTypeAG_EV_CONN_LIMITED):    "conn_limited",
	EventType(GuardAgEventTypeAG_EV_FLOW_TABLE_FULL): "flow_table_full",
}

func (t EventType) String() string {
	if n, ok := eventNames[t]; ok {
		return n
	}
	return fmt.Sprintf("event(%d)", t)
}

// EventTypes lists every event type.
func EventTypes() []EventType {
	out := make([]EventType, 0, len(eventNames))
	for t := EventType(1); int(t) <= len(eventNames); t++ {
		out = append(out, t)
	}
	return out
}

// Event is one ring-buffer record, as the kernel wrote it.
type Event = GuardAgEvent

// SourceAddr is the event's client address (IPv4 unmapped).
func SourceAddr(e *Event) netip.Addr {
	return addrFrom16(e.Addr)
}

func addrFrom16(b [16]byte) netip.Addr {
	return netip.AddrFrom16(b).Unmap()
}
