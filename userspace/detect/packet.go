package detect

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/events"
)

// The packet rules: flood, syn-flood, scan, deny-probe, bad-flags and
// aggregate count the kernel's events.

var (
	evLimited    = uint8(loader.GuardAgEventTypeAG_EV_LIMITED)
	evSynLimited = uint8(loader.GuardAgEventTypeAG_EV_SYN_LIMITED)
	evDenyHit    = uint8(loader.GuardAgEventTypeAG_EV_DENY_HIT)
	evBanHit     = uint8(loader.GuardAgEventTypeAG_EV_BAN_HIT)
	evBadFlags   = uint8(loader.GuardAgEventTypeAG_EV_BAD_FLAGS)
	evNoService  = uint8(loader.GuardAgEventTypeAG_EV_NO_SERVICE)

	rClientPPS  = uint8(loader.GuardAgReasonAG_R_CLIENT_PPS)
	rServiceCPS = uint8(loader.GuardAgReasonAG_R_SERVICE_CPS)
	kinds       = uint8(loader.GuardAgKindAG_KIND_MAX)
)

const (
	levelClient  = uint8(loader.GuardAgLevelAG_LEVEL_CLIENT)
	levelPrefix  = uint8(loader.GuardAgLevelAG_LEVEL_PREFIX)
	levelService = uint8(loader.GuardAgLevelAG_LEVEL_SERVICE)
)

func kernelReason(ev *loader.Event) string { return loader.Reason(ev.Reason).String() }

// eventHit is a hit by the source of a kernel event.
func eventHit(reason Reason, p netip.Prefix, ev *loader.Event) hit {
	return hit{reason: reason, prefix: p, source: loader.SourceAddr(ev),
		monitored: loader.Action(ev.Action) == loader.ActionMonitor}
}

// serviceHit is a hit by a whole service: many sources, none to blame.
func serviceHit(reason Reason, ev *loader.Event) hit {
	return hit{reason: reason, service: ev.Service, monitored: loader.Action(ev.Action) == loader.ActionMonitor}
}

func (d *Detector) sighted(ev *loader.Event, now int64) {
	cfg := &d.cfg
	switch ev.Type {
	case evDenyHit, evBanHit:
		if !cfg.DenyProbe.Enabled {
			return
		}
	case evBadFlags:
		if !cfg.BadFlags.Enabled {
			return
		}
	case evNoService:
		if !cfg.Scan.Enabled {
			return
		}
	}
	k, pfx := d.key(ev, cfg.ClientBits4, cfg.ClientBits6)
	if c, ok := d.clients.get(k); ok {
		c.last = max(c.last, now)
		d.perClient(c, ev, now)
		return
	}
	slot := &d.first[k.hash()&(firstSightSlots-1)]
	if slot.at == 0 || slot.key != k || now-slot.at >= d.idle {
		*slot = sighting{key: k, at: now, ev: *ev}
		return
	}
	prev := slot.ev
	slot.at = 0
	c := d.newClient(k, pfx, now)
	d.perClient(c, &prev, int64(prev.Ts))
	d.perClient(c, ev, now)
}

// perClient counts a deny/ban hit, an invalid-flags event or a SYN to a
// closed port for client c.
func (d *Detector) perClient(c *client, ev *loader.Event, now int64) {
	cfg := &d.cfg
	switch ev.Type {
	case evDenyHit, evBanHit:
		r := lazyRing(&c.deny)
		r.add(d.span(DenyProbe), now, 1)
		if r.sum > cfg.DenyProbe.Hits {
			d.raise(now, eventHit(DenyProbe, c.prefix, ev), func() Evidence {
				return Evidence{
					Events: r.sum, Kernel: kernelReason(ev),
					Summary: fmt.Sprintf("%d deny-list or ban hits in %v", r.sum, cfg.DenyProbe.Window),
				}
			})
		}
	case evBadFlags:
		r := lazyRing(&c.bad)
		r.add(d.span(BadFlags), now, 1)
		if r.sum > cfg.BadFlags.Packets {
			d.raise(now, eventHit(BadFlags, c.prefix, ev), func() Evidence {
				return Evidence{
					Events: r.sum, Kernel: kernelReason(ev),
					Summary: fmt.Sprintf("%d packets with invalid TCP flags (latest %s) in %v", r.sum, events.TCPFlagString(ev.TcpFlags), cfg.BadFlags.Window),
				}
			})
		}
	case evNoService:
		d.scan(c, ev, now)
	}
}

// limited handles the limit events. Each names the bucket that refused: a
// client (flood, syn-flood), a prefix (aggregate) or a whole service.
func (d *Detector) limited(ev *loader.Event, now int64) {
	if ev.Reason < rClientPPS || ev.Reason > rServiceCPS {
		return
	}
	cfg := &d.cfg
	level := (ev.Reason - rClientPPS) / kinds
	if cfg.Aggregate.Enabled {
		d.aggTotal.add(d.span(Aggregate), now, 1)
	}
	switch level {
	case levelClient:
		d.clientLimited(ev, now)
	case levelPrefix:
		if cfg.Aggregate.Enabled {
			d.aggregate(ev, now)
		}
	case levelService:
		d.serviceLimited(ev, now)
	}
}

func (d *Detector) clientLimited(ev *loader.Event, now int64) {
	cfg := &d.cfg
	flood := ev.Type == evLimited && cfg.Flood.Enabled
	syn := ev.Type == evSynLimited && cfg.SYNFlood.Enabled
	if !flood && !syn {
		return
	}
	c := d.client(ev, now)
	drops := c.dropDelta(ev, now, int64(max(cfg.Flood.Window, cfg.SYNFlood.Window)))
	if flood {
		sp := d.span(Flood)
		r := lazyRing(&c.flood)
		r.add(sp, now, drops)
		if lf := r.activeFor(sp); lf > cfg.Flood.LimitedFor {
			d.raise(now, eventHit(Flood, c.prefix, ev), func() Evidence {
				return Evidence{
					LimitedFor: lf, Drops: r.sum, Kernel: kernelReason(ev),
					Summary: fmt.Sprintf("over its own limit (%s) for %v of the last %v, %d drops", kernelReason(ev), lf, cfg.Flood.Window, r.sum),
				}
			})
		}
		return
	}
	r := lazyRing(&c.syn)
	r.add(d.span(SYNFlood), now, drops)
	if r.sum > cfg.SYNFlood.SYNs {
		d.raise(now, eventHit(SYNFlood, c.prefix, ev), func() Evidence {
			return Evidence{
				Drops: r.sum, Kernel: kernelReason(ev),
				Summary: fmt.Sprintf("%d new connections refused by its connection limit in %v", r.sum, cfg.SYNFlood.Window),
			}
		})
	}
}

// serviceLimited follows a service's total buckets. Their events carry no
// source (one bucket, many senders), so the flag names the service and never
// bans.
func (d *Detector) serviceLimited(ev *loader.Event, now int64) {
	cfg := &d.cfg
	flood := ev.Type == evLimited && cfg.Flood.Enabled
	syn := ev.Type == evSynLimited && cfg.SYNFlood.Enabled
	if !flood && !syn {
		return
	}
	st, ok := d.services[ev.Service]
	if !ok {
		if len(d.services) > loader.MaxServices {
			return // service ids are 1..MaxServices: anything else is not a service
		}
		st = &serviceState{}
		d.services[ev.Service] = st
	}
	if flood {
		sp := d.span(Flood)
		st.flood.add(sp, now, 1)
		if lf := st.flood.activeFor(sp); lf > cfg.Flood.LimitedFor {
			d.raise(now, serviceHit(Flood, ev), func() Evidence {
				return Evidence{
					LimitedFor: lf, Kernel: kernelReason(ev),
					Summary: fmt.Sprintf("the service's total limit (%s) was over for %v of the last %v: many sources, the kernel holds the line", kernelReason(ev), lf, cfg.Flood.Window),
				}
			})
		}
		return
	}
	sp := d.span(SYNFlood)
	st.syn.add(sp, now, 1)
	if lf := st.syn.activeFor(sp); lf > cfg.SYNFlood.Window/2 {
		d.raise(now, serviceHit(SYNFlood, ev), func() Evidence {
			return Evidence{
				LimitedFor: lf, Kernel: kernelReason(ev),
				Summary: fmt.Sprintf("the service's total connection limit refused SYNs for %v of the last %v: many sources, the kernel holds the line", lf, cfg.SYNFlood.Window),
			}
		})
	}
}

// dropDelta turns the running drop count an event carries into the drops since
// this client's previous limit event (at least the one that made this event).
func (c *client) dropDelta(ev *loader.Event, now, fresh int64) uint64 {
	delta := uint64(1)
	switch {
	case c.countSvc != ev.Service || c.countAt == 0 || now-c.countAt >= fresh:
		c.count = ev.Count
	case ev.Count > c.count:
		delta = ev.Count - c.count
		c.count = ev.Count
	case ev.Count < c.count/2:
		// the kernel's entry was evicted and made anew: its count restarted
		delta = ev.Count
		c.count = ev.Count
	default:
		// a little out of order (another CPU): already counted
		delta = 0
	}
	c.countSvc = ev.Service
	c.countAt = now
	return delta
}

func (d *Detector) scan(c *client, ev *loader.Event, now int64) {
	cfg := &d.cfg
	limit := int(min(max(2*cfg.Scan.Ports, 64), maxScanPorts))
	threshold := int(cfg.Scan.Ports) // more than this many ports
	if c.ports == nil {
		// Most sources of no_service events try one port (random-source
		// floods, stray clients): keep it inline, make a set from the second.
		if c.port0At == 0 || c.port0 == ev.Dport || now-c.port0At >= int64(cfg.Scan.Window) {
			c.port0, c.port0At = ev.Dport, now
			return
		}
		c.ports = map[uint16]int64{}
		if c.port0At != 0 {
			c.ports[c.port0] = c.port0At
		}
	}
	// Ports older than the window leave the set before it is counted; the
	// walk is done at most once per bucket, not per event of a fast scan.
	if len(c.ports) >= threshold && now-c.portsPruned >= d.span(Scan).bucket {
		cutoff := now - int64(cfg.Scan.Window)
		for p, t := range c.ports {
			if t <= cutoff {
				delete(c.ports, p)
			}
		}
		c.portsPruned = now
	}
	if _, seen := c.ports[ev.Dport]; seen || len(c.ports) < limit {
		c.ports[ev.Dport] = max(c.ports[ev.Dport], now)
	}
	if len(c.ports) <= threshold {
		return
	}
	d.raise(now, eventHit(Scan, c.prefix, ev), func() Evidence {
		ports := make([]uint16, 0, len(c.ports))
		for p := range c.ports {
			ports = append(ports, p)
		}
		slices.Sort(ports)
		sample := slices.Clone(ports[:min(len(ports), 16)])
		n := fmt.Sprint(len(ports))
		if len(ports) >= limit {
			n = "at least " + n // the set stops growing at its cap
		}
		return Evidence{
			Ports: len(ports), PortSample: sample, Kernel: kernelReason(ev),
			Summary: fmt.Sprintf("SYNs to %s ports without a service in %v (%s)", n, cfg.Scan.Window, portList(sample, len(ports))),
		}
	})
}

func (d *Detector) aggregate(ev *loader.Event, now int64) {
	cfg := &d.cfg
	sp := d.span(Aggregate)
	k, pfx := d.key(ev, cfg.PrefixBits4, cfg.PrefixBits6)
	p, ok := d.prefixes.get(k)
	if !ok {
		if d.prefixes.len() >= cfg.MaxPrefixes {
			old, _, _ := d.prefixes.oldest()
			d.prefixes.remove(old)
		}
		p = &prefixState{prefix: pfx}
		d.prefixes.put(k, p)
	}
	p.last = now
	p.ring.add(sp, now, 1)
	if p.ring.sum < cfg.Aggregate.MinEvents || d.aggTotal.sum == 0 {
		return
	}
	share := float64(p.ring.sum) / float64(d.aggTotal.sum)
	if share < cfg.Aggregate.Share {
		return
	}
	if cfg.Aggregate.MinClients > 1 && d.opts.ClientsIn != nil {
		if p.clientsAt == 0 || now-p.clientsAt >= int64(clientsRecheck) {
			since := d.opts.Wall(uint64(max(0, now-int64(cfg.Aggregate.Window))))
			n, err := d.opts.ClientsIn(p.prefix, since)
			if err != nil {
				d.log.Warn("aggregate: cannot count the prefix's clients; not flagged", "prefix", p.prefix, "err", err)
				n = 0
			}
			p.clients, p.clientsAt = n, now
		}
		if uint64(p.clients) < cfg.Aggregate.MinClients {
			return
		}
	}
	// a prefix event names the prefix only: its source is the prefix itself
	d.raise(now, eventHit(Aggregate, p.prefix, ev), func() Evidence {
		clients := ""
		if p.clientsAt != 0 {
			clients = fmt.Sprintf(", %d active clients", p.clients)
		}
		return Evidence{
			Events: p.ring.sum, Clients: p.clients, Share: share, LimitedFor: p.ring.activeFor(sp), Kernel: kernelReason(ev),
			Summary: fmt.Sprintf("the prefix's own limit (%s) made %.0f%% of all limiting in %v (%d of %d events, over for %v)%s",
				kernelReason(ev), 100*share, cfg.Aggregate.Window, p.ring.sum, d.aggTotal.sum, p.ring.activeFor(sp), clients),
		}
	})
}
