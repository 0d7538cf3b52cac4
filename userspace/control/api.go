// Package control is apiguard's local control API: HTTP with JSON bodies over a
// unix socket that only root may use. The daemon serves it (Server, backed by a
// Backend) and the CLI calls it (Client). docs/control-api.md lists the endpoints.
package control

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/apiguard/apiguard/userspace/crowdsec"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/apiguard/apiguard.sock"

// Endpoints. Each path takes the methods named in docs/control-api.md.
const (
	PathStatus     = "/v1/status"
	PathPolicy     = "/v1/policy"      // GET the policy in force, PUT a new one
	PathPolicyDiff = "/v1/policy/diff" // POST a policy, get what applying it would change
	// PathPolicyConfirm keeps a policy applied on trial (POST).
	PathPolicyConfirm = "/v1/policy/confirm"
	PathBans          = "/v1/bans"        // GET, POST, DELETE ?prefix=
	PathClientsTop    = "/v1/clients/top" // GET ?n=&by=
)

// Body limits. A policy upload carries deny lists that may run to 100k+ lines
// (and the files they include); everything else is a few hundred bytes.
const (
	MaxPolicyBody = 64 << 20
	MaxSmallBody  = 64 << 10
)

// Bounds on the inputs of the ban and clients endpoints.
const (
	MaxReasonLen = 256
	MaxTopN      = 10000
	DefaultTopN  = 20
)

// Errors a Backend returns (wrapped) to choose the HTTP status of its answer.
var (
	// ErrInvalid marks a request whose content is wrong (400).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound marks a request for something that does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrRefused marks a change a safety check refused, which "force"
	// overrides: it would cut the caller's own session or the gateway, or
	// ban a never-ban address (409).
	ErrRefused = errors.New("refused")
)

// kindError is an error of one of the kinds above whose message does not
// repeat the kind: users read these messages.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

// Invalidf makes an error that is ErrInvalid.
func Invalidf(format string, args ...any) error {
	return &kindError{kind: ErrInvalid, msg: fmt.Sprintf(format, args...)}
}

// Refusedf makes an error that is ErrRefused.
func Refusedf(format string, args ...any) error {
	return &kindError{kind: ErrRefused, msg: fmt.Sprintf(format, args...)}
}

// NotFoundf makes an error that is ErrNotFound.
func NotFoundf(format string, args ...any) error {
	return &kindError{kind: ErrNotFound, msg: fmt.Sprintf(format, args...)}
}

// Status is the daemon's state for `apiguard status`.
type Status struct {
	Version   string    `json:"version"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	PinDir    string    `json:"pin_dir"`
	Adopted   bool      `json:"adopted"` // pinned maps from an earlier run were taken over
	// Warnings are what the operator must know about this run, such as pins
	// that cannot outlive the daemon.
	Warnings   []string      `json:"warnings,omitempty"`
	Interfaces []Interface   `json:"interfaces"`
	Policy     PolicySummary `json:"policy"`
	Bans       int           `json:"bans"`
	Counters   []Counter     `json:"counters"` // only those that counted something
	Maps       []MapUsage    `json:"maps"`
	Datapath   DatapathStats `json:"datapath"`
	// AccessLogs are the logs followed for the API detectors.
	AccessLogs []AccessLogStatus `json:"access_logs,omitempty"`
	// CrowdSec is the link to a CrowdSec LAPI; nil when the policy has none.
	CrowdSec *CrowdSec `json:"crowdsec,omitempty"`
	// Confirm is a policy on trial (policy apply --confirm); nil when none.
	Confirm *PendingConfirm `json:"confirm,omitempty"`
	// Services are the policy's services and what their tracked clients did.
	Services []ServiceStatus `json:"services,omitempty"`
	// SynProxy is the SYN proxy of the services that have one; nil when none.
	SynProxy *SynProxyStatus `json:"synproxy,omitempty"`
}

// PendingConfirm is a policy in force on trial: unless confirmed by
// Deadline, RevertTo comes back.
type PendingConfirm struct {
	Policy   string    `json:"policy"`
	Deadline time.Time `json:"deadline"`
	RevertTo string    `json:"revert_to"`
}

// ConfirmResult answers POST /v1/policy/confirm.
type ConfirmResult struct {
	Policy     string `json:"policy"`
	Generation uint32 `json:"generation"`
}

// SynProxyStatus is the SYN proxy's state (docs/synproxy.md).
type SynProxyStatus struct {
	Services []SynProxyService `json:"services"`
	// Handshakes: valid cookies let on to the listener, cookies the kernel
	// issued itself let on, handshakes handed over and refused by the kernel
	// (an MPTCP listener, a sysctl changed since the policy was applied).
	CookieOK     uint64 `json:"cookie_ok"`
	KernelCookie uint64 `json:"kernel_cookie"`
	Accepted     uint64 `json:"accepted"`
	AcceptFailed uint64 `json:"accept_failed"`
	// AutoOn counts the times an auto service's proxy turned on; Proven the
	// sources a valid cookie proved.
	AutoOn uint64 `json:"auto_on"`
	Proven uint64 `json:"proven"`
}

// SynProxyService is one service's proxy: its mode, and whether it answers
// SYNs now (always; auto until Until, during a flood over its total
// connection limit).
type SynProxyService struct {
	Service string    `json:"service"`
	Mode    string    `json:"mode"`
	On      bool      `json:"on"`
	Until   time.Time `json:"until,omitzero"`
}

// CrowdSec is the state of the link to a CrowdSec Local API.
type CrowdSec struct {
	LAPI string `json:"lapi"`
	// Error says why the link could not start (unreadable credentials).
	Error    string                  `json:"error,omitempty"`
	Bouncer  *crowdsec.BouncerStats  `json:"bouncer,omitempty"`
	Reporter *crowdsec.ReporterStats `json:"reporter,omitempty"`
	// MapFull counts decisions the kernel refused: its ban map was full.
	MapFull uint64 `json:"map_full,omitempty"`
	// Insecure: plain HTTP to a LAPI that is not this host.
	Insecure bool `json:"insecure,omitempty"`
}

// Interface is one attachment of the guard.
type Interface struct {
	Name    string `json:"name"`
	Mode    string `json:"mode"`
	Adopted bool   `json:"adopted"` // an earlier run's attachment was taken over
}

// PolicySummary names the policy in force.
type PolicySummary struct {
	Name       string    `json:"name"`
	Generation uint32    `json:"generation"`
	AppliedAt  time.Time `json:"applied_at"`
}

// Counter is the packets and bytes of one (action, reason) pair.
type Counter struct {
	Action  string `json:"action"`
	Reason  string `json:"reason"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// MapUsage is how full one kernel map is.
type MapUsage struct {
	Name     string `json:"name"`
	Entries  int    `json:"entries"`
	Capacity int    `json:"capacity"`
}

// DatapathStats are the kernel's health counters.
type DatapathStats struct {
	ClientInserts        uint64 `json:"client_inserts"`
	ClientInsertFailures uint64 `json:"client_insert_failures"`
	PrefixInserts        uint64 `json:"prefix_inserts"`
	PrefixInsertFailures uint64 `json:"prefix_insert_failures"`
	EventsSent           uint64 `json:"events_sent"`
	EventsSuppressed     uint64 `json:"events_suppressed"`
	EventsLost           uint64 `json:"events_lost"`
	// Connections held to services with connection caps, and what the flow
	// table did: followed from a SYN, picked up from the server's packets,
	// released after an idle timeout, refused for want of room.
	ConnsEstablished uint64 `json:"conns_established"`
	ConnsHalfOpen    uint64 `json:"conns_half_open"`
	FlowsNew         uint64 `json:"flows_new"`
	FlowsAdopted     uint64 `json:"flows_adopted"`
	FlowsExpired     uint64 `json:"flows_expired"`
	FlowTableFull    uint64 `json:"flow_table_full"`
	// SYNs of clients with a completed handshake that skipped their
	// service's shared new-connection limits (connections.provenClientTTL).
	ProvenSYNs uint64 `json:"proven_syns"`
}

// PolicyInfo is the policy in force with its source text.
type PolicyInfo struct {
	PolicySummary
	Path   string `json:"path"`   // where the policy came from (a file name, or the name given on upload)
	Source string `json:"source"` // the YAML text as applied
}

// PolicyUpload is a policy file's content sent by the CLI: the daemon may not see
// the caller's files, so the files the policy includes travel with it.
type PolicyUpload struct {
	// Name identifies the source in error messages, usually the file's path.
	Name   string `json:"name"`
	Source string `json:"source"`
	// Files holds the content of files the policy refers to, by the path the
	// policy uses for them.
	Files map[string]string `json:"files,omitempty"`
	// Protect are flows the caller must keep, such as its own SSH session:
	// a policy that would drop one, or the host's default gateways, is
	// refused (409) unless Force is set.
	Protect []Flow `json:"protect,omitempty"`
	Force   bool   `json:"force,omitempty"`
	// Confirm, a duration such as "60s", puts the policy in force on trial:
	// unless POST /v1/policy/confirm comes within it, the policy in force
	// before comes back by itself.
	Confirm string `json:"confirm,omitempty"`
}

// Flow is a source reaching a local port, to be kept reachable.
type Flow struct {
	Src   string `json:"src"`
	Proto string `json:"proto"` // tcp or udp
	Port  uint16 `json:"port"`
	What  string `json:"what"` // for messages: "your SSH session (SSH_CONNECTION)"
}

// Bounds of a policy upload's lockout and trial settings.
const (
	MaxProtect = 16
	MinConfirm = time.Second
	MaxConfirm = 24 * time.Hour
)

func (u *PolicyUpload) check() error {
	if strings.TrimSpace(u.Name) == "" {
		return Invalidf("the upload has no name")
	}
	if strings.TrimSpace(u.Source) == "" {
		return Invalidf("policy %s is empty", u.Name)
	}
	if len(u.Protect) > MaxProtect {
		return Invalidf("%d flows to protect; at most %d", len(u.Protect), MaxProtect)
	}
	for _, f := range u.Protect {
		if _, err := netip.ParseAddr(f.Src); err != nil {
			return Invalidf("protect: %q is not an address", clip(f.Src))
		}
		if f.Proto != "tcp" && f.Proto != "udp" {
			return Invalidf("protect: protocol %q (want tcp or udp)", clip(f.Proto))
		}
		if len(f.What) > MaxReasonLen || strings.ContainsFunc(f.What, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return Invalidf("protect: the description is longer than %d bytes or holds a control character", MaxReasonLen)
		}
	}
	if _, err := u.ConfirmWithin(); err != nil {
		return err
	}
	return nil
}

// ConfirmWithin is Confirm parsed: 0 when the policy is not on trial.
func (u *PolicyUpload) ConfirmWithin() (time.Duration, error) {
	if u.Confirm == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(u.Confirm)
	if err != nil || d < MinConfirm || d > MaxConfirm {
		return 0, Invalidf("confirm %q: want a duration from %v to %v", clip(u.Confirm), MinConfirm, MaxConfirm)
	}
	return d, nil
}

// ApplyResult says what applying a policy did.
type ApplyResult struct {
	Name          string   `json:"name"`
	Generation    uint32   `json:"generation"`
	Changed       bool     `json:"changed"`        // anything changed
	KernelChanged bool     `json:"kernel_changed"` // the datapath's maps changed (a new generation)
	Changes       []string `json:"changes"`        // human-readable, from the policy diff
	Warnings      []string `json:"warnings"`       // legal but probably not meant
	// Kept are the flows checked and kept reachable (the caller's session,
	// the default gateways); Forced, those the policy drops, applied anyway.
	Kept   []string `json:"kept,omitempty"`
	Forced []string `json:"forced,omitempty"`
	// ConfirmBy is when the policy reverts unless confirmed.
	ConfirmBy     *time.Time `json:"confirm_by,omitempty"`
	PrefixWrites  int        `json:"prefix_writes"`
	PortWrites    int        `json:"port_writes"`
	ServiceWrites int        `json:"service_writes"`
	TookSeconds   float64    `json:"took_seconds"`
}

// DiffResult is what applying a policy would change.
type DiffResult struct {
	Name     string   `json:"name"`
	Changes  []string `json:"changes"`
	Warnings []string `json:"warnings"`
}

// Problem is one thing wrong with a policy, at a place in a file.
type Problem struct {
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// PolicyError is a policy refused by validation; the policy in force stays (422).
type PolicyError struct {
	Problems []Problem
}

func (e *PolicyError) Error() string {
	lines := make([]string, 0, len(e.Problems)+1)
	n := len(e.Problems)
	switch n {
	case 1:
		lines = append(lines, "the policy has 1 error:")
	default:
		lines = append(lines, fmt.Sprintf("the policy has %d errors:", n))
	}
	for _, p := range e.Problems {
		lines = append(lines, "  "+p.String())
	}
	return strings.Join(lines, "\n")
}

// Ban is one ban as the daemon lists it.
type Ban struct {
	Prefix  string     `json:"prefix"`
	Reason  string     `json:"reason"`
	Source  string     `json:"source"` // manual, detector, … or unknown
	Created *time.Time `json:"created,omitempty"`
	Expires *time.Time `json:"expires,omitempty"` // absent: until removed
}

// BanRequest asks for a ban. TTL is a Go duration ("10m", "1h30m"); empty takes
// the policy's default ban TTL, and "0" bans until the ban is removed.
type BanRequest struct {
	Prefix string `json:"prefix"`
	TTL    string `json:"ttl,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Force bans a prefix that covers a never-banned address (the host's
	// own, its gateway or resolvers, ...), which is refused otherwise.
	Force bool `json:"force,omitempty"`
}

// NewBan is a BanRequest checked and parsed by the server.
type NewBan struct {
	Prefix netip.Prefix
	// TTL is how long the ban lasts; 0 means until removed. DefaultTTL says the
	// caller gave none and the backend should use the policy's.
	TTL        time.Duration
	DefaultTTL bool
	Reason     string
	Force      bool
}

// maxPrefixText is longer than any address or CIDR written out
// ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128" is 49 bytes).
const maxPrefixText = 64

// ParsePrefix reads an address or CIDR the way users write them: a bare address
// is a /32 or /128, IPv4-mapped IPv6 is IPv4, and host bits are cleared. An
// error quotes s clipped: an import answers one per bad prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, Invalidf("empty address")
	}
	if len(s) > maxPrefixText {
		// netip's errors quote the whole input too
		return netip.Prefix{}, Invalidf("%q is not an address or CIDR: %d bytes, longer than any", clip(s), len(s))
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		p, err = netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, Invalidf("%q is not an address or CIDR: %v", clip(s), err)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, Invalidf("%q is not an address or CIDR: %v", clip(s), err)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, Invalidf("%q: an address with a zone cannot be banned", clip(s))
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func (r *BanRequest) parse() (NewBan, error) {
	p, err := ParsePrefix(r.Prefix)
	if err != nil {
		return NewBan{}, err
	}
	nb := NewBan{Prefix: p, Reason: strings.TrimSpace(r.Reason), Force: r.Force}
	if len(nb.Reason) > MaxReasonLen {
		return NewBan{}, Invalidf("reason is %d bytes, at most %d are kept", len(nb.Reason), MaxReasonLen)
	}
	for _, c := range nb.Reason {
		if c < 0x20 || c == 0x7f {
			return NewBan{}, Invalidf("reason contains control character %q", c)
		}
	}
	switch ttl := strings.TrimSpace(r.TTL); ttl {
	case "":
		nb.DefaultTTL = true
	default:
		if len(ttl) > maxPrefixText {
			// ParseDuration's error quotes the whole input too
			return NewBan{}, Invalidf("ttl %q is not a duration: %d bytes, longer than any", clip(ttl), len(ttl))
		}
		d, err := time.ParseDuration(ttl)
		if err != nil {
			return NewBan{}, Invalidf("ttl %q is not a duration: %v", ttl, err)
		}
		if d < 0 {
			return NewBan{}, Invalidf("ttl %s is negative", ttl)
		}
		if d > 0 && d < time.Second {
			return NewBan{}, Invalidf("ttl %s is shorter than one second", ttl)
		}
		nb.TTL = d
	}
	return nb, nil
}

// SortKey orders the top clients.
type SortKey string

const (
	ByPackets SortKey = "packets"
	ByBytes   SortKey = "bytes"
	ByDrops   SortKey = "drops"
)

// ParseSortKey validates a sort key given by a user.
func ParseSortKey(s string) (SortKey, error) {
	switch k := SortKey(s); k {
	case ByPackets, ByBytes, ByDrops:
		return k, nil
	}
	return "", Invalidf("cannot sort clients by %q (want packets, bytes or drops)", s)
}

// ClientSummary is one client key's traffic summed over every service.
type ClientSummary struct {
	Addr      string    `json:"addr"`
	Packets   uint64    `json:"packets"`
	Bytes     uint64    `json:"bytes"`
	Drops     uint64    `json:"drops"`
	Services  int       `json:"services"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// TopClients is the answer to a clients query.
type TopClients struct {
	By SortKey `json:"by"`
	// Service is the one service asked about ("" for all).
	Service string          `json:"service,omitempty"`
	Tracked int             `json:"tracked"` // distinct client keys in the kernel's table
	Clients []ClientSummary `json:"clients"`
}

// PolicyConfirmer is a Backend that puts policies on trial.
type PolicyConfirmer interface {
	// ConfirmPolicy keeps the policy on trial; ErrNotFound when none is.
	ConfirmPolicy(ctx context.Context) (*ConfirmResult, error)
}

// ErrorBody is every error answer's body.
type ErrorBody struct {
	Error    string    `json:"error"`
	Problems []Problem `json:"problems,omitempty"`
}

// Backend is what the server needs from the daemon. Methods are called
// concurrently. Errors wrapping ErrInvalid or ErrNotFound, and *PolicyError,
// become 400, 404 and 422 answers; anything else is a 500.
type Backend interface {
	Status(ctx context.Context) (*Status, error)
	Policy(ctx context.Context) (*PolicyInfo, error)
	ApplyPolicy(ctx context.Context, up *PolicyUpload) (*ApplyResult, error)
	DiffPolicy(ctx context.Context, up *PolicyUpload) (*DiffResult, error)
	Bans(ctx context.Context) ([]Ban, error)
	AddBan(ctx context.Context, b NewBan) (*Ban, error)
	RemoveBan(ctx context.Context, p netip.Prefix) error
	// TopClients sums by client over every service, or over one service
	// when service is not "".
	TopClients(ctx context.Context, n int, by SortKey, service string) (*TopClients, error)
}
