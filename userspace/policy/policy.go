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

	"github.com/apiguard/apiguard/loader"
)

// MaxServices is how many services one policy may define.
const MaxServices = loader.MaxServices

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
	// Connections is how the kernel follows connections to services with
	// maxConnections (conn.go).
	Connections Connections
	// CrowdSec links the daemon to a CrowdSec Local API (crowdsec.go).
	CrowdSec CrowdSec
	// AccessLogs are the API servers' logs the daemon follows for the API
	// detectors (auth-failures, enumeration, app-throttled, error-burst).
	AccessLogs []AccessLog
	// NeverBan are addresses the detector must never ban, on top of those the
	// daemon finds itself (the host's own, its gateways and resolvers, the
	// CrowdSec LAPI, trusted proxies): they are flagged, not banned, and no
	// CrowdSec decision or unforced manual ban covers them.
	NeverBan []netip.Prefix
	// SynProxyAnswers bounds the SYN-ACKs the SYN proxy sends to one source
	// (its clientKey): the most a SYN flood spoofing a victim's address
	// reflects at it. The zero Rate is loader.DefaultSynProxyAnswers.
	SynProxyAnswers Rate
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
	// AllowFrom, when set, is the only sources that may reach the service:
	// inline entries and those of AllowFromFiles, in file order.
	AllowFrom      []netip.Prefix
	AllowFromFiles []string // as written in the policy
	// MaxConnections caps concurrent TCP connections (conn.go).
	MaxConnections ConnCaps
	// Fragments is the budget of IP fragments (first and later) of all the
	// service's clients together; the zero Rate is no budget.
	Fragments Rate
	// SynProxy says when the datapath answers the service's SYNs with SYN
	// cookies itself (docs/synproxy.md); TCP only, off by default.
	SynProxy SynProxyMode
}

// SynProxyMode is when a TCP service's SYNs are answered with SYN cookies.
type SynProxyMode string

const (
	SynProxyOff SynProxyMode = "off"
	// SynProxyAuto: while the service's total new-connection limit is
	// exhausted (a flood), and SynProxyHold after.
	SynProxyAuto   SynProxyMode = "auto"
	SynProxyAlways SynProxyMode = "always"
)

// Limits bound packets, bytes and new TCP connections (SYN without ACK).
type Limits struct {
	Packets     Rate
	Bytes       Rate
	Connections Rate
}

// Rate is PerSecond units per second with a burst of Burst units, or, for a
// rate that is not a whole number per second (30/m, 90/m), PerMinute units
// per minute with PerSecond 0. The zero Rate means no limit.
type Rate struct {
	PerSecond uint64
	Burst     uint64
	PerMinute uint64
}

// Limited reports whether r limits anything.
func (r Rate) Limited() bool { return r.PerSecond != 0 || r.PerMinute != 0 }

// DetectAction says what a detector does when it fires.
type DetectAction string

const (
	ActionFlag DetectAction = "flag" // list the client as flagged, with evidence
	ActionBan  DetectAction = "ban"  // flag it and ban it for a while (see Bans)
)

// Detector holds the settings every detector has.
type Detector struct {
	Enabled bool
	Action  DetectAction
	Window  time.Duration // the sliding window the threshold is counted over
	// BanUnproven lets a packet detector (flood, syn-flood, scan, deny-probe,
	// bad-flags, aggregate) ban a source that never completed a TCP
	// handshake with this host. Its evidence is packets, whose source address
	// anyone can forge: with it, forged packets can get any address banned.
	BanUnproven bool
}

// The kernel sends at most one event per client, event type (and, for scans,
// port) per second, so thresholds that count events count "seconds with at
// least one such packet" rather than packets.

// FloodDetection (reason "flood") fires when a client is limited for longer
// than LimitedFor within Window.
type FloodDetection struct {
	Detector
	LimitedFor time.Duration
}

// SYNFloodDetection (reason "syn-flood") fires when more than SYNs new
// connections of one client are refused by its connection limits within Window:
// handshakes that never complete.
type SYNFloodDetection struct {
	Detector
	SYNs uint64
}

// ScanDetection (reason "scan") fires when a client sends SYNs to more than
// Ports distinct ports that no service claims within Window.
type ScanDetection struct {
	Detector
	Ports uint64
}

// DenyProbeDetection (reason "deny-probe") fires after more than Hits hits on
// the deny list or on bans within Window.
type DenyProbeDetection struct {
	Detector
	Hits uint64
}

// BadFlagsDetection (reason "bad-flags") fires after more than Packets packets
// with invalid TCP flag combinations within Window.
type BadFlagsDetection struct {
	Detector
	Packets uint64
}

// AggregateDetection (reason "aggregate") fires when one prefix (PrefixKey)
// causes at least Share of all limit events within Window, from at least
// MinClients distinct addresses and MinEvents events: a spread-out flood where
// each address alone stays under its limits. Its ban covers the whole prefix.
type AggregateDetection struct {
	Detector
	Share      float64
	MinClients uint64
	MinEvents  uint64
}

// Detection configures the detector's behaviours, one field per reason.
type Detection struct {
	Flood     FloodDetection
	SYNFlood  SYNFloodDetection
	Scan      ScanDetection
	DenyProbe DenyProbeDetection
	BadFlags  BadFlagsDetection
	Aggregate AggregateDetection

	// The API detectors count what the API layer knows: access log lines
	// and the application's reports.
	AuthFailures AuthFailuresDetection
	Enumeration  EnumerationDetection
	AppThrottled CountDetection
	ErrorBurst   CountDetection
	// What a request carries: payloads, paths only probes ask for,
	// scanners' user agents (userspace/attack).
	InjectionProbe InjectionDetection
	SensitiveFiles SensitiveFilesDetection
	ScannerAgent   ScannerAgentDetection
}

// PacketDetectors are the detectors whose evidence is packets, by reason.
func (d *Detection) PacketDetectors() map[string]Detector {
	return map[string]Detector{"flood": d.Flood.Detector, "syn-flood": d.SYNFlood.Detector, "scan": d.Scan.Detector,
		"deny-probe": d.DenyProbe.Detector, "bad-flags": d.BadFlags.Detector, "aggregate": d.Aggregate.Detector}
}

// provesSources says whether the datapath must record proven sources: a
// packet detector is on, and its flags say whether their source was proven
// (which decides whether they ban).
func (d *Detection) provesSources() bool {
	for _, det := range d.PacketDetectors() {
		if det.Enabled {
			return true
		}
	}
	return false
}

// AuthFailuresDetection (reason "auth-failures") fires after more than
// Failures 401 answers on LoginPaths (path prefixes; none means every path),
// or reported failed logins, from one client within Window.
type AuthFailuresDetection struct {
	Detector
	Failures   uint64
	LoginPaths []string
}

// EnumerationDetection (reason "enumeration") fires when more than Objects
// distinct object paths answered 403 or 404 to one client within Window. An
// object path matches one of Templates ("/items/{id}") or, with Learn, has an
// identifier-looking segment (digits, a UUID, 16+ hex digits).
type EnumerationDetection struct {
	Detector
	Objects   uint64
	Templates []string
	Learn     bool
}

// CountDetection fires after more than Responses answers of its kind to one
// client within Window: 429 ("app-throttled"), 5xx ("error-burst").
type CountDetection struct {
	Detector
	Responses uint64
}

// InjectionDetection (reason "injection-probe") fires after more than
// Requests requests from one client whose path or query carries an injection
// payload (SQL, XSS, command, traversal, template), or reported injection
// attempts, within Window.
type InjectionDetection struct {
	Detector
	Requests uint64
}

// SensitiveFilesDetection (reason "sensitive-files") fires after more than
// Requests requests for sensitive paths answered 4xx (not 429) within
// Window. Paths are patterns (/path, *suffix, prefix*, name) added to the
// default list when Defaults.
type SensitiveFilesDetection struct {
	Detector
	Requests uint64
	Paths    []string
	Defaults bool
}

// ScannerAgentDetection (reason "scanner-agent") flags a client at its
// first request with a scanner's user agent and takes its action after more
// than Requests within Window. Agents are patterns added to the default list
// when Defaults.
type ScannerAgentDetection struct {
	Detector
	Requests uint64
	Agents   []string
	Defaults bool
}

// AccessLog is one log to follow.
type AccessLog struct {
	Path string
	// Format is "combined" (nginx's default) or "json" (one object a line).
	Format string
	// Fields maps JSON keys to a request's parts; keys left empty take the
	// daemon's defaults (nginx's variable names).
	Fields LogFields
	// Forwarded: a combined line ends with a quoted X-Forwarded-For field.
	// (A combined line's user agent and query are always read.)
	Forwarded bool
	// TrustedProxies are the peers whose forwarded field is believed.
	TrustedProxies []netip.Prefix
	// FromStart reads a file met for the first time from its beginning.
	FromStart bool
	// MaxLineLength bounds a line; longer ones are skipped and counted.
	MaxLineLength uint64
}

// LogFields are JSON keys (a dotted key walks nested objects).
type LogFields struct {
	Client, Time, Method, Path, Request, Status, Latency, Forwarded, UserAgent, Query string
	// LatencyUnit is what a numeric latency counts: s, ms, us or ns.
	LatencyUnit string
}

// Bans configures the bans the detector makes. A client banned again within
// ForgetAfter of its last ban gets the previous TTL times Growth, capped at
// MaxTTL.
type Bans struct {
	TTL         time.Duration // a first offence
	MaxTTL      time.Duration // the cap for repeat offenders
	Growth      float64       // each repeat multiplies the TTL by this
	ForgetAfter time.Duration // an offender with no ban for this long starts over
	// ProofTTL is how long a completed TCP handshake proves a source: the
	// packet detectors ban only a source proven this recently.
	ProofTTL time.Duration
	// MaxPerMinute caps the bans the detector makes in any minute; past it,
	// clients are flagged and counted, not banned.
	MaxPerMinute uint64
}

// The defaults of spec.bans.proofTTL and maxPerMinute. A client's handshake
// proves it for as long as it is likely to come back with the same address.
// A real attack from proven sources (they completed handshakes, so they are
// real hosts) needs a few bans a minute; a storm of hundreds is a mistake or
// an attack on the detector, and the kernel's limits hold the line meanwhile.
const (
	DefaultProofTTL         = 10 * time.Minute
	DefaultMaxBansPerMinute = 60
)

// Defaults is the Spec a policy starts from: every field a file leaves out
// takes its value from here. The detection defaults fit an API host whose
// clients are programs and browsers: they take sustained abuse to fire.
func Defaults() Spec {
	var d Detection
	d.Flood = FloodDetection{Detector{Enabled: true, Action: ActionBan, Window: time.Minute}, 10 * time.Second}
	d.SYNFlood = SYNFloodDetection{Detector{Enabled: true, Action: ActionBan, Window: 10 * time.Second}, 100}
	d.Scan = ScanDetection{Detector{Enabled: true, Action: ActionBan, Window: 10 * time.Second}, 20}
	d.DenyProbe = DenyProbeDetection{Detector{Enabled: true, Action: ActionFlag, Window: time.Minute}, 10}
	d.BadFlags = BadFlagsDetection{Detector{Enabled: true, Action: ActionFlag, Window: time.Minute}, 5}
	d.Aggregate = AggregateDetection{Detector{Enabled: true, Action: ActionFlag, Window: time.Minute}, 0.5, 4, 20}
	d.AuthFailures = AuthFailuresDetection{Detector: Detector{Enabled: true, Action: ActionBan, Window: time.Minute}, Failures: 20}
	d.Enumeration = EnumerationDetection{Detector: Detector{Enabled: true, Action: ActionBan, Window: time.Minute}, Objects: 50, Learn: true}
	d.AppThrottled = CountDetection{Detector{Enabled: true, Action: ActionBan, Window: time.Minute}, 100}
	d.ErrorBurst = CountDetection{Detector{Enabled: true, Action: ActionFlag, Window: time.Minute}, 50}
	d.InjectionProbe = InjectionDetection{Detector{Enabled: true, Action: ActionBan, Window: time.Minute}, 10}
	d.SensitiveFiles = SensitiveFilesDetection{Detector: Detector{Enabled: true, Action: ActionBan, Window: time.Minute}, Requests: 5, Defaults: true}
	d.ScannerAgent = ScannerAgentDetection{Detector: Detector{Enabled: true, Action: ActionBan, Window: time.Minute}, Requests: 5, Defaults: true}
	return Spec{
		Mode:          Enforce,
		DefaultAction: Pass,
		TCPFlagSanity: true,
		ClientKey:     KeyLengths{IPv4: 32, IPv6: 64},
		PrefixKey:     KeyLengths{IPv4: 24, IPv6: 48},
		Detection:     d,
		Connections:   defaultConnections(),
		Bans: Bans{
			TTL:          10 * time.Minute,
			MaxTTL:       24 * time.Hour,
			Growth:       2,
			ForgetAfter:  24 * time.Hour,
			ProofTTL:     DefaultProofTTL,
			MaxPerMinute: DefaultMaxBansPerMinute,
		},
	}
}

// Limits of the datapath that validation enforces.
const (
	// ListCapacity is how many entries each allow/deny trie holds per address
	// family.
	ListCapacity = loader.ListCapacity
	// MinBytesBurst is one full Ethernet frame (1500 bytes of payload and a
	// 14-byte header): a bytes bucket smaller than that could never admit a
	// full-size packet, so a client within its rate would still lose them all.
	MinBytesBurst = 1514
)
