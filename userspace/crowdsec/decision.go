package crowdsec

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/apiguard/apiguard/loader"
)

// Scopes the bouncer can enforce, as the LAPI spells them.
const (
	ScopeIP    = "Ip"
	ScopeRange = "Range"
)

// OriginApiguard is the origin of the decisions apiguard reports.
const OriginApiguard = "apiguard"

// Default minimum prefix lengths of a decision's range: a decision broader than
// these is refused. A /16 is 65,536 IPv4 addresses, already a large provider's
// block; an IPv6 /32 is a whole provider's allocation. Anything broader is far
// more likely a mistake (`--range 0.0.0.0/0`) or an attack on the host than an
// attacker's network, and it would cut the host off from the LAPI itself, so
// that the decision's deletion could never be pulled.
const (
	DefaultMinPrefix4 = 16
	DefaultMinPrefix6 = 32
)

// Why a decision is not enforced: the values of the refused-decisions metric's
// reason label (a fixed set, whatever the LAPI sends).
const (
	RefusedType     = "type"      // not a ban (captcha, throttle, ...)
	RefusedScope    = "scope"     // neither Ip nor Range (Country, AS, ...)
	RefusedValue    = "value"     // the address or range does not parse
	RefusedDuration = "duration"  // missing or not a Go duration
	RefusedTooBroad = "too_broad" // a range broader than the minimum prefix
)

// RefusedReasons lists every refusal reason, in the order status shows them.
var RefusedReasons = []string{RefusedTooBroad, RefusedType, RefusedScope, RefusedValue, RefusedDuration}

// refusal is a decision the bouncer will not enforce, and why.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }

func refuse(reason, format string, args ...any) *refusal {
	return &refusal{reason: reason, err: fmt.Errorf(format, args...)}
}

// target is what a decision bans: a prefix until an expiry.
type target struct {
	prefix  netip.Prefix
	expires time.Time
}

// parse turns a decision into a ban target. now is when the answer arrived: the
// LAPI gives only the remaining duration, never an expiry time. A range is
// judged by the family it bans: a v4-mapped IPv6 range (::ffff:0.0.0.0/96)
// bans IPv4 addresses and must pass the IPv4 minimum.
func (d *Decision) parse(now time.Time, min4, min6 int) (target, *refusal) {
	if !strings.EqualFold(d.Type, "ban") {
		return target{}, refuse(RefusedType, "decision %d: type %q is not enforced (only ban)", d.ID, d.Type)
	}
	var p netip.Prefix
	switch {
	case strings.EqualFold(d.Scope, ScopeIP):
		a, err := netip.ParseAddr(d.Value)
		if err != nil {
			return target{}, refuse(RefusedValue, "decision %d: scope Ip value %q: %w", d.ID, d.Value, err)
		}
		a = a.Unmap()
		p = netip.PrefixFrom(a, a.BitLen())
	case strings.EqualFold(d.Scope, ScopeRange):
		var err error
		p, err = netip.ParsePrefix(d.Value)
		if err != nil {
			return target{}, refuse(RefusedValue, "decision %d: scope Range value %q: %w", d.ID, d.Value, err)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		p = p.Masked()
	default:
		return target{}, refuse(RefusedScope, "decision %d: scope %q is not enforced (only Ip and Range)", d.ID, d.Scope)
	}
	least := min6
	if p.Addr().Is4() {
		least = min4
	}
	if p.Bits() < least {
		what := p.String()
		if d.Value != what {
			what = d.Value + " (" + what + ")"
		}
		return target{}, refuse(RefusedTooBroad, "decision %d: range %s is broader than the minimum prefix /%d", d.ID, what, least)
	}
	if d.Duration == "" {
		return target{}, refuse(RefusedDuration, "decision %d: no duration", d.ID)
	}
	dur, err := time.ParseDuration(d.Duration)
	if err != nil {
		return target{}, refuse(RefusedDuration, "decision %d: duration %q: %w", d.ID, d.Duration, err)
	}
	// the LAPI's word is capped, not refused: a decision of a thousand years
	// still bans, for the longest a ban with an expiry may last (and the
	// bouncer's nanosecond expiries end in 2262)
	dur = min(dur, loader.MaxBanTTL)
	return target{prefix: p, expires: now.Add(dur)}, nil
}

// scopeOf names the LAPI scope for a prefix: Ip for one address, Range otherwise.
func scopeOf(p netip.Prefix) (scope, value string) {
	if p.Bits() == p.Addr().BitLen() {
		return ScopeIP, p.Addr().String()
	}
	return ScopeRange, p.String()
}
