package detect

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Flag is one suspicious client (or prefix, or service) for one reason.
type Flag struct {
	// Prefix is who: the client key (an address, or an IPv6 /64), the prefix
	// key for aggregate, or the zero Prefix when a service as a whole is under
	// attack from many sources.
	Prefix  netip.Prefix `json:"prefix"`
	Service uint32       `json:"service,omitempty"`
	Reason  Reason       `json:"reason"`
	// Action is the rule's action when the flag was raised.
	Action   Action   `json:"action"`
	Evidence Evidence `json:"evidence"`
	// FirstSeen is when this flag was first raised; LastSeen the latest
	// evidence. Active means the behaviour was seen within the rule's window.
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Active    bool      `json:"active"`
	// Episodes counts how often the behaviour started again after a quiet
	// window or an expired ban.
	Episodes int `json:"episodes"`
	// Proven says whether the subject proved itself as the evidence's real
	// sender: for packet evidence, a TCP handshake completed with this host
	// within the policy's proofTTL (checked when the flag is raised and with
	// its evidence since); API evidence comes over such a connection. A
	// service (many sources) is never proven.
	Proven bool    `json:"proven"`
	Ban    BanInfo `json:"ban"`
}

// Subject is how a flag names who it is about.
func (f Flag) Subject() string {
	if f.Prefix.IsValid() {
		if f.Prefix.Bits() == f.Prefix.Addr().BitLen() {
			return f.Prefix.Addr().String()
		}
		return f.Prefix.String()
	}
	return fmt.Sprintf("service %d (many sources)", f.Service)
}

// Evidence is what the rule counted when it fired (and since, while active).
type Evidence struct {
	Window time.Duration `json:"-"`
	// Events is how many kernel events counted (each stands for at least one
	// packet; the kernel throttles them per client).
	Events uint64 `json:"events,omitempty"`
	// Drops is packets the kernel dropped for the client within the window
	// (flood, syn-flood), from the running count the events carry.
	Drops uint64 `json:"drops,omitempty"`
	// LimitedFor is how long the bucket was over within the window (flood,
	// service flags, aggregate).
	LimitedFor time.Duration `json:"-"`
	// Ports is the number of distinct closed ports (scan); PortSample the
	// lowest of them.
	Ports      int      `json:"ports,omitempty"`
	PortSample []uint16 `json:"port_sample,omitempty"`
	// Clients is the prefix's active clients in the kernel's table (aggregate).
	Clients int `json:"clients,omitempty"`
	// Share is the prefix's part of all prefix/service-level limiting (aggregate).
	Share float64 `json:"share,omitempty"`
	// Kernel is the kernel's reason on the latest event: client_pps, deny, ...
	Kernel string `json:"kernel_reason,omitempty"`
	// Class is the latest injection payload's class (injection-probe): sql,
	// xss, command, traversal, template.
	Class string `json:"class,omitempty"`
	// Match quotes what matched in the latest request, sanitised and
	// bounded (userspace/attack.Sanitize): the payload, the resolved path
	// (sensitive-files), the user agent (scanner-agent).
	Match string `json:"match,omitempty"`
	// Summary is one readable sentence.
	Summary string `json:"summary"`
}

// MarshalJSON writes durations as Go duration strings ("1m0s"), not nanoseconds.
func (e Evidence) MarshalJSON() ([]byte, error) {
	type plain Evidence
	out := struct {
		plain
		Window     string `json:"window"`
		LimitedFor string `json:"limited_for,omitempty"`
	}{plain: plain(e), Window: e.Window.String()}
	if e.LimitedFor > 0 {
		out.LimitedFor = e.LimitedFor.String()
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (e *Evidence) UnmarshalJSON(b []byte) error {
	type plain Evidence
	in := struct {
		*plain
		Window     string `json:"window"`
		LimitedFor string `json:"limited_for"`
	}{plain: (*plain)(e)}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	var err error
	if e.Window, err = parseDuration(in.Window); err != nil {
		return fmt.Errorf("evidence window: %w", err)
	}
	if e.LimitedFor, err = parseDuration(in.LimitedFor); err != nil {
		return fmt.Errorf("evidence limited_for: %w", err)
	}
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

// BanInfo is what happened about a ban when the flag was last raised.
type BanInfo struct {
	Banned  bool          `json:"banned"`
	TTL     time.Duration `json:"-"`
	Expires time.Time     `json:"expires,omitzero"`
	// Skipped says why a ban rule did not ban: "monitor mode", "allow-listed"...
	Skipped string `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
}

// MarshalJSON writes the TTL as a duration string.
func (b BanInfo) MarshalJSON() ([]byte, error) {
	type plain BanInfo
	out := struct {
		plain
		TTL string `json:"ttl,omitempty"`
	}{plain: plain(b)}
	if b.TTL > 0 {
		out.TTL = b.TTL.String()
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (b *BanInfo) UnmarshalJSON(data []byte) error {
	type plain BanInfo
	in := struct {
		*plain
		TTL string `json:"ttl"`
	}{plain: (*plain)(b)}
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	ttl, err := parseDuration(in.TTL)
	if err != nil {
		return fmt.Errorf("ban ttl: %w", err)
	}
	b.TTL = ttl
	return nil
}

// String is the outcome in a few words, for tables.
func (b BanInfo) String() string {
	switch {
	case b.Banned:
		return fmt.Sprintf("banned %v until %s", b.TTL, b.Expires.Format(time.RFC3339))
	case b.Error != "":
		return "ban failed: " + b.Error
	case b.Skipped != "":
		return "not banned: " + b.Skipped
	}
	return "flagged"
}

func portList(ports []uint16, total int) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = fmt.Sprint(p)
	}
	s := strings.Join(parts, ", ")
	if total > len(ports) {
		s += ", ..."
	}
	return s
}
