package daemon

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/crowdsec"
)

// The daemon imports and flushes bans in bulk.
var _ control.BanBulk = (*Daemon)(nil)

// ImportBans bans each prefix as AddBan would (never-ban and allow-listed
// prefixes are refused, each with why, and so are ranges broader than a
// CrowdSec decision may be unless forced), records them all, and syncs the
// ban book once for the lot: an import of 100k bans costs one fdatasync,
// not 100k.
func (d *Daemon) ImportBans(ctx context.Context, bans []control.NewBan) (*control.ImportResult, error) {
	res := &control.ImportResult{Refused: []control.ImportRefusal{}}
	d.polMu.Lock()
	var defTTL time.Duration
	if d.pol != nil {
		defTTL = d.pol.pol.Spec.Bans.TTL
	}
	d.polMu.Unlock()
	var last uint64
	failed := false
	now := time.Now()
	for i, nb := range bans {
		if err := ctx.Err(); err != nil {
			return nil, err // the caller went away: what is banned stays, recorded
		}
		refuse := func(err error) {
			res.Refused = append(res.Refused, control.ImportRefusal{Index: i, Prefix: nb.Prefix.String(), Error: err.Error()})
		}
		p := nb.Prefix.Masked()
		if why, ok := d.neverBan(p); ok && !nb.Force {
			refuse(control.Refusedf("covers an address that is never banned: %s", why))
			continue
		}
		if least := importMinPrefix(p); p.Bits() < least && !nb.Force {
			refuse(control.Refusedf("a range broader than /%d, the broadest a list from elsewhere may ban (as for a CrowdSec decision); force bans it anyway", least))
			continue
		}
		if a, ok := d.allowCovering(p); ok {
			refuse(control.Invalidf("on the allow list (%v), which is checked before bans", a))
			continue
		}
		ttl := nb.TTL
		if nb.DefaultTTL {
			ttl = defTTL
		}
		rec := banRecord{Prefix: p, Reason: nb.Reason, Source: SourceManual, Created: now}
		if ttl > 0 {
			rec.Expires = now.Add(ttl)
		}
		seq, err := d.banAndRecord(rec)
		if err != nil {
			refuse(err)
			continue
		}
		switch seq {
		case recordFailed:
			failed = true
		case noRecord:
		default:
			last = max(last, seq)
		}
		res.Added++
	}
	d.tel.manualBans.Add(uint64(res.Added))
	d.log.Info("bans imported", "added", res.Added, "refused", len(res.Refused))
	if failed {
		return res, errors.New("some imported bans are in force in the kernel but the ban book could not record them: they would not survive a reboot")
	}
	if last > 0 {
		if err := d.bans.sync(last); err != nil {
			return res, err
		}
	}
	return res, nil
}

// importMinPrefix is the broadest range an import bans without force: a
// list from elsewhere is trusted no more than a CrowdSec decision, and one
// line of 128.0.0.0/1 cuts half the Internet off without covering any
// address of the never-ban set.
func importMinPrefix(p netip.Prefix) int {
	if p.Addr().Is4() {
		return crowdsec.DefaultMinPrefix4
	}
	return crowdsec.DefaultMinPrefix6
}

// FlushBans lifts every ban made by hand, by the detector, or both.
// CrowdSec's bans are left to the LAPI's decisions.
func (d *Daemon) FlushBans(ctx context.Context, source string) (*control.FlushResult, error) {
	bans, err := d.listBans(time.Now())
	if err != nil {
		return nil, err
	}
	res := &control.FlushResult{Source: source}
	var last uint64
	for _, b := range bans {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !flushes(source, b.Source) {
			continue
		}
		p, err := control.ParsePrefix(b.Prefix)
		if err != nil {
			return nil, err
		}
		seq, err := d.unbanAndRecord(p)
		if errors.Is(err, control.ErrNotFound) {
			continue // it expired meanwhile
		}
		if err != nil {
			return res, err
		}
		if seq != noRecord && seq != recordFailed {
			last = max(last, seq)
		}
		res.Removed++
	}
	d.log.Info("bans flushed", "source", source, "removed", res.Removed)
	if last > 0 {
		if err := d.bans.sync(last); err != nil {
			return res, err
		}
	}
	return res, nil
}

func flushes(source, banSource string) bool {
	if strings.HasPrefix(banSource, SourceCrowdSec) {
		return false
	}
	switch source {
	case control.FlushAll:
		return true
	case control.FlushManual:
		return banSource == SourceManual
	case control.FlushDetector:
		return banSource == SourceDetector
	}
	return false
}
