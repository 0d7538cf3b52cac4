package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// Counter is the packets and bytes of one (action, reason), summed over CPUs.
type Counter struct {
	Action  Action
	Reason  Reason
	Packets uint64
	Bytes   uint64
}

// Counters reads every (action, reason) counter.
func (d *Datapath) Counters() ([]Counter, error) {
	out := make([]Counter, 0, numActions*numReasons)
	var per []GuardAgCounter
	for a := 0; a < numActions; a++ {
		for r := 0; r < numReasons; r++ {
			if err := d.objs.Counters.Lookup(uint32(a*numReasons+r), &per); err != nil {
				return nil, fmt.Errorf("read counter %v/%v: %w", Action(a), Reason(r), err)
			}
			c := Counter{Action: Action(a), Reason: Reason(r)}
			for _, p := range per {
				c.Packets += p.Packets
				c.Bytes += p.Bytes
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// Stats are the datapath's health counters, summed over CPUs.
type Stats struct {
	ClientInserts, ClientInsertFailures uint64
	PrefixInserts, PrefixInsertFailures uint64
	EventsSent, EventsSuppressed        uint64
	EventsLost                          uint64
	CASContended                        uint64
	// Connection tracking (docs/conntrack.md).
	FlowsNew, FlowsAdopted     uint64 // followed from a SYN; picked up from the server's packets
	FlowTableFull, FlowBusy    uint64 // a connection that could not be followed: no room; its entry being deleted
	FlowsExpired, FlowsDeleted uint64 // idle timeouts; closed flows removed after their linger
	FlowCountMissing           uint64 // a release that found no client count: a bug if not 0
	// SYNs of clients with a proven handshake that skipped a service's
	// shared (prefix, total) new-connection limits.
	ProvenSYNs uint64
	// Datagrams entered in the fragment table (first fragments let through,
	// and orphans ahead of their first): past the table's size, each evicts.
	FragInserts uint64
}

// Stats reads the health counters.
func (d *Datapath) Stats() (Stats, error) {
	var vals [GuardAgStatAG_STAT_MAX]uint64
	var per []uint64
	for i := range vals {
		if err := d.objs.Stats.Lookup(uint32(i), &per); err != nil {
			return Stats{}, fmt.Errorf("read stat %d: %w", i, err)
		}
		for _, v := range per {
			vals[i] += v
		}
	}
	return Stats{
		ClientInserts:        vals[GuardAgStatAG_STAT_CLIENT_INSERT],
		ClientInsertFailures: vals[GuardAgStatAG_STAT_CLIENT_INSERT_FAIL],
		PrefixInserts:        vals[GuardAgStatAG_STAT_PREFIX_INSERT],
		PrefixInsertFailures: vals[GuardAgStatAG_STAT_PREFIX_INSERT_FAIL],
		EventsSent:           vals[GuardAgStatAG_STAT_EVENT_SENT],
		EventsSuppressed:     vals[GuardAgStatAG_STAT_EVENT_SUPPRESSED],
		EventsLost:           vals[GuardAgStatAG_STAT_EVENT_LOST],
		CASContended:         vals[GuardAgStatAG_STAT_CAS_CONTENDED],
		FlowsNew:             vals[GuardAgStatAG_STAT_FLOW_NEW],
		FlowsAdopted:         vals[GuardAgStatAG_STAT_FLOW_ADOPTED],
		FlowTableFull:        vals[GuardAgStatAG_STAT_FLOW_TABLE_FULL],
		FlowBusy:             vals[GuardAgStatAG_STAT_FLOW_BUSY],
		FlowsExpired:         vals[GuardAgStatAG_STAT_FLOW_EXPIRED],
		FlowsDeleted:         vals[GuardAgStatAG_STAT_FLOW_DELETED],
		FlowCountMissing:     vals[GuardAgStatAG_STAT_FLOW_COUNT_MISSING],
		ProvenSYNs:           vals[GuardAgStatAG_STAT_PROVEN_SYN],
		FragInserts:          vals[GuardAgStatAG_STAT_FRAG_INSERT],
	}, nil
}

// Client is one client's state for one service. Addr is the client key: the
// source masked to the policy's client prefix length.
type Client struct {
	Addr      netip.Prefix
	Service   uint32
	Packets   uint64
	Bytes     uint64
	Drops     uint64
	FirstSeen time.Time
	LastSeen  time.Time
}

const clientBatch = 4096

// Clients calls fn for every tracked client, reading the LRU map in batches.
// Entries may be evicted or added while it runs; each key is seen at most once.
func (d *Datapath) Clients(fn func(Client) error) error {
	cfg := d.activeConfig()
	clock := newMonoClock()
	pending, err := d.pendingRefusals()
	if err != nil {
		return err
	}
	keys := make([]GuardAgClientKey, clientBatch)
	vals := make([]GuardAgClientState, clientBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.Clients.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			if p, ok := pending[keys[i]]; ok {
				vals[i].Packets += p.Packets
				vals[i].Bytes += p.Bytes
				vals[i].Drops += p.Packets
			}
			if ferr := fn(clientFrom(keys[i], vals[i], cfg, clock)); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read clients: %w", err)
		}
	}
}

// pendingRefusals sums, per client, the drops the per-CPU refusal memory made
// and has not yet handed to the client's state.
func (d *Datapath) pendingRefusals() (map[GuardAgClientKey]GuardAgClientState, error) {
	out := map[GuardAgClientKey]GuardAgClientState{}
	var per []GuardAgRefusal
	var key uint32
	it := d.objs.Refusals.Iterate()
	for it.Next(&key, &per) {
		for _, r := range per {
			if r.Until == 0 || r.Packets == 0 {
				continue
			}
			s := out[r.Client]
			s.Packets += r.Packets
			s.Bytes += r.Bytes
			out[r.Client] = s
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read refusals: %w", err)
	}
	return out, nil
}

func clientFrom(k GuardAgClientKey, s GuardAgClientState, cfg GuardAgConfig, clock monoClock) Client {
	addr := addrFrom16(k.Addr)
	bits := int(cfg.ClientBits6)
	if addr.Is4() {
		bits = int(cfg.ClientBits4)
	}
	if bits == 0 {
		bits = addr.BitLen()
	}
	return Client{
		Addr:      netip.PrefixFrom(addr, bits),
		Service:   k.Service,
		Packets:   s.Packets,
		Bytes:     s.Bytes,
		Drops:     s.Drops,
		FirstSeen: clock.seen(s.FirstSeen),
		LastSeen:  clock.seen(s.LastSeen),
	}
}

func (d *Datapath) activeConfig() GuardAgConfig {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.slots[d.active].cfg
}

// MapUsage is how full one map is.
type MapUsage struct {
	Name     string
	Entries  int
	Capacity int
}

// Usage counts the entries of the maps that can fill up. It reads every
// entry, in batches (walk.go): tens of milliseconds per 100k entries, for
// status and scrapes, not hot paths.
func (d *Datapath) Usage() ([]MapUsage, error) {
	d.mu.Lock()
	l4, l6 := d.slotMaps(d.active)
	d.mu.Unlock()
	m := &d.objs.GuardMaps
	var out []MapUsage
	for _, e := range []struct {
		name string
		m    *ebpf.Map
	}{
		{"clients", m.Clients}, {"prefixes", m.Prefixes}, {"bans4", m.Bans4}, {"bans6", m.Bans6},
		{"lists4", l4}, {"lists6", l6},
		{"flows", m.Flows}, {"conn_clients", m.ConnClients}, {"acl", m.Acl},
	} {
		n, err := countKeys(e.m)
		if err != nil {
			return nil, fmt.Errorf("count %s: %w", e.name, err)
		}
		out = append(out, MapUsage{Name: e.name, Entries: n, Capacity: int(e.m.MaxEntries())})
	}
	return out, nil
}

// Counter reads one (action, reason) counter, summed over CPUs: one lookup,
// where Counters reads them all.
func (d *Datapath) Counter(a Action, r Reason) (Counter, error) {
	c := Counter{Action: a, Reason: r}
	if int(a) >= numActions || int(r) >= numReasons {
		return c, fmt.Errorf("no counter %v/%v", a, r)
	}
	var per []GuardAgCounter
	if err := d.objs.Counters.Lookup(uint32(int(a)*numReasons+int(r)), &per); err != nil {
		return c, fmt.Errorf("read counter %v/%v: %w", a, r, err)
	}
	for _, p := range per {
		c.Packets += p.Packets
		c.Bytes += p.Bytes
	}
	return c, nil
}
