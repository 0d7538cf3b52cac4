package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/control"
)

// Who made a ban. The kernel keeps only a number per ban (sourceCodes); the
// text reason lives in the daemon's ban book.
const (
	SourceManual   = "manual"
	SourceDetector = "detector"
	sourceUnknown  = "unknown"
)

var sourceCodes = map[string]uint32{SourceManual: 1, SourceDetector: 2, SourceCrowdSec: 3}

func sourceCode(s string) uint32 { return sourceCodes[s] }

func sourceName(code uint32) string {
	for s, c := range sourceCodes {
		if c == code {
			return s
		}
	}
	return sourceUnknown
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// openBans reads the ban book and reconciles it with the kernel's map.
func (d *Daemon) openBans() error {
	b, err := openBook(d.cfg.StateDir, d.log)
	if err != nil {
		return err
	}
	d.bans = b
	return d.reconcileBans(time.Now())
}

// reconcileBans lines the book up with the kernel at start. A ban the book has
// and the kernel lacks was lost with the maps (a reboot, or a detach) when the
// maps are new: it is restored until it expires. With adopted maps the kernel
// is right and the record goes.
func (d *Daemon) reconcileBans(now time.Time) error {
	d.bans.mu.Lock()
	defer d.bans.mu.Unlock()
	kernel, err := d.dp.Bans()
	if err != nil {
		return err
	}
	have := map[netip.Prefix]bool{}
	for _, kb := range kernel {
		have[kb.Prefix.Masked()] = true
	}
	restored := 0
	var dropped []netip.Prefix
	for p, r := range d.bans.recs {
		switch {
		case have[p]:
			continue
		case !r.Expires.IsZero() && !r.Expires.After(now), d.dp.Adopted():
			dropped = append(dropped, p)
		default:
			err := d.dp.Ban(loader.Ban{Prefix: p, Expires: r.Expires, Reason: sourceCode(r.Source)})
			if errors.Is(err, loader.ErrBanTooLong) {
				// a record no version of the daemon writes: it must not stop the start
				d.log.Warn("ban record not restored: its expiry is past the longest ban", "prefix", p, "expires", r.Expires)
				dropped = append(dropped, p)
				continue
			}
			if err != nil {
				return fmt.Errorf("restore ban on %v: %w", p, err)
			}
			restored++
		}
	}
	if restored > 0 {
		d.log.Info("restored bans from the state directory", "bans", restored)
	}
	if len(dropped) > 0 {
		if _, err := d.bans.dropLocked(dropped...); err != nil {
			d.log.Warn("could not record the bans gone from the kernel; their records stay until the next sweep", "err", err)
		}
	}
	return nil
}

// Ban bans p for ttl (0: until removed) and remembers why and who asked.
// Addresses the allow list covers are refused: the allow list is checked
// before bans, so such a ban would do nothing.
func (d *Daemon) Ban(p netip.Prefix, ttl time.Duration, reason, source string) (control.Ban, error) {
	if !p.IsValid() {
		return control.Ban{}, control.Invalidf("invalid prefix")
	}
	p = p.Masked()
	if ttl > loader.MaxBanTTL {
		return control.Ban{}, control.Invalidf("ttl %v is longer than the longest ban, %v (ten years); a ban without a ttl (0) lasts until removed", ttl, loader.MaxBanTTL)
	}
	if a, ok := d.allowCovering(p); ok {
		return control.Ban{}, fmt.Errorf("%w: %v is on the allow list (%v), which is checked before bans: a ban would have no effect",
			control.ErrInvalid, p, a)
	}
	now := time.Now()
	rec := banRecord{Prefix: p, Reason: reason, Source: source, Created: now}
	if ttl > 0 {
		rec.Expires = now.Add(ttl)
	}
	seq, err := d.banAndRecord(rec)
	if err != nil {
		return control.Ban{}, err
	}
	// the answer says what the kernel holds, not what was asked
	if kb, err := d.dp.LookupBan(p); err == nil {
		rec.Expires = kb.Expires
	}
	d.log.Info("banned", "prefix", p, "ttl", ttl, "reason", reason, "source", source)
	if err := d.settle(seq, source, "ban", p); err != nil {
		return control.Ban{}, err
	}
	return rec.api(), nil
}

// What banAndRecord and unbanAndRecord return for settle when there is no record
// to wait for: nothing was to be recorded, or the record could not be written.
const (
	noRecord     = 0
	recordFailed = ^uint64(0)
)

// banAndRecord bans in the kernel, then records it (both under bans.mu) and
// returns the record's sequence number. A record that cannot be written
// leaves the ban standing (its reason reads "unknown" after a restart, a
// reboot does not restore it).
func (d *Daemon) banAndRecord(rec banRecord) (seq uint64, err error) {
	d.bans.mu.Lock()
	defer d.bans.mu.Unlock()
	if err := d.dp.Ban(loader.Ban{Prefix: rec.Prefix, Expires: rec.Expires, Reason: sourceCode(rec.Source)}); err != nil {
		return noRecord, err
	}
	seq, err = d.bans.putLocked(rec)
	if err != nil {
		d.log.Warn("could not record the ban in the ban book; it will read 'unknown' after a restart", "prefix", rec.Prefix, "err", err)
		return recordFailed, nil
	}
	return seq, nil
}

// settle makes a change someone waits for durable before it is acknowledged:
// a ban or unban by hand (the CLI, the control API) survives a power cut once
// answered. The detector's and the sweeper's records are synced within
// bookSyncEvery (they survive the daemon being killed at once): the detector
// must not wait for a disk under its lock. It runs without bans.mu, so
// concurrent callers share one fdatasync.
func (d *Daemon) settle(seq uint64, source, what string, p netip.Prefix) error {
	switch {
	case source == SourceDetector, seq == noRecord:
		return nil
	case seq == recordFailed:
		return fmt.Errorf("%s %v is in force in the kernel, but the ban book could not record it: it would not survive a reboot", what, p)
	}
	if err := d.bans.sync(seq); err != nil {
		return fmt.Errorf("%s %v is in force in the kernel, but the ban book could not sync it to disk: %w", what, p, err)
	}
	return nil
}

// Unban lifts the ban on exactly p.
func (d *Daemon) Unban(p netip.Prefix) error {
	p = p.Masked()
	seq, err := d.unbanAndRecord(p)
	if err != nil {
		return err
	}
	// an unban answered must not come back: the book would restore the ban
	// after a reboot
	return d.settle(seq, SourceManual, "unban of", p)
}

func (d *Daemon) unbanAndRecord(p netip.Prefix) (uint64, error) {
	d.bans.mu.Lock()
	defer d.bans.mu.Unlock()
	if err := d.dp.Unban(p); err != nil {
		if errors.Is(err, loader.ErrNotBanned) {
			return noRecord, control.NotFoundf("no ban on %v", p)
		}
		return noRecord, err
	}
	rec, known := d.bans.recs[p]
	d.log.Info("unbanned", "prefix", p, "reason", rec.Reason, "known", known)
	if !known {
		return noRecord, nil // the book never had it (a CrowdSec ban, a foreign one)
	}
	seq, err := d.bans.dropLocked(p)
	if err != nil {
		d.log.Warn("could not record the unban in the ban book", "prefix", p, "err", err)
		return recordFailed, nil
	}
	return seq, nil
}

func (d *Daemon) allowCovering(p netip.Prefix) (netip.Prefix, bool) {
	d.polMu.Lock()
	defer d.polMu.Unlock()
	if d.pol == nil {
		return netip.Prefix{}, false
	}
	for _, a := range d.pol.pol.Spec.Allow {
		if a.Addr().Is4() == p.Addr().Is4() && a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
			return a, true
		}
	}
	return netip.Prefix{}, false
}

func (r banRecord) api() control.Ban {
	b := control.Ban{Prefix: r.Prefix.String(), Reason: r.Reason, Source: r.Source}
	if !r.Created.IsZero() {
		c := r.Created
		b.Created = &c
	}
	if !r.Expires.IsZero() {
		e := r.Expires
		b.Expires = &e
	}
	return b
}

// listBans is every ban in force, explained where the book knows it. A
// CrowdSec ban names its LAPI origin: crowdsec:<origin>.
func (d *Daemon) listBans(now time.Time) ([]control.Ban, error) {
	out, fromCS, err := d.bookBans(now)
	if err != nil {
		return nil, err
	}
	// after bans.mu is released: the bouncer takes its own lock before bans.mu
	for _, i := range fromCS {
		p := netip.MustParsePrefix(out[i].Prefix)
		out[i].Reason = "CrowdSec decision"
		if o := d.crowdSecOrigin(p); o != "" {
			out[i].Source = SourceCrowdSec + ":" + o
		}
	}
	return out, nil
}

func (d *Daemon) bookBans(now time.Time) (out []control.Ban, fromCS []int, err error) {
	d.bans.mu.Lock()
	defer d.bans.mu.Unlock()
	kernel, err := d.dp.Bans()
	if err != nil {
		return nil, nil, err
	}
	out = make([]control.Ban, 0, len(kernel))
	for _, kb := range kernel {
		if !kb.Expires.IsZero() && !kb.Expires.After(now) {
			continue // lapsed: the kernel ignores it and the sweeper will free it
		}
		p := kb.Prefix.Masked()
		rec, ok := d.bans.recs[p]
		if !ok || sourceCode(rec.Source) != kb.Reason || rec.Expires.IsZero() != kb.Expires.IsZero() {
			// made by someone else (or the book was lost): say only what the kernel knows
			rec = banRecord{Prefix: p, Reason: "unknown", Source: sourceName(kb.Reason), Expires: kb.Expires}
		}
		rec.Expires = kb.Expires // the kernel's expiry is the one in force
		out = append(out, rec.api())
	}
	slices.SortFunc(out, func(a, b control.Ban) int {
		return comparePrefix(netip.MustParsePrefix(a.Prefix), netip.MustParsePrefix(b.Prefix))
	})
	for i := range out {
		if out[i].Source == SourceCrowdSec {
			fromCS = append(fromCS, i)
		}
	}
	return out, fromCS, nil
}

// sweepBans frees expired bans every SweepEvery. The kernel already ignores
// them; this keeps the map and the book small.
func (d *Daemon) sweepBans(ctx context.Context) error {
	t := time.NewTicker(d.cfg.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if err := d.sweepOnce(now); err != nil {
				// a failed sweep costs only map space; try again next tick
				d.log.Warn("ban sweep failed", "err", err)
			}
		}
	}
}

func (d *Daemon) sweepOnce(now time.Time) error {
	d.bans.mu.Lock()
	defer d.bans.mu.Unlock()
	gone, err := d.dp.SweepBans(now)
	var forget []netip.Prefix
	defer func() {
		if len(forget) == 0 {
			return
		}
		if _, err := d.bans.dropLocked(forget...); err != nil {
			d.log.Warn("could not record swept bans in the ban book; a restart drops them anyway", "err", err)
		}
	}()
	for _, b := range gone {
		p := b.Prefix.Masked()
		rec, ok := d.bans.recs[p]
		if !ok {
			// CrowdSec's bans: the LAPI logs them; 100k expiring at once would flood the log
			continue
		}
		d.log.Info("ban expired", "prefix", p, "reason", rec.Reason, "source", rec.Source)
		delete(d.bans.recs, p) // now, so that the loop below does not meet it again
		forget = append(forget, p)
	}
	if err != nil {
		return err
	}
	// forget records whose ban is gone some other way
	kernel, err := d.dp.Bans()
	if err != nil {
		return err
	}
	have := map[netip.Prefix]bool{}
	for _, kb := range kernel {
		have[kb.Prefix.Masked()] = true
	}
	for p := range d.bans.recs {
		if !have[p] {
			forget = append(forget, p)
		}
	}
	return nil
}
