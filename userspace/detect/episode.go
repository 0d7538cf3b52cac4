package detect

import (
	"net/netip"
	"time"
)

// A flag is one subject (a client key, a prefix, a service) for one reason. It
// lives through episodes: an episode starts when the rule's threshold is
// crossed, goes on while evidence keeps coming within the rule's window (and
// its ban, if any, holds), and the next crossing after that is a new episode,
// with the rule's action taken again.

// hit is a rule's threshold crossed by one subject: what raise needs to know.
type hit struct {
	reason Reason
	// prefix is the subject (a client key, or a prefix for aggregate); the
	// zero Prefix when a whole service is the subject.
	prefix  netip.Prefix
	service uint32
	// source is the evidence's own address (an event's, a signal's), checked
	// against the allow list with the prefix.
	source netip.Addr
	// monitored: the evidence came from a service in monitor mode, whose drops
	// were passes.
	monitored bool
	// flagOnly: the rule flags from a lower count than it acts at
	// (scanner-agent) and the count is below that: flag, whatever the
	// rule's action.
	flagOnly bool
}

// flagKey is plain memory, so the map hashes it in one pass: it is looked up
// on every event of a flagged client.
type flagKey struct {
	addr    [16]byte
	bits    uint8
	reason  uint8
	service uint32
}

func keyOf(p netip.Prefix, service uint32, reason Reason) flagKey {
	k := flagKey{service: service, reason: uint8(reason.index() + 1)}
	if p.IsValid() {
		k.addr = p.Addr().As16()
		k.bits = uint8(p.Bits())
	}
	return k
}

type flagState struct {
	flag        Flag
	first, last int64
	evidenceAt  int64
	window      time.Duration
	banUntil    int64 // 0: no ban in force from this flag
}

// raise records evidence for a flag. A flag still within its window (and whose
// ban, if any, still holds) is the same episode: only its evidence moves on.
// Otherwise a new episode starts and the rule's action is taken.
//
// evidence describes what the rule counted. It is called at most once per
// window bucket while a flag stays active: for a scanner it walks thousands of
// ports. (It is not part of the hit, which the ban decision passes on: that
// would make every rule's closure escape to the heap.)
func (d *Detector) raise(now int64, h hit, evidence func() Evidence) {
	rule := d.cfg.rule(h.reason)
	bucket := d.span(h.reason).bucket
	key := keyOf(h.prefix, h.service, h.reason)
	fs, ok := d.flags.get(key)
	if ok && now-fs.last < int64(fs.window) && (fs.banUntil == 0 || now < fs.banUntil) {
		fs.last = max(fs.last, now)
		if now-fs.evidenceAt >= bucket {
			fs.flag.Evidence = evidence()
			fs.flag.Evidence.Window = rule.Window
			fs.flag.Proven = d.proven(h, now)
			fs.evidenceAt = now
		}
		// a ban held back by what may change (monitor mode, a source not
		// yet proven): the same ongoing episode is banned once it changes,
		// rather than waiting for a new one
		if d.unblocked(fs, h) {
			fs.flag.Ban = d.decide(fs, rule, h, now, false)
		}
		// an episode that only flagged until its count reached the rule's
		// threshold (scanner-agent), or whose rule was switched to ban
		// since, bans now
		if fs.flag.Action == ActionFlag && rule.Action == ActionBan && !h.flagOnly {
			fs.flag.Action = rule.Action
			fs.flag.Evidence = evidence()
			fs.flag.Evidence.Window = rule.Window
			fs.evidenceAt = now
			fs.flag.Ban = d.decide(fs, rule, h, now, true)
			d.logFlag(fs, h, "client flagged again; the rule acts now")
		}
		return
	}
	evid := evidence()
	evid.Window = rule.Window
	if !ok {
		if d.flags.len() >= d.cfg.MaxFlags {
			old, _, _ := d.flags.oldest()
			d.flags.remove(old)
		}
		fs = &flagState{first: now, flag: Flag{Prefix: h.prefix, Service: h.service, Reason: h.reason}}
		d.flags.put(key, fs)
	}
	fs.last = now
	fs.evidenceAt = now
	fs.window = rule.Window
	fs.banUntil = 0
	fs.flag.Episodes++
	fs.flag.Action = rule.Action
	if h.flagOnly {
		fs.flag.Action = ActionFlag
	}
	fs.flag.Evidence = evid
	fs.flag.Proven = d.proven(h, now)
	fs.flag.Ban = d.decide(fs, &Rule{Action: fs.flag.Action, BanUnproven: rule.BanUnproven}, h, now, true)
	d.flagged[h.reason.index()]++
	d.logFlag(fs, h, "client flagged")
}

// logFlag logs a flag raised (or acted on) and its outcome.
func (d *Detector) logFlag(fs *flagState, h hit, msg string) {
	attrs := []any{"reason", h.reason, "subject", fs.flag.Subject(), "evidence", fs.flag.Evidence.Summary, "outcome", fs.flag.Ban.String()}
	if fs.flag.Ban.Error != "" {
		d.log.Warn(msg+"; ban failed", attrs...)
	} else {
		d.log.Info(msg, attrs...)
	}
}

// pruneFlags drops flags quiet for their window and retention whose ban is over.
func (d *Detector) pruneFlags(now int64) {
	for {
		k, fs, ok := d.flags.oldest()
		if !ok || now-fs.last < int64(fs.window+d.cfg.FlagRetention) || now < fs.banUntil {
			break
		}
		d.flags.remove(k)
	}
}
