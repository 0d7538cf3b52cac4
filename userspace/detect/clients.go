package detect

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/apiguard/apiguard/loader"
)

// The packet rules' state: clients (client keys), prefixes (prefix keys) and
// services, each with the windows of the rules that count for it.

type addrKey [16]byte

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

// serviceState is a service's own buckets: limited by its total, with no
// client to blame.
type serviceState struct {
	flood, syn ring
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

// key masks the event's source to bits4/bits6.
func (d *Detector) key(ev *loader.Event, bits4, bits6 uint8) (addrKey, netip.Prefix) {
	k := addrKey(ev.Addr)
	bits := int(bits6)
	is4 := ev.Family == 4
	if is4 {
		bits = loader.V4MappedBits + int(bits4)
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

func lazyRing(p **ring) *ring {
	if *p == nil {
		*p = &ring{}
	}
	return *p
}

// prunePackets drops clients, prefixes and services idle past every window.
func (d *Detector) prunePackets(now int64) {
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
	flood, syn := d.span(Flood), d.span(SYNFlood)
	for id, st := range d.services {
		if st.flood.emptyAt(flood, now) && st.syn.emptyAt(syn, now) {
			delete(d.services, id)
		}
	}
}
