package detect

import "time"

// Reason names a suspicious behaviour. The values are stable: they are metric
// label values, CLI output and the reason of the bans the detector makes.
type Reason string

const (
	// Flood: a client kept hitting its own per-client packet or byte limit.
	Flood Reason = "flood"
	// SYNFlood: a client's new connections kept being refused by its connection
	// limit; or, with no client to blame, a service's total connection limit
	// refusing SYNs from many sources.
	SYNFlood Reason = "syn-flood"
	// Scan: TCP SYNs to many distinct ports that no service claims.
	Scan Reason = "scan"
	// DenyProbe: repeated hits on the deny list or on bans.
	DenyProbe Reason = "deny-probe"
	// BadFlags: TCP packets with impossible flag combinations (NULL, XMAS, SYN+FIN...).
	BadFlags Reason = "bad-flags"
	// Aggregate: one client prefix (/24, /48) causing most of the prefix- and
	// service-level limiting, even though each of its addresses stays under its
	// own limit.
	Aggregate Reason = "aggregate"

	// The API-layer reasons come from what the API server knows (its access
	// log, or reports it makes on the control socket), not from packets.

	// AuthFailures: many 401s on login paths, or reported failed logins.
	AuthFailures Reason = "auth-failures"
	// Enumeration: many distinct object paths (/items/{id}) answered 403 or 404.
	Enumeration Reason = "enumeration"
	// AppThrottled: the application's own rate limiting (429) kept refusing
	// the client.
	AppThrottled Reason = "app-throttled"
	// ErrorBurst: many 5xx answers to one client's requests.
	ErrorBurst Reason = "error-burst"
	// InjectionProbe: requests whose path or query carries an injection
	// payload (SQL, XSS, command, traversal, template: userspace/attack),
	// or reported injection attempts.
	InjectionProbe Reason = "injection-probe"
	// SensitiveFiles: refused or missing (4xx) requests for paths only
	// probes ask for: dotfiles, VCS metadata, backups, other software's
	// admin pages.
	SensitiveFiles Reason = "sensitive-files"
	// ScannerAgent: requests whose user agent is a vulnerability
	// scanner's or a fuzzer's.
	ScannerAgent Reason = "scanner-agent"
)

// layer is where a reason's evidence comes from, which decides what it is
// worth as a reason to ban.
type layer uint8

const (
	// packetLayer: the kernel's events about packets. Anyone can write any
	// source address into a SYN, a datagram or a packet with invalid flags.
	packetLayer layer = iota
	// apiLayer: what the API server answered, over a connection whose
	// handshake completed.
	apiLayer
)

// reasonSpec is one reason's row: where its evidence comes from and where its
// rule lives in a Config. Everything the detector keeps per reason (windows,
// counters, flag keys, ban codes) is indexed by the row's position.
type reasonSpec struct {
	reason Reason
	layer  layer
	rule   func(*Config) *Rule
}

// table is every reason. A reason's position is its ban code (Code), kept by
// the kernel across restarts: new reasons go at the end. Adding one is a row
// here, its rule in Config, and the code that counts its evidence and calls
// raise.
var table = [...]reasonSpec{
	{Flood, packetLayer, func(c *Config) *Rule { return &c.Flood.Rule }},
	{SYNFlood, packetLayer, func(c *Config) *Rule { return &c.SYNFlood.Rule }},
	{Scan, packetLayer, func(c *Config) *Rule { return &c.Scan.Rule }},
	{DenyProbe, packetLayer, func(c *Config) *Rule { return &c.DenyProbe.Rule }},
	{BadFlags, packetLayer, func(c *Config) *Rule { return &c.BadFlags.Rule }},
	{Aggregate, packetLayer, func(c *Config) *Rule { return &c.Aggregate.Rule }},
	{AuthFailures, apiLayer, func(c *Config) *Rule { return &c.API.AuthFailures.Rule }},
	{Enumeration, apiLayer, func(c *Config) *Rule { return &c.API.Enumeration.Rule }},
	{AppThrottled, apiLayer, func(c *Config) *Rule { return &c.API.AppThrottled.Rule }},
	{ErrorBurst, apiLayer, func(c *Config) *Rule { return &c.API.ErrorBurst.Rule }},
	{InjectionProbe, apiLayer, func(c *Config) *Rule { return &c.API.InjectionProbe.Rule }},
	{SensitiveFiles, apiLayer, func(c *Config) *Rule { return &c.API.SensitiveFiles.Rule }},
	{ScannerAgent, apiLayer, func(c *Config) *Rule { return &c.API.ScannerAgent.Rule }},
}

// numReasons sizes the per-reason arrays.
const numReasons = len(table)

// Reasons lists every reason, in a fixed order.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i, s := range table {
		out[i] = s.reason
	}
	return out
}

// banCodeBase keeps the detector's ban reason codes (loader.Ban.Reason) apart
// from the small codes the daemon uses for bans made by hand.
const banCodeBase = 0x100

// Code is the reason's code for loader.Ban.Reason, so that `apiguard ban ls`
// can say which detector made a ban, even after a daemon restart.
func (r Reason) Code() uint32 {
	if i := r.index(); i >= 0 {
		return banCodeBase + uint32(i)
	}
	return 0
}

// ReasonFromCode is Code's inverse; ok is false for codes the detector does not make.
func ReasonFromCode(code uint32) (Reason, bool) {
	i := int(code) - banCodeBase
	if i < 0 || i >= numReasons {
		return "", false
	}
	return table[i].reason, true
}

func (r Reason) index() int {
	for i, s := range table {
		if s.reason == r {
			return i
		}
	}
	return -1
}

// Action is what a rule does when it fires.
type Action string

const (
	// ActionFlag records the client as flagged and logs it; nothing is dropped.
	ActionFlag Action = "flag"
	// ActionBan flags and bans the client (its client key, or the prefix for
	// aggregate) for a TTL that grows for repeat offenders.
	ActionBan Action = "ban"
)

// Rule is what every detector has.
type Rule struct {
	Enabled bool
	Action  Action
	// Window is the sliding window the threshold is counted over.
	Window time.Duration
	// BanUnproven lets a packet rule ban a source that never completed a TCP
	// handshake (Options.ProofOf). Its evidence is packets, and a packet's
	// source address is whatever its sender wrote: with it, anyone can get
	// any address banned by forging packets from it. API rules ignore it:
	// their evidence comes over completed connections.
	BanUnproven bool
}

// rule is the rule of reason r in c.
func (c *Config) rule(r Reason) *Rule { return table[r.index()].rule(c) }
