// Package detect turns the datapath's events into flagged clients and timed
// bans. Each behaviour is a named Reason with its own rule: a sliding window
// over the kernel's (throttled) events, a threshold, and an action, flag or ban.
//
// Time comes from the events themselves (the kernel's CLOCK_MONOTONIC stamps),
// so the same stream always gives the same flags, however fast it is replayed.
// Memory is bounded: clients, prefixes, flags and offenders each have a cap,
// and state idle for longer than every window is dropped.
package detect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/events"
	"golang.org/x/sys/unix"
)

// Banner applies a ban. The daemon decides how (loader.Datapath.Ban with an
// expiry, and a record of the reason and evidence); it must not call back into
// the Detector.
type Banner interface {
	Ban(p netip.Prefix, ttl time.Duration, reason Reason, evidence string) error
}

// BanFunc adapts a function to Banner.
type BanFunc func(p netip.Prefix, ttl time.Duration, reason Reason, evidence string) error

// Ban calls f.
func (f BanFunc) Ban(p netip.Prefix, ttl time.Duration, reason Reason, evidence string) error {
	return f(p, ttl, reason, evidence)
}

// Options are the Detector's collaborators. Zero values take the defaults.
type Options struct {
	// Banner applies bans; nil means rules with action ban only flag.
	Banner Banner
	// IsAllowed reports clients that must never be banned (they are still
	// flagged). The kernel's allow list skips every check, so those clients
	// make no events; this is for addresses that must stay reachable anyway.
	IsAllowed func(netip.Addr) bool
	// Now is the current CLOCK_MONOTONIC time in ns (default: the system's).
	Now func() uint64
	// Wall converts a kernel timestamp to wall time (default loader.MonoToWall).
	Wall func(mono uint64) time.Time
	// Logger gets one line per flag raised (default slog.Default()).
	Logger *slog.Logger
	// ClientsIn counts the distinct client keys inside p seen since then in
	// the kernel's per-client table (the daemon walks loader.Datapath.Clients).
	// The aggregate rule needs it for MinClients: prefix events name only the
	// prefix. It is called at most once per prefix per clientsRecheck; nil
	// means MinClients is not checked.
	ClientsIn func(p netip.Prefix, since time.Time) (int, error)
}

// Totals are the Detector's counters since it started.
type Totals struct {
	// Flagged counts flags raised (a flag that starts again counts again).
	Flagged map[Reason]uint64
	// Bans made, bans the Banner refused, and ban rules that did not ban
	// (monitor mode, allow-listed, nothing to ban).
	Bans, BanErrors, BansSkipped uint64
	// Events observed.
	Events uint64
	// Clients evicted to stay under MaxClients while still within a window.
	Evicted uint64
	// What is tracked now.
	Clients, Prefixes, Flags int
}

type addrKey [16]byte

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

type client struct {
	prefix netip.Prefix
	last   int64
	// the running drop count of the latest limit event, to turn counts into
	// drops per window
	countSvc uint32
	count    uint64
	countAt  int64

	flood, syn, deny, bad *ring
	ports                 map[uint16]int64
	portsPruned           int64
	port0                 uint16 // the only port while ports is nil
	port0At               int64
}

type prefixState struct {
	prefix netip.Prefix
	last   int64
	ring   ring
	// the latest count of its clients (ClientsIn), and when it was taken
	clients   int
	clientsAt int64
}

// clientsRecheck is how long a prefix's client count is trusted: counting
// walks the kernel's client table.
const clientsRecheck = 10 * time.Second

type flagState struct {
	flag        Flag
	first, last int64
	evidenceAt  int64
	window      time.Duration
	banUntil    int64 // 0: no ban in force from this flag
}

type offender struct {
	bans  int
	until int64 // the latest ban's end
}

// Detector is safe for concurrent use: the event consumer calls Observe while
// the control API lists Flags.
type Detector struct {
	mu   sync.Mutex
	cfg  Config
	opts Options
	log  *slog.Logger

	floodSpan, synSpan, scanSpan, denySpan, badSpan, aggSpan span
	idle                                                     int64

	clients   *lru[addrKey, *client]
	prefixes  *lru[addrKey, *prefixState]
	services  map[uint32]*serviceState
	aggTotal  ring
	flags     *lru[flagKey, *flagState]
	offenders *lru[netip.Prefix, *offender]

	first []sighting
	api   apiState

	clock, lastPrune int64

	flagged                           [10]uint64
	bans, banErrors, banSkipped, seen uint64
	evicted                           uint64
}

// New returns a Detector; cfg's zero fields take DefaultConfig's values.
func New(cfg Config, opts Options) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("detection config: %w", err)
	}
	if opts.Now == nil {
		opts.Now = monotonicNow
	}
	if opts.Wall == nil {
		opts.Wall = loader.MonoToWall
	}
	if opts.IsAllowed == nil {
		opts.IsAllowed = func(netip.Addr) bool { return false }
	}
	d := &Detector{
		opts:      opts,
		log:       opts.Logger,
		clients:   newLRU[addrKey, *client](),
		prefixes:  newLRU[addrKey, *prefixState](),
		services:  map[uint32]*serviceState{},
		flags:     newLRU[flagKey, *flagState](),
		offenders: newLRU[netip.Prefix, *offender](),
		first:     make([]sighting, firstSightSlots),
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.setConfig(cfg.withDefaults())
	return d, nil
}

func monotonicNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("CLOCK_MONOTONIC unavailable: " + err.Error())
	}
	return uint64(ts.Nano())
}

// SetConfig replaces the thresholds (a policy reload). Flags and offenders are
// kept; per-client windows are restarted if their shape changed.
func (d *Detector) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("detection config: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setConfig(cfg.withDefaults())
	return nil
}

func (d *Detector) setConfig(cfg Config) {
	res := cfg.EventInterval
	spans := [...]span{
		newSpan(cfg.Flood.Window, res), newSpan(cfg.SYNFlood.Window, res), newSpan(cfg.Scan.Window, res),
		newSpan(cfg.DenyProbe.Window, res), newSpan(cfg.BadFlags.Window, res), newSpan(cfg.Aggregate.Window, res),
	}
	old := [...]span{d.floodSpan, d.synSpan, d.scanSpan, d.denySpan, d.badSpan, d.aggSpan}
	keys := cfg.ClientBits4 != d.cfg.ClientBits4 || cfg.ClientBits6 != d.cfg.ClientBits6 ||
		cfg.PrefixBits4 != d.cfg.PrefixBits4 || cfg.PrefixBits6 != d.cfg.PrefixBits6
	if spans != old || keys {
		d.clients = newLRU[addrKey, *client]()
		d.prefixes = newLRU[addrKey, *prefixState]()
		d.services = map[uint32]*serviceState{}
		d.aggTotal = ring{}
		clear(d.first)
	}
	d.setAPIConfig(cfg)
	d.floodSpan, d.synSpan, d.scanSpan, d.denySpan, d.badSpan, d.aggSpan =
		spans[0], spans[1], spans[2], spans[3], spans[4], spans[5]
	d.idle = 0
	for _, s := range spans {
		d.idle = max(d.idle, int64(s.window)+s.bucket)
	}
	d.cfg = cfg
}

// Config is the configuration in force, defaults filled in.
func (d *Detector) Config() Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// SetMonitor switches monitor mode (flag, never ban) without touching the rest.
func (d *Detector) SetMonitor(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfg.Monitor = on
}

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

// Observe feeds one event. Events should come roughly in kernel order (the
// ring buffer's); ones older than a window are ignored by that window.
func (d *Detector) Observe(ev *loader.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen++
	now := int64(ev.Ts)
	d.clock = max(d.clock, now)
	switch ev.Type {
	case evLimited, evSynLimited:
		d.limited(ev, now)
	case evDenyHit, evBanHit, evBadFlags, evNoService:
		d.sighted(ev, now)
	}
	if now-d.lastPrune >= int64(time.Second) {
		d.prune(now)
		d.lastPrune = now
	}
}

// firstSight is a direct-mapped table of sources seen once. Deny and ban hits,
// invalid flags and SYNs to closed ports need more than one event to fire, and
// a random-source flood sends one per source: such sources stay here, costing
// neither an allocation nor a client entry. A source's second event makes it
// a client and replays the first.
const firstSightSlots = 1 << 15

type sighting struct {
	key addrKey
	at  int64 // 0: empty
	ev  loader.Event
}

func (k *addrKey) hash() uint64 {
	a := binary.LittleEndian.Uint64(k[:8])
	b := binary.LittleEndian.Uint64(k[8:])
	h := a*0x9e3779b97f4a7c15 ^ b*0xc2b2ae3d27d4eb4f
	return h ^ h>>31
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
		r.add(d.denySpan, now, 1)
		if r.sum > cfg.DenyProbe.Hits {
			d.raise(DenyProbe, cfg.DenyProbe.Rule, d.denySpan, c.prefix, 0, ev, now, func() Evidence {
				return Evidence{
					Events: r.sum, Kernel: kernelReason(ev),
					Summary: fmt.Sprintf("%d deny-list or ban hits in %v", r.sum, cfg.DenyProbe.Window),
				}
			}, d.clientAllowed(ev, c.prefix))
		}
	case evBadFlags:
		r := lazyRing(&c.bad)
		r.add(d.badSpan, now, 1)
		if r.sum > cfg.BadFlags.Packets {
			d.raise(BadFlags, cfg.BadFlags.Rule, d.badSpan, c.prefix, 0, ev, now, func() Evidence {
				return Evidence{
					Events: r.sum, Kernel: kernelReason(ev),
					Summary: fmt.Sprintf("%d packets with invalid TCP flags (latest %s) in %v", r.sum, events.TCPFlagString(ev.TcpFlags), cfg.BadFlags.Window),
				}
			}, d.clientAllowed(ev, c.prefix))
		}
	case evNoService:
		d.scan(c, ev, now)
	}
}

func lazyRing(p **ring) *ring {
	if *p == nil {
		*p = &ring{}
	}
	return *p
}

func kernelReason(ev *loader.Event) string { return loader.Reason(ev.Reason).String() }

// serviceState is a service's own buckets: limited by its total, with no
// client to blame.
type serviceState struct {
	flood, syn ring
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
		d.aggTotal.add(d.aggSpan, now, 1)
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
		r := lazyRing(&c.flood)
		r.add(d.floodSpan, now, drops)
		if lf := r.activeFor(d.floodSpan); lf > cfg.Flood.LimitedFor {
			d.raise(Flood, cfg.Flood.Rule, d.floodSpan, c.prefix, 0, ev, now, func() Evidence {
				return Evidence{
					LimitedFor: lf, Drops: r.sum, Kernel: kernelReason(ev),
					Summary: fmt.Sprintf("over its own limit (%s) for %v of the last %v, %d drops", kernelReason(ev), lf, cfg.Flood.Window, r.sum),
				}
			}, d.clientAllowed(ev, c.prefix))
		}
		return
	}
	r := lazyRing(&c.syn)
	r.add(d.synSpan, now, drops)
	if r.sum > cfg.SYNFlood.SYNs {
		d.raise(SYNFlood, cfg.SYNFlood.Rule, d.synSpan, c.prefix, 0, ev, now, func() Evidence {
			return Evidence{
				Drops: r.sum, Kernel: kernelReason(ev),
				Summary: fmt.Sprintf("%d new connections refused by its connection limit in %v", r.sum, cfg.SYNFlood.Window),
			}
		}, d.clientAllowed(ev, c.prefix))
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
		st.flood.add(d.floodSpan, now, 1)
		if lf := st.flood.activeFor(d.floodSpan); lf > cfg.Flood.LimitedFor {
			d.raise(Flood, cfg.Flood.Rule, d.floodSpan, netip.Prefix{}, ev.Service, ev, now, func() Evidence {
				return Evidence{
					LimitedFor: lf, Kernel: kernelReason(ev),
					Summary: fmt.Sprintf("the service's total limit (%s) was over for %v of the last %v: many sources, the kernel holds the line", kernelReason(ev), lf, cfg.Flood.Window),
				}
			}, nil)
		}
		return
	}
	st.syn.add(d.synSpan, now, 1)
	if lf := st.syn.activeFor(d.synSpan); lf > cfg.SYNFlood.Window/2 {
		d.raise(SYNFlood, cfg.SYNFlood.Rule, d.synSpan, netip.Prefix{}, ev.Service, ev, now, func() Evidence {
			return Evidence{
				LimitedFor: lf, Kernel: kernelReason(ev),
				Summary: fmt.Sprintf("the service's total connection limit refused SYNs for %v of the last %v: many sources, the kernel holds the line", lf, cfg.SYNFlood.Window),
			}
		}, nil)
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
	if len(c.ports) >= threshold && now-c.portsPruned >= d.scanSpan.bucket {
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
	d.raise(Scan, cfg.Scan.Rule, d.scanSpan, c.prefix, 0, ev, now, func() Evidence {
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
	}, d.clientAllowed(ev, c.prefix))
}

func (d *Detector) aggregate(ev *loader.Event, now int64) {
	cfg := &d.cfg
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
	p.ring.add(d.aggSpan, now, 1)
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
	d.raise(Aggregate, cfg.Aggregate.Rule, d.aggSpan, p.prefix, 0, ev, now, func() Evidence {
		clients := ""
		if p.clientsAt != 0 {
			clients = fmt.Sprintf(", %d active clients", p.clients)
		}
		return Evidence{
			Events: p.ring.sum, Clients: p.clients, Share: share, LimitedFor: p.ring.activeFor(d.aggSpan), Kernel: kernelReason(ev),
			Summary: fmt.Sprintf("the prefix's own limit (%s) made %.0f%% of all limiting in %v (%d of %d events, over for %v)%s",
				kernelReason(ev), 100*share, cfg.Aggregate.Window, p.ring.sum, d.aggTotal.sum, p.ring.activeFor(d.aggSpan), clients),
		}
	}, func() bool {
		// a ban would cover every address of the prefix
		return d.opts.IsAllowed(p.prefix.Addr()) || d.opts.IsAllowed(lastAddr(p.prefix))
	})
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

// key masks the event's source to bits4/bits6.
func (d *Detector) key(ev *loader.Event, bits4, bits6 uint8) (addrKey, netip.Prefix) {
	k := addrKey(ev.Addr)
	bits := int(bits6)
	is4 := ev.Family == 4
	if is4 {
		bits = 96 + int(bits4)
	}
	for i := range k {
		switch {
		case bits >= 8*(i+1):
		case bits <= 8*i:
			k[i] = 0
		default:
			k[i] &= ^byte(0xff >> (bits - 8*i))
		}
	}
	addr := netip.AddrFrom16(k)
	if is4 {
		return k, netip.PrefixFrom(addr.Unmap(), int(bits4))
	}
	return k, netip.PrefixFrom(addr, int(bits6))
}

func (d *Detector) client(ev *loader.Event, now int64) *client {
	k, pfx := d.key(ev, d.cfg.ClientBits4, d.cfg.ClientBits6)
	c, ok := d.clients.get(k)
	if !ok {
		return d.newClient(k, pfx, now)
	}
	c.last = max(c.last, now)
	return c
}

// newClient adds a client that is not tracked yet.
func (d *Detector) newClient(k addrKey, pfx netip.Prefix, now int64) *client {
	var c *client
	if d.clients.len() >= d.cfg.MaxClients {
		// At the cap: the oldest entry's memory becomes the new client's,
		// so churn allocates nothing.
		_, old, _ := d.clients.oldest()
		if now-old.last < d.idle {
			d.evicted++
		}
		old.reset(pfx)
		d.clients.recycle(k, old)
		c = old
	} else {
		c = &client{prefix: pfx}
		d.clients.put(k, c)
	}
	c.last = now
	return c
}

// reset makes c a new client, keeping its allocations.
func (c *client) reset(p netip.Prefix) {
	rings := [...]*ring{c.flood, c.syn, c.deny, c.bad}
	ports := c.ports
	*c = client{prefix: p, flood: rings[0], syn: rings[1], deny: rings[2], bad: rings[3], ports: ports}
	for _, r := range rings {
		if r != nil {
			*r = ring{}
		}
	}
	clear(ports)
}

func (d *Detector) clientAllowed(ev *loader.Event, p netip.Prefix) func() bool {
	return func() bool {
		return d.opts.IsAllowed(loader.SourceAddr(ev)) || d.opts.IsAllowed(p.Addr())
	}
}

// raise records evidence for a flag. A flag still within its window (and whose
// ban, if any, still holds) is the same episode: only its evidence moves on.
// Otherwise a new episode starts and the rule's action is taken.
//
// evidence is called at most once per window bucket while a flag stays active:
// for a scanner it walks thousands of ports.
func (d *Detector) raise(reason Reason, rule Rule, sp span, p netip.Prefix, service uint32, ev *loader.Event,
	now int64, evidence func() Evidence, allowed func() bool) {
	key := keyOf(p, service, reason)
	fs, ok := d.flags.get(key)
	if ok && now-fs.last < int64(fs.window) && (fs.banUntil == 0 || now < fs.banUntil) {
		fs.last = max(fs.last, now)
		if now-fs.evidenceAt >= sp.bucket {
			fs.flag.Evidence = evidence()
			fs.flag.Evidence.Window = rule.Window
			fs.evidenceAt = now
		}
		// flagged while monitor mode held the ban back: once enforcing, the
		// same ongoing episode is banned rather than waiting for a new one
		if skipped := fs.flag.Ban.Skipped; (skipped == skipMonitor || skipped == skipServiceMonitor) &&
			!d.cfg.Monitor && loader.Action(ev.Action) != loader.ActionMonitor {
			fs.flag.Ban = d.decide(fs, rule, ev, now, allowed)
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
		fs = &flagState{first: now, flag: Flag{Prefix: p, Service: service, Reason: reason}}
		d.flags.put(key, fs)
	}
	fs.last = now
	fs.evidenceAt = now
	fs.window = rule.Window
	fs.banUntil = 0
	fs.flag.Episodes++
	fs.flag.Action = rule.Action
	fs.flag.Evidence = evid
	fs.flag.Ban = d.decide(fs, rule, ev, now, allowed)
	d.flagged[reason.index()]++

	attrs := []any{"reason", reason, "subject", fs.flag.Subject(), "evidence", evid.Summary, "outcome", fs.flag.Ban.String()}
	if fs.flag.Ban.Error != "" {
		d.log.Warn("client flagged; ban failed", attrs...)
	} else {
		d.log.Info("client flagged", attrs...)
	}
}

// Why a ban rule did not ban, as Flag.Ban.Skipped says.
const (
	skipMonitor        = "monitor mode"
	skipServiceMonitor = "the service is in monitor mode"
)

func (d *Detector) decide(fs *flagState, rule Rule, ev *loader.Event, now int64, allowed func() bool) BanInfo {
	if rule.Action != ActionBan {
		return BanInfo{}
	}
	skip := ""
	switch {
	case !fs.flag.Prefix.IsValid():
		skip = "many sources: nothing to ban"
	case d.cfg.Monitor:
		skip = skipMonitor
	case loader.Action(ev.Action) == loader.ActionMonitor:
		skip = skipServiceMonitor
	case allowed != nil && allowed():
		skip = "allow-listed"
	case d.opts.Banner == nil:
		skip = "no banner configured"
	}
	if skip != "" {
		d.banSkipped++
		return BanInfo{Skipped: skip}
	}
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

func (d *Detector) now() int64 {
	return max(d.clock, int64(d.opts.Now()))
}

// Prune drops idle state and expired flags now; Observe also prunes as event
// time moves on, so the daemon only needs this when events stop.
func (d *Detector) Prune() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.prune(d.now())
}

func (d *Detector) prune(now int64) {
	d.pruneAPI(now)
	for {
		k, c, ok := d.clients.oldest()
		if !ok || now-c.last < d.idle {
			break
		}
		d.clients.remove(k)
	}
	for {
		k, p, ok := d.prefixes.oldest()
		if !ok || now-p.last < d.idle {
			break
		}
		d.prefixes.remove(k)
	}
	for id, st := range d.services {
		if st.flood.emptyAt(d.floodSpan, now) && st.syn.emptyAt(d.synSpan, now) {
			delete(d.services, id)
		}
	}
	for {
		k, fs, ok := d.flags.oldest()
		if !ok || now-fs.last < int64(fs.window+d.cfg.FlagRetention) || now < fs.banUntil {
			break
		}
		d.flags.remove(k)
	}
	for {
		k, o, ok := d.offenders.oldest()
		if !ok || now-o.until < int64(d.cfg.Bans.ForgetAfter) {
			break
		}
		d.offenders.remove(k)
	}
}

// Flags lists flags, the latest evidence first.
func (d *Detector) Flags() []Flag {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	out := make([]Flag, 0, d.flags.len())
	d.flags.each(func(_ flagKey, fs *flagState) bool {
		f := fs.flag
		f.FirstSeen = d.opts.Wall(uint64(fs.first))
		f.LastSeen = d.opts.Wall(uint64(fs.last))
		f.Active = now-fs.last < int64(fs.window)
		f.Evidence.PortSample = slices.Clone(f.Evidence.PortSample)
		out = append(out, f)
		return true
	})
	slices.SortStableFunc(out, func(a, b Flag) int { return b.LastSeen.Compare(a.LastSeen) })
	return out
}

// Totals reads the counters.
func (d *Detector) Totals() Totals {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := Totals{
		Flagged: make(map[Reason]uint64, len(reasons)),
		Bans:    d.bans, BanErrors: d.banErrors, BansSkipped: d.banSkipped,
		Events: d.seen, Evicted: d.evicted,
		Clients: d.clients.len(), Prefixes: d.prefixes.len(), Flags: d.flags.len(),
	}
	for i, r := range reasons {
		t.Flagged[r] = d.flagged[i]
	}
	return t
}

// ErrNoFlag is returned by Forget for a prefix without flags.
var ErrNoFlag = errors.New("no flag for this client")

// Forget drops every flag and the offence history of prefix (an operator
// cleared a false positive); the next offence starts from the base TTL.
func (d *Detector) Forget(p netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var keys []flagKey
	d.flags.each(func(k flagKey, fs *flagState) bool {
		if fs.flag.Prefix == p {
			keys = append(keys, k)
		}
		return true
	})
	_, offended := d.offenders.peek(p)
	if len(keys) == 0 && !offended {
		return fmt.Errorf("forget %v: %w", p, ErrNoFlag)
	}
	for _, k := range keys {
		d.flags.remove(k)
	}
	d.offenders.remove(p)
	return nil
}
