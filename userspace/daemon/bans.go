package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
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

const banStateFile = "bans.json"

// banRecord is what the kernel does not keep about a ban.
type banRecord struct {
	Prefix  netip.Prefix `json:"prefix"`
	Reason  string       `json:"reason"`
	Source  string       `json:"source"`
	Created time.Time    `json:"created"`
	Expires time.Time    `json:"expires,omitzero"`
}

type banFile struct {
	Bans []banRecord `json:"bans"`
}

// banBook holds the reasons of the bans in force, saved to the state directory
// after every change. The kernel's map says which bans exist; the book only
// explains them.
type banBook struct {
	// mu is held across each kernel update and the save that follows it, so the
	// map and the book change in the same order.
	mu   sync.Mutex
	path string
	recs map[netip.Prefix]banRecord
}

func (b *banBook) saveLocked() error {
	f := banFile{Bans: make([]banRecord, 0, len(b.recs))}
	for _, r := range b.recs {
		f.Bans = append(f.Bans, r)
	}
	slices.SortFunc(f.Bans, func(x, y banRecord) int { return comparePrefix(x.Prefix, y.Prefix) })
	return writeJSONFile(b.path, f)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// openBans reads the ban book and reconciles it with the kernel's map.
func (d *Daemon) openBans() error {
	b := &banBook{path: filepath.Join(d.cfg.StateDir, banStateFile), recs: map[netip.Prefix]banRecord{}}
	var f banFile
	if _, err := readJSONFile(b.path, &f); err != nil {
		// keep the damaged file for a human; bans still work, their reasons are lost
		bad := b.path + ".corrupt"
		if rerr := os.Rename(b.path, bad); rerr != nil {
			return fmt.Errorf("%w (and moving it aside failed: %v)", err, rerr)
		}
		d.log.Warn("ban state file is damaged; moved aside, starting without ban reasons", "err", err, "moved_to", bad)
	}
	for _, r := range f.Bans {
		if r.Prefix.IsValid() {
			b.recs[r.Prefix.Masked()] = r
		}
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
	restored, dropped := 0, 0
	for p, r := range d.bans.recs {
		switch {
		case have[p]:
			continue
		case !r.Expires.IsZero() && !r.Expires.After(now), d.dp.Adopted():
			delete(d.bans.recs, p)
			dropped++
		default:
			if err := d.dp.Ban(loader.Ban{Prefix: p, Expires: r.Expires, Reason: sourceCode(r.Source)}); err != nil {
				return fmt.Errorf("restore ban on %v: %w", p, err)
			}
			restored++
		}
	}
	if restored > 0 {
		d.log.Info("restored bans from the state directory", "bans", restored)
	}
	if restored+dropped > 0 {
		if err := d.bans.saveLocked(); err != nil {
			d.log.Warn("could not save ban reasons; they will read 'unknown' after a restart", "err", err)
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
	if a, ok := d.allowCovering(p); ok {
		return control.Ban{}, fmt.Errorf("%w: %v is on the allow list (%v), which is checked before bans: a ban would have no effect",
			control.ErrInvalid, p, a)
	}
	now := time.Now()
	rec := banRecord{Prefix: p, Reason: reason, Source: source, Created: now}
	if ttl > 0 {
		rec.Expires = now.Add(ttl)
	}
	d.bans.mu.Lock()
	defer d.bans.mu.Unlock()
	if err := d.dp.Ban(loader.Ban{Prefix: p, Expires: rec.Expires, Reason: sourceCode(source)}); err != nil {
		return control.Ban{}, err
	}
	d.bans.recs[p] = rec
	if err := d.bans.saveLocked(); err != nil {
		d.log.Warn("could not save ban reasons; they will read 'unknown' after a restart", "err", err)
	}
	d.log.Info("banned", "prefix", p, "ttl", ttl, "reason", reason, "source", source)
	return rec.api(), nil
}

// Unban lifts the ban on exactly p.
func (d *Daemon) Unban(p netip.Prefix) error {
	p = p.Masked()
	d.bans.mu.Lock()
	defer d.bans.mu.Unlock()
	if err := d.dp.Unban(p); err != nil {
		if errors.Is(err, loader.ErrNotBanned) {
			return control.NotFoundf("no ban on %v", p)
		}
		return err
	}
	rec, known := d.bans.recs[p]
	delete(d.bans.recs, p)
	if err := d.bans.saveLocked(); err != nil {
		d.log.Warn("could not save ban reasons", "err", err)
	}
	d.log.Info("unbanned", "prefix", p, "reason", rec.Reason, "known", known)
	return nil
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
	changed := false
	for _, b := range gone {
		p := b.Prefix.Masked()
		rec, ok := d.bans.recs[p]
		if !ok {
			// CrowdSec's bans: the LAPI logs them; 100k expiring at once would flood the log
			continue
		}
		d.log.Info("ban expired", "prefix", p, "reason", rec.Reason, "source", rec.Source)
		{
			delete(d.bans.recs, p)
			changed = true
		}
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
			delete(d.bans.recs, p)
			changed = true
		}
	}
	if changed {
		return d.bans.saveLocked()
	}
	return nil
}
