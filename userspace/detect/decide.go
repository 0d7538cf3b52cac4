package detect

import (
	"net/netip"
	"time"
)

// Whether a flag bans: the rule must say ban, and nothing may stand in the
// way. Each obstacle is said in Flag.Ban.Skipped.

// Why a ban rule did not ban, as Flag.Ban.Skipped says.
const (
	skipMonitor        = "monitor mode"
	skipServiceMonitor = "the service is in monitor mode"
	// packet evidence names a source its sender wrote (proof.go in the
	// datapath: bpf/include/proof.h)
	skipUnproven = "unproven source: no TCP handshake completed within proofTTL, and the packets may be forged; the kernel's limits hold the line"
	// followed by why the subject may never be banned
	skipNeverBan = "never banned: "
	skipCapped   = "over the ban-rate cap (bans.maxPerMinute)"
)

// unblocked says whether what held an ongoing episode's ban back is gone:
// monitor mode was switched off, or the source has proved itself since.
func (d *Detector) unblocked(fs *flagState, h hit) bool {
	switch fs.flag.Ban.Skipped {
	case skipMonitor, skipServiceMonitor:
		return !d.cfg.Monitor && !h.monitored
	case skipUnproven:
		return fs.flag.Proven
	case skipCapped:
		return true // decide looks at the cap again
	}
	return false
}

// decide takes a flag's action and says what came of it: first for a new
// episode, again while an episode whose ban was held back goes on (its
// obstacle is counted once, the first time).
func (d *Detector) decide(fs *flagState, rule *Rule, h hit, now int64, first bool) BanInfo {
	if rule.Action != ActionBan {
		return BanInfo{}
	}
	if why, counter := d.obstacle(fs, rule, h, now); why != "" {
		if first {
			d.banSkipped++
			if counter != nil {
				*counter++
			}
		}
		return BanInfo{Skipped: why}
	}
	info := d.ban(fs, now)
	if info.Banned {
		d.recent = append(d.recent, now)
	}
	return info
}

// obstacle is what stands between a ban rule and its ban, if anything, with
// the counter it has beside Totals.BansSkipped. The cheap and definite ones
// come first; the ban-rate cap last, so that it counts only bans that would
// otherwise be made.
func (d *Detector) obstacle(fs *flagState, rule *Rule, h hit, now int64) (string, *uint64) {
	switch {
	case !fs.flag.Prefix.IsValid():
		return "many sources: nothing to ban", nil
	case d.opts.Banner == nil:
		return "no banner configured", nil
	case d.cfg.Monitor:
		return skipMonitor, nil
	case h.monitored:
		return skipServiceMonitor, nil
	case d.allowed(h):
		return "allow-listed", nil
	}
	if why, never := d.opts.NeverBan(fs.flag.Prefix); never {
		return skipNeverBan + why, &d.neverBan
	}
	if !fs.flag.Proven && !rule.BanUnproven {
		return skipUnproven, &d.unproven
	}
	if d.overCap(now) {
		return skipCapped, &d.capped
	}
	return "", nil
}

// overCap says whether Bans.MaxPerMinute bans were made within the minute
// before now, forgetting those made earlier.
func (d *Detector) overCap(now int64) bool {
	i := 0
	for i < len(d.recent) && now-d.recent[i] >= int64(time.Minute) {
		i++
	}
	if i > 0 {
		d.recent = append(d.recent[:0], d.recent[i:]...)
	}
	return len(d.recent) >= d.cfg.Bans.MaxPerMinute
}

// proven says whether the hit's subject proved itself as the evidence's
// sender: API evidence comes over a connection whose handshake completed; a
// packet's source address proves nothing, a TCP handshake completed with this
// host within Bans.ProofTTL does.
func (d *Detector) proven(h hit, now int64) bool {
	if table[h.reason.index()].layer == apiLayer {
		return true
	}
	if !h.prefix.IsValid() || d.opts.ProofOf == nil {
		return false
	}
	at, ok := d.opts.ProofOf(h.prefix)
	return ok && now-at < int64(d.cfg.Bans.ProofTTL)
}

// allowed reports whether the allow list covers the hit's source, or the
// first or last address of its prefix (a ban would cover them all).
func (d *Detector) allowed(h hit) bool {
	if h.source.IsValid() && d.opts.IsAllowed(h.source) {
		return true
	}
	return d.opts.IsAllowed(h.prefix.Addr()) || d.opts.IsAllowed(lastAddr(h.prefix))
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.AsSlice()
	for i := range b {
		if bits := p.Bits() - 8*i; bits < 8 {
			b[i] |= byte(0xff >> max(bits, 0))
		}
	}
	out, _ := netip.AddrFromSlice(b)
	return out
}
