package detect

import "net/netip"

// Whether a flag bans: the rule must say ban, and nothing may stand in the
// way. Each obstacle is said in Flag.Ban.Skipped.

// Why a ban rule did not ban, as Flag.Ban.Skipped says.
const (
	skipMonitor        = "monitor mode"
	skipServiceMonitor = "the service is in monitor mode"
)

// decide takes a flag's action for a new episode (or again, for an episode
// whose ban monitor mode held back) and says what came of it.
func (d *Detector) decide(fs *flagState, rule *Rule, h hit, now int64) BanInfo {
	if rule.Action != ActionBan {
		return BanInfo{}
	}
	skip := ""
	switch {
	case !fs.flag.Prefix.IsValid():
		skip = "many sources: nothing to ban"
	case d.cfg.Monitor:
		skip = skipMonitor
	case h.monitored:
		skip = skipServiceMonitor
	case d.allowed(h):
		skip = "allow-listed"
	case d.opts.Banner == nil:
		skip = "no banner configured"
	}
	if skip != "" {
		d.banSkipped++
		return BanInfo{Skipped: skip}
	}
	return d.ban(fs, now)
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
