// Package policy reads apiguard policy files: YAML documents that say what the
// datapath enforces (allow and deny lists, services with rate limits, global
// switches) and how the detector flags and bans clients. It parses them with
// line numbers kept, validates everything at once so a user sees every mistake in
// one run, and compiles a valid policy to the plain values of package loader.
//
// The file format is documented in policies/README.md.
package policy

import (
	"net/netip"
	"time"
)

// APIVersion and Kind are the only header values this package reads.
const (
	APIVersion = "apiguard.io/v1"
	Kind       = "Policy"
)

// Policy is a parsed, validated policy file.
type Policy struct {
	Name   string // metadata.name
	Source string // file path, or the name given to Parse
	Spec   Spec
	// Warnings are things that are legal but probably not meant (a deny entry
	// inside another deny entry, the same CIDR twice). They never stop a load.
	Warnings Errors
}

// Mode is enforce or monitor.
type Mode string

const (
	Enforce Mode = "enforce"
	Monitor Mode = "monitor"
)

// DefaultAction is what happens to traffic to a port no service claims.
type DefaultAction string

const (
	Pass DefaultAction = "pass"
	Drop DefaultAction = "drop"
)

// Protocol is a service's transport protocol.
type Protocol string

const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// KeyLengths are prefix lengths for IPv4 and IPv6.
type KeyLengths struct {
	IPv4 uint8
	IPv6 uint8
}

// Spec is the policy proper.
type Spec struct {
	Mode          Mode
	DefaultAction DefaultAction
	TCPFlagSanity bool
	ClientKey     KeyLengths // the prefix that identifies one client (default /32, /64)
	PrefixKey     KeyLengths // the prefix of the per-prefix buckets (default /24, /48)
	// Allow and Deny hold every entry, inline and from files, masked, in file order.
	Allow      []netip.Prefix
	Deny       []netip.Prefix
	AllowFiles []string // as written in the policy (relative to its directory)
	DenyFiles  []string
	Services   []Service
	Detection  Detection
	Bans       Bans
}

// PortRange is an inclusive range of destination ports; a single port has First == Last.
type PortRange struct {
	First, Last uint16
}

// Service is a protocol and a set of ports with limits at three levels.
type Service struct {
	Name     string
	Protocol Protocol
	Ports    []PortRange
	Mode     Mode
	Client   Limits // per client (one address, or one clientKey prefix)
	Prefix   Limits // per prefixKey prefix
	Total    Limits // the whole service
}

// Limits bound packets, bytes and new TCP connections (SYN without ACK).
type Limits struct {
	Packets     Rate
	Bytes       Rate
	Connections Rate
}

// Rate is PerSecond units per second with a burst of Burst units. The zero
// Rate means no limit.
type Rate struct {
	PerSecond uint64
	Burst     uint64
}

// BanAction says what a detector does when it fires.
type BanAction string

const (
	ActionFlag BanAction = "flag"
	ActionBan  BanAction = "ban"
)

// Detector holds the settings every detector has.
type Detector struct {
	Enabled bool
	Action  BanAction
	Window  time.Duration // the sliding window the threshold is counted over
}

// Detection configures the detector's behaviours, one field per reason.
type Detection struct {
	// Flood fires when a client is limited for longer than LimitedFor within Window.
	Flood struct {
		Detector
		LimitedFor time.Duration
	}
	// SYNFlood fires when a client has more than SYNs new connections refused by
	// its connection limit (handshakes that never complete) within Window.
	SYNFlood struct {
		Detector
		SYNs uint64
	}
	// Scan fires when a client sends SYNs to more than Ports distinct ports that
	// no service claims within Window.
	Scan struct {
		Detector
		Ports uint64
	}
	// DenyProbe fires after more than Hits hits on the deny list or on bans within Window.
	DenyProbe struct {
		Detector
		Hits uint64
	}
	// BadFlags fires after more than Packets packets with invalid TCP flags within Window.
	BadFlags struct {
		Detector
		Packets uint64
	}
	// Aggregate fires when one prefix (prefixKey) causes at least Share of all
	// limiting within Window, counting at least MinEvents events.
	Aggregate struct {
		Detector
		Share     float64
		MinEvents uint64
	}
}

// Bans configures the bans the detector makes.
type Bans struct {
	TTL         time.Duration // a first offence
	MaxTTL      time.Duration // the cap for repeat offenders
	Growth      float64       // each repeat multiplies the TTL by this
	ForgetAfter time.Duration // an offender with no ban for this long starts over
}
