package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// ErrNotBanned is returned by Unban for a prefix that has no ban.
var ErrNotBanned = errors.New("no such ban")

// MaxBanTTL is the longest ban with an expiry: ten years. Every path from a
// duration to a kernel expiry (the control API, the policy's bans, CrowdSec
// decisions) refuses or caps what is longer; Ban refuses an expiry past it.
// A ban meant to last for ever has no expiry at all.
const MaxBanTTL = 10 * 365 * 24 * time.Hour

// ErrBanTooLong is returned by Ban for an expiry more than MaxBanTTL ahead.
var ErrBanTooLong = fmt.Errorf("expiry more than %v ahead (the longest ban with an expiry; none means until removed)", MaxBanTTL)

// Ban drops a client address or CIDR until Expires (zero: until removed). The
// kernel checks the expiry itself, so a ban lapses on time without the daemon.
type Ban struct {
	Prefix  netip.Prefix
	Expires time.Time
	// Reason is an opaque code for the daemon (who or what made the ban).
	Reason uint32
}

func banKey(p netip.Prefix) (m bool, k4 GuardAgLpm4, k6 GuardAgLpm6, err error) {
	if !p.IsValid() {
		return false, k4, k6, fmt.Errorf("invalid prefix %v", p)
	}
	if p.Addr().Is4In6() && p.Bits() >= V4MappedBits {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-V4MappedBits)
	}
	p = p.Masked()
	if p.Addr().Is4() {
		return true, lpm4(p), k6, nil
	}
	return false, k4, lpm6(p), nil
}

// Ban adds or replaces a ban.
func (d *Datapath) Ban(b Ban) error {
	is4, k4, k6, err := banKey(b.Prefix)
	if err != nil {
		return err
	}
	v := GuardAgBan{Reason: b.Reason, Prefixlen: k4.Prefixlen}
	if !is4 {
		v.Prefixlen = k6.Prefixlen
	}
	if !b.Expires.IsZero() {
		// a minute of slack: callers add MaxBanTTL to their own "now"
		if time.Until(b.Expires) > MaxBanTTL+time.Minute {
			return fmt.Errorf("ban %v: %w", b.Prefix, ErrBanTooLong)
		}
		v.Expires = wallToMono(b.Expires)
	}
	d.banMu.Lock()
	defer d.banMu.Unlock()
	// prefilter.go: the bits first, so no packet skips the trie once it holds the ban
	if err := d.banPrefilterAdd(is4, k4, k6); err != nil {
		return fmt.Errorf("ban %v: %w", b.Prefix, err)
	}
	if is4 {
		err = d.objs.Bans4.Update(k4, v, ebpf.UpdateAny)
	} else {
		err = d.objs.Bans6.Update(k6, v, ebpf.UpdateAny)
	}
	if err != nil {
		return fmt.Errorf("ban %v: %w", b.Prefix, err)
	}
	return nil
}

// Unban removes the ban on exactly this prefix.
func (d *Datapath) Unban(p netip.Prefix) error {
	is4, k4, k6, err := banKey(p)
	if err != nil {
		return err
	}
	if is4 {
		err = d.objs.Bans4.Delete(k4)
	} else {
		err = d.objs.Bans6.Delete(k6)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unban %v: %w", p, ErrNotBanned)
	}
	if err != nil {
		return fmt.Errorf("unban %v: %w", p, err)
	}
	return nil
}

// LookupBan reads the ban on exactly p as the kernel holds it.
func (d *Datapath) LookupBan(p netip.Prefix) (Ban, error) {
	is4, k4, k6, err := banKey(p)
	if err != nil {
		return Ban{}, err
	}
	var v GuardAgBan
	if is4 {
		err = d.objs.Bans4.Lookup(k4, &v)
	} else {
		err = d.objs.Bans6.Lookup(k6, &v)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Ban{}, fmt.Errorf("ban %v: %w", p, ErrNotBanned)
	}
	if err != nil {
		return Ban{}, fmt.Errorf("read ban %v: %w", p, err)
	}
	b := Ban{Prefix: p.Masked(), Reason: v.Reason}
	if v.Expires != 0 {
		b.Expires = MonoToWall(v.Expires)
	}
	return b, nil
}

// Bans lists every ban in the kernel, expired ones included until swept.
func (d *Datapath) Bans() ([]Ban, error) {
	var out []Ban
	clock := newMonoClock() // one reading of both clocks for all: equal stamps, equal times
	conv := func(v GuardAgBan) (time.Time, uint32) {
		if v.Expires == 0 {
			return time.Time{}, v.Reason
		}
		return clock.wall(v.Expires), v.Reason
	}
	if err := eachEntry(d.objs.Bans4, func(k *GuardAgLpm4, v *GuardAgBan) {
		exp, r := conv(*v)
		out = append(out, Ban{Prefix: netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)), Expires: exp, Reason: r})
	}); err != nil {
		return nil, fmt.Errorf("read IPv4 bans: %w", err)
	}
	if err := eachEntry(d.objs.Bans6, func(k *GuardAgLpm6, v *GuardAgBan) {
		exp, r := conv(*v)
		out = append(out, Ban{Prefix: netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen)), Expires: exp, Reason: r})
	}); err != nil {
		return nil, fmt.Errorf("read IPv6 bans: %w", err)
	}
	return out, nil
}

// SweepBans deletes bans that expired before now and returns them. The kernel
// already ignores them; this only frees their entries. It holds banMu from
// the read to the last delete, so a ban that Ban renews meanwhile is not
// deleted as the expired one it replaced, and rebuilds the bitmaps under it.
func (d *Datapath) SweepBans(now time.Time) ([]Ban, error) {
	d.banMu.Lock()
	defer d.banMu.Unlock()
	bans, err := d.Bans()
	if err != nil {
		return nil, err
	}
	var gone []Ban
	for _, b := range bans {
		if b.Expires.IsZero() || b.Expires.After(now) {
			continue
		}
		if err := d.Unban(b.Prefix); err != nil && !errors.Is(err, ErrNotBanned) {
			return gone, err
		}
		gone = append(gone, b)
	}
	if len(gone) > 0 {
		// prefilter.go: clear the bits of the bans gone
		if err := d.rebuildBanPrefilters(); err != nil {
			return gone, err
		}
	}
	return gone, nil
}
