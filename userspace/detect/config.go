package detect

import (
	"errors"
	"fmt"
	"time"
)

// FloodRule fires when a client was limited by its own per-client packet or
// byte limit for longer than LimitedFor within Window. The kernel sends at most
// one event per limited bucket per EventInterval (on each CPU), so "limited
// for" is counted in EventInterval steps: the steps that saw a limit event.
//
// A service whose total packet or byte limit is over for longer than LimitedFor
// is flagged too, as the service (many sources: nothing to ban).
type FloodRule struct {
	Rule
	LimitedFor time.Duration
}

// SYNFloodRule fires when more than SYNs new connections of one client were
// refused by its per-client connection limit within Window. Each event carries
// the client's running drop count, so throttled events still add up to the
// real number. The datapath sees only ingress and cannot tell a completed
// handshake: a client whose SYNs keep being refused is the signal.
//
// A service whose total connection limit refuses SYNs for more than half of
// Window is flagged as the service (a random-source SYN flood: the kernel holds
// the line, and there is no one to ban).
type SYNFloodRule struct {
	Rule
	SYNs uint64
}

// ScanRule fires when a client sent TCP SYNs to more than Ports distinct ports
// that no service claims within Window. The kernel keys these events by port,
// so every port shows up.
type ScanRule struct {
	Rule
	Ports uint64
}

// DenyProbeRule fires after more than Hits deny-list or ban hits within Window.
// Hits are events: the kernel sends at most one per client per EventInterval
// on each CPU, so Hits = 10 means about ten seconds of probing.
type DenyProbeRule struct {
	Rule
	Hits uint64
}

// BadFlagsRule fires after more than Packets invalid-flag events within Window
// (throttled like DenyProbe's). The policy must turn tcpFlagSanity on.
type BadFlagsRule struct {
	Rule
	Packets uint64
}

// AggregateRule fires when one prefix's own bucket (the policy's prefix key,
// /24 and /48 by default) accounts for at least Share of all limit events
// within Window (client, prefix and service buckets alike: each limited bucket
// sends about one event per EventInterval, so this is a share of limited time),
// with at least MinEvents of them, and the prefix holds at least MinClients
// active clients. Prefix events name only the prefix, so the clients are
// counted in the kernel's per-client table through Options.ClientsIn; without
// it MinClients is not checked.
type AggregateRule struct {
	Rule
	Share      float64
	MinClients uint64
	MinEvents  uint64
}

// BanPolicy sets the bans' lengths and what they need.
type BanPolicy struct {
	// TTL is a first offence's ban.
	TTL time.Duration
	// MaxTTL caps a repeat offender's ban.
	MaxTTL time.Duration
	// Growth multiplies the TTL for each earlier ban the offender has.
	Growth float64
	// ForgetAfter: an offender whose last ban ended this long ago starts over.
	ForgetAfter time.Duration
	// ProofTTL is how long a completed TCP handshake proves a source
	// (Options.ProofOf): a packet rule bans only a source proven this
	// recently, unless the rule says BanUnproven.
	ProofTTL time.Duration
	// MaxPerMinute caps the bans made in any minute (a sliding one): past
	// it, flags that would ban are held back and counted. A storm of bans is
	// an attack on the detector or a mistake, and the kernel's limits hold
	// the line meanwhile.
	MaxPerMinute int
}

// Config is the detector's thresholds and limits. Zero fields take the
// defaults of DefaultConfig, except Enabled, which is the caller's to set.
type Config struct {
	Flood     FloodRule
	SYNFlood  SYNFloodRule
	Scan      ScanRule
	DenyProbe DenyProbeRule
	BadFlags  BadFlagsRule
	Aggregate AggregateRule
	Bans      BanPolicy
	// API holds the API-layer rules (ObserveSignal).
	API APIRules

	// Monitor is the policy's monitor mode: every rule flags, none bans.
	Monitor bool

	// ClientBits4/6 are the policy's client key: a ban covers this prefix of
	// the source (an IPv6 client owns a /64). PrefixBits4/6 are the policy's
	// prefix key, the unit of the aggregate rule.
	ClientBits4, ClientBits6 uint8
	PrefixBits4, PrefixBits6 uint8

	// EventInterval must be the datapath's (loader.Options.EventInterval): it is
	// the windows' resolution.
	EventInterval time.Duration

	// MaxClients, MaxPrefixes and MaxFlags bound memory: past them the state
	// seen least recently is dropped first. A client costs about 200 bytes,
	// plus 0.5 KiB per rule it is seen by.
	MaxClients  int
	MaxPrefixes int
	MaxFlags    int
	// FlagRetention keeps a flag listed this long after its last evidence.
	FlagRetention time.Duration
}

// DefaultConfig fits a typical API host (the same values as the policy's
// defaults): real clients of an API do not stay over their own limits, do not
// send SYNs to closed ports and never send invalid TCP flags, so the
// thresholds leave room for bursts and retries while an attacker crosses them
// in seconds. Floods, SYN floods and scans are banned, when their source
// proved itself with a completed TCP handshake (their evidence is packets,
// whose source anyone can forge); deny probes and bad flags are flagged (the
// kernel drops those packets already), and so is aggregate (its ban would
// cover a whole /24: a NAT, an office).
func DefaultConfig() Config {
	minute := time.Minute
	return Config{
		// 10 s over its own limit within a minute: a retry storm after an
		// outage lasts a few seconds; an attack does not stop.
		Flood: FloodRule{Rule: Rule{Enabled: true, Action: ActionBan, Window: minute}, LimitedFor: 10 * time.Second},
		// 100 refused connections in 10 s: far beyond a connection pool
		// warming up against its limit.
		SYNFlood: SYNFloodRule{Rule: Rule{Enabled: true, Action: ActionBan, Window: 10 * time.Second}, SYNs: 100},
		// 20 closed ports in 10 s: nothing legitimate probes the ports an API
		// host does not serve; nmap's default scan tries 1000.
		Scan: ScanRule{Rule: Rule{Enabled: true, Action: ActionBan, Window: 10 * time.Second}, Ports: 20},
		// 10 hits (about 10 s of traffic) on the deny list or bans in a minute.
		DenyProbe: DenyProbeRule{Rule: Rule{Enabled: true, Action: ActionFlag, Window: minute}, Hits: 10},
		// 5 invalid-flag events in a minute.
		BadFlags: BadFlagsRule{Rule: Rule{Enabled: true, Action: ActionFlag, Window: minute}, Packets: 5},
		// Half of the limiting, 20 events (10-20 s of the prefix bucket being
		// over), from at least 4 clients.
		Aggregate: AggregateRule{Rule: Rule{Enabled: true, Action: ActionFlag, Window: minute}, Share: 0.5, MinClients: 4, MinEvents: 20},
		Bans: BanPolicy{TTL: 10 * time.Minute, MaxTTL: 24 * time.Hour, Growth: 2, ForgetAfter: 24 * time.Hour,
			ProofTTL: 10 * time.Minute, MaxPerMinute: 60},
		API: DefaultAPIRules(),

		ClientBits4: 32, ClientBits6: 64, PrefixBits4: 24, PrefixBits6: 48,
		EventInterval: time.Second,
		MaxClients:    1 << 16,
		MaxPrefixes:   1 << 14,
		MaxFlags:      1 << 14,
		FlagRetention: time.Hour,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	def := DefaultConfig()
	for _, s := range table {
		r, d := s.rule(&c), s.rule(&def)
		if r.Action == "" {
			r.Action = d.Action
		}
		if r.Window == 0 {
			r.Window = d.Window
		}
	}
	setZero(&c.Flood.LimitedFor, def.Flood.LimitedFor)
	setZero(&c.SYNFlood.SYNs, def.SYNFlood.SYNs)
	setZero(&c.Scan.Ports, def.Scan.Ports)
	setZero(&c.DenyProbe.Hits, def.DenyProbe.Hits)
	setZero(&c.BadFlags.Packets, def.BadFlags.Packets)
	setZero(&c.Aggregate.Share, def.Aggregate.Share)
	setZero(&c.Aggregate.MinEvents, def.Aggregate.MinEvents)
	setZero(&c.Aggregate.MinClients, def.Aggregate.MinClients)
	c.API = c.API.withDefaults(def.API)
	setZero(&c.Bans.TTL, def.Bans.TTL)
	setZero(&c.Bans.MaxTTL, max(def.Bans.MaxTTL, c.Bans.TTL))
	setZero(&c.Bans.Growth, def.Bans.Growth)
	setZero(&c.Bans.ForgetAfter, def.Bans.ForgetAfter)
	setZero(&c.Bans.ProofTTL, def.Bans.ProofTTL)
	setZero(&c.Bans.MaxPerMinute, def.Bans.MaxPerMinute)
	setZero(&c.ClientBits4, def.ClientBits4)
	setZero(&c.ClientBits6, def.ClientBits6)
	setZero(&c.PrefixBits4, def.PrefixBits4)
	setZero(&c.PrefixBits6, def.PrefixBits6)
	setZero(&c.EventInterval, def.EventInterval)
	setZero(&c.MaxClients, def.MaxClients)
	setZero(&c.MaxPrefixes, def.MaxPrefixes)
	setZero(&c.MaxFlags, def.MaxFlags)
	setZero(&c.FlagRetention, def.FlagRetention)
	return c
}

func setZero[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Validate reports every problem at once (after defaults are filled).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, s := range table {
		r := s.rule(&c)
		if r.Action != ActionFlag && r.Action != ActionBan {
			add("%s: action %q is neither %q nor %q", s.reason, r.Action, ActionFlag, ActionBan)
		}
		if r.Window < 0 {
			add("%s: window %v is negative", s.reason, r.Window)
		}
		// the packet rules count the kernel's events, one per interval at most
		if s.layer == packetLayer && r.Window > 0 && r.Window < c.EventInterval {
			add("%s: window %v is shorter than the event interval %v", s.reason, r.Window, c.EventInterval)
		}
		if r.Window > 24*time.Hour {
			add("%s: window %v is longer than 24h", s.reason, r.Window)
		}
	}
	errs = append(errs, c.API.validate()...)
	if c.Flood.LimitedFor < 0 || c.Flood.LimitedFor > c.Flood.Window {
		add("flood: limitedFor %v must be between 0 and the window %v", c.Flood.LimitedFor, c.Flood.Window)
	}
	if c.Scan.Ports >= maxScanPorts {
		add("scan: ports %d: there are only %d ports", c.Scan.Ports, maxScanPorts-1)
	}
	if c.Aggregate.Share <= 0 || c.Aggregate.Share > 1 {
		add("aggregate: share %v outside (0, 1]", c.Aggregate.Share)
	}
	if c.Bans.TTL < 0 {
		add("bans: ttl %v is negative", c.Bans.TTL)
	}
	if c.Bans.MaxTTL < c.Bans.TTL {
		add("bans: maxTTL %v is shorter than ttl %v", c.Bans.MaxTTL, c.Bans.TTL)
	}
	if c.Bans.Growth < 1 {
		add("bans: growth %v is below 1", c.Bans.Growth)
	}
	if c.Bans.MaxPerMinute < 0 || c.Bans.MaxPerMinute > maxBansPerMinute {
		add("bans: maxPerMinute %d outside 1–%d", c.Bans.MaxPerMinute, maxBansPerMinute)
	}
	if c.Bans.ProofTTL < 0 {
		add("bans: proofTTL %v is negative", c.Bans.ProofTTL)
	}
	if c.Bans.ForgetAfter < 0 {
		add("bans: forgetAfter %v is negative", c.Bans.ForgetAfter)
	}
	if c.ClientBits4 > 32 || c.PrefixBits4 > 32 {
		add("IPv4 key lengths must be at most 32 (client %d, prefix %d)", c.ClientBits4, c.PrefixBits4)
	}
	if c.ClientBits6 > 128 || c.PrefixBits6 > 128 {
		add("IPv6 key lengths must be at most 128 (client %d, prefix %d)", c.ClientBits6, c.PrefixBits6)
	}
	if c.EventInterval < 0 {
		add("event interval %v is negative", c.EventInterval)
	}
	if c.MaxClients < 0 || c.MaxPrefixes < 0 || c.MaxFlags < 0 {
		add("state caps must not be negative (clients %d, prefixes %d, flags %d)", c.MaxClients, c.MaxPrefixes, c.MaxFlags)
	}
	if c.FlagRetention < 0 {
		add("flag retention %v is negative", c.FlagRetention)
	}
	return errors.Join(errs...)
}

// maxBansPerMinute bounds the ban-rate cap, and so the memory that counts it.
const maxBansPerMinute = 100000

// maxScanPorts bounds the per-client port set: every TCP port.
const maxScanPorts = 65536
