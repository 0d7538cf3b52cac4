package detect

import (
	"math"
	"time"
)

// A ban lasts Bans.TTL for a first offence and Growth times longer for each
// earlier ban of the same subject, up to MaxTTL; an offender whose last ban
// ended ForgetAfter ago starts over.

type offender struct {
	bans  int
	until int64 // the latest ban's end
}

// ban bans the flag's subject for its offender's next TTL.
func (d *Detector) ban(fs *flagState, now int64) BanInfo {
	p := fs.flag.Prefix
	o, ok := d.offenders.get(p)
	if !ok {
		if d.offenders.len() >= d.cfg.MaxClients {
			old, _, _ := d.offenders.oldest()
			d.offenders.remove(old)
		}
		o = &offender{}
		d.offenders.put(p, o)
	}
	if o.bans > 0 && now-o.until >= int64(d.cfg.Bans.ForgetAfter) {
		o.bans = 0
	}
	ttl := d.ttl(o.bans)
	if err := d.opts.Banner.Ban(p, ttl, fs.flag.Reason, fs.flag.Evidence.Summary); err != nil {
		d.banErrors++
		return BanInfo{Error: err.Error()}
	}
	d.bans++
	o.bans++
	o.until = now + int64(ttl)
	fs.banUntil = o.until
	return BanInfo{Banned: true, TTL: ttl, Expires: d.opts.Wall(uint64(now)).Add(ttl)}
}

// ttl is the ban for an offender with earlier bans: TTL * Growth^earlier, capped.
func (d *Detector) ttl(earlier int) time.Duration {
	b := d.cfg.Bans
	t := float64(b.TTL) * math.Pow(b.Growth, float64(earlier))
	if t >= float64(b.MaxTTL) || math.IsInf(t, 0) || math.IsNaN(t) {
		return b.MaxTTL
	}
	return time.Duration(t)
}

// pruneOffenders forgets offenders whose last ban ended ForgetAfter ago.
func (d *Detector) pruneOffenders(now int64) {
	for {
		k, o, ok := d.offenders.oldest()
		if !ok || now-o.until < int64(d.cfg.Bans.ForgetAfter) {
			break
		}
		d.offenders.remove(k)
	}
}
