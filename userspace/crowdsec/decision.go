package crowdsec

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Scopes the bouncer can enforce, as the LAPI spells them.
const (
	ScopeIP    = "Ip"
	ScopeRange = "Range"
)

// OriginApiguard is the origin of the decisions apiguard reports.
const OriginApiguard = "apiguard"

// target is what a decision bans: a prefix until an expiry.
type target struct {
	prefix  netip.Prefix
	expires time.Time
}

// parse turns a decision into a ban target. now is when the answer arrived: the
// LAPI gives only the remaining duration, never an expiry time.
func (d *Decision) parse(now time.Time) (target, error) {
	if !strings.EqualFold(d.Type, "ban") {
		return target{}, fmt.Errorf("decision %d: type %q is not enforced (only ban)", d.ID, d.Type)
	}
	var p netip.Prefix
	switch {
	case strings.EqualFold(d.Scope, ScopeIP):
		a, err := netip.ParseAddr(d.Value)
		if err != nil {
			return target{}, fmt.Errorf("decision %d: scope Ip value %q: %w", d.ID, d.Value, err)
		}
		a = a.Unmap()
		p = netip.PrefixFrom(a, a.BitLen())
	case strings.EqualFold(d.Scope, ScopeRange):
		var err error
		p, err = netip.ParsePrefix(d.Value)
		if err != nil {
			return target{}, fmt.Errorf("decision %d: scope Range value %q: %w", d.ID, d.Value, err)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		p = p.Masked()
	default:
		return target{}, fmt.Errorf("decision %d: scope %q is not enforced (only Ip and Range)", d.ID, d.Scope)
	}
	if d.Duration == "" {
		return target{}, fmt.Errorf("decision %d: no duration", d.ID)
	}
	dur, err := time.ParseDuration(d.Duration)
	if err != nil {
		return target{}, fmt.Errorf("decision %d: duration %q: %w", d.ID, d.Duration, err)
	}
	return target{prefix: p, expires: now.Add(dur)}, nil
}

// scopeOf names the LAPI scope for a prefix: Ip for one address, Range otherwise.
func scopeOf(p netip.Prefix) (scope, value string) {
	if p.Bits() == p.Addr().BitLen() {
		return ScopeIP, p.Addr().String()
	}
	return ScopeRange, p.String()
}
