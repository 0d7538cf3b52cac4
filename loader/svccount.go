package loader

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// NoService is the service label of the packets no service owns (id 0 of
// the kernel's per-service counters): allow-listed, denied, banned, ICMP,
// traffic to no service, packets that do not parse. A policy's service
// cannot take the name (compile refuses it; userspace/policy's names start
// with a letter or digit).
const NoService = "(none)"

// ServiceCounter is the kernel's packets and bytes for one service, verdict
// and reason, summed over CPUs.
type ServiceCounter struct {
	Service string
	Action  Action
	Reason  Reason
	Packets uint64
	Bytes   uint64
}

const (
	verdictsPerService = numActions * numReasons
	serviceCounterRows = int(GuardAgConstAG_MAX_SERVICES) * verdictsPerService
)

// svcCountKey names a per-service counter by the service's name: what
// Prometheus sees, and what must never go backwards.
type svcCountKey struct {
	name string
	idx  int // action * numReasons + reason
}

type svcCount struct{ packets, bytes uint64 }

// svcCounts is the loader's side of the per-service counters. The kernel
// counts by service id; ids are few and come back (svcstate.go), so a name's
// count is what its ids counted while they carried the name:
//
//   - a new service that takes a free id starts at zero: resetServices zeroes
//     the id's rows with the rest of its state, so what a removed service
//     counted never reaches the new one, across daemon restarts too;
//   - when an id leaves a name (the service is removed, or, all 63 ids
//     taken, its id goes at once to another service), what it counted for the
//     name moves to base, so the name's count is kept should it come back;
//     origin is what the id had counted when it took its current name.
//
// Both live in the daemon's memory: a restarted daemon starts base afresh,
// as it does its other counters (Prometheus sees a reset).
type svcCounts struct {
	names  map[uint32]string // the policy in force; nil until its first Apply
	base   map[svcCountKey]svcCount
	origin map[uint32][]svcCount // id -> per-verdict values when it took its name
}

func serviceLabel(id uint32, name string) string {
	switch {
	case id == 0:
		return NoService
	case name == "":
		return fmt.Sprintf("service-%d", id) // a Policy without names (tests, tools)
	}
	return name
}

// readServiceCounters reads every row of the kernel's per-service counters
// in batches, summed over CPUs: rows[id][action*numReasons+reason].
func (d *Datapath) readServiceCounters() ([][]svcCount, error) {
	m := d.objs.ServiceCounters
	rows := make([][]svcCount, GuardAgConstAG_MAX_SERVICES)
	for i := range rows {
		rows[i] = make([]svcCount, verdictsPerService)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count CPUs: %w", err)
	}
	const batch = 1024
	keys := make([]uint32, batch)
	vals := make([]GuardAgCounter, batch*ncpu)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			k := int(keys[i])
			if k >= serviceCounterRows {
				continue
			}
			c := &rows[k/verdictsPerService][k%verdictsPerService]
			for _, v := range vals[i*ncpu : (i+1)*ncpu] {
				c.packets += v.Packets
				c.bytes += v.Bytes
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return rows, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read service counters: %w", err)
		}
	}
}

// zeroServiceCounters zeroes the rows of ids: called only for ids no
// service of the policy in force uses, so no packet counts them meanwhile.
func (d *Datapath) zeroServiceCounters(ids []uint32) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("count CPUs: %w", err)
	}
	keys := make([]uint32, 0, len(ids)*verdictsPerService)
	for _, id := range ids {
		for i := 0; i < verdictsPerService; i++ {
			keys = append(keys, id*uint32(verdictsPerService)+uint32(i))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	vals := make([]GuardAgCounter, len(keys)*ncpu)
	if _, err := d.objs.ServiceCounters.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("zero the counters of services %v: %w", ids, err)
	}
	for _, id := range ids {
		delete(d.svc.origin, id)
	}
	return nil
}

// renameServices is what an Apply that puts names in force does to the
// loader's side of the counters: an id that leaves its name (removed or
// given to another service) hands what it counted for it to base. rows is
// the kernel's counters read before the switch (nil when no id changes
// name: svcCounts.renames). Called with d.mu held, once
// the new policy is in force.
func (d *Datapath) renameServices(p *Policy, rows [][]svcCount) {
	next := map[uint32]string{}
	for _, s := range p.Services {
		next[s.ID] = serviceLabel(s.ID, s.Name)
	}
	if d.svc.base == nil {
		d.svc.base = map[svcCountKey]svcCount{}
		d.svc.origin = map[uint32][]svcCount{}
	}
	if d.svc.names != nil && rows != nil {
		for id, old := range d.svc.names {
			if next[id] == old {
				continue
			}
			org := d.svc.origin[id]
			for i, c := range rows[id] {
				if org != nil {
					c.packets -= org[i].packets
					c.bytes -= org[i].bytes
				}
				if c.packets == 0 && c.bytes == 0 {
					continue
				}
				k := svcCountKey{old, i}
				b := d.svc.base[k]
				b.packets += c.packets
				b.bytes += c.bytes
				d.svc.base[k] = b
			}
			if _, kept := next[id]; kept {
				d.svc.origin[id] = slices.Clone(rows[id]) // renamed in place
			} else {
				delete(d.svc.origin, id)
			}
		}
	}
	d.svc.names = next
}

// renames reports whether p takes a name in force away from its id.
func (s *svcCounts) renames(p *Policy) bool {
	if s.names == nil {
		return false
	}
	next := map[uint32]string{}
	for _, sv := range p.Services {
		next[sv.ID] = serviceLabel(sv.ID, sv.Name)
	}
	for id, old := range s.names {
		if next[id] != old {
			return true
		}
	}
	return false
}

// renameInPlace is renameServices for an Apply that changes nothing in the
// kernel but may change names (a policy that renames a service and keeps its
// id and limits). Called with d.mu held.
func (d *Datapath) renameInPlace(p *Policy) error {
	var rows [][]svcCount
	if d.svc.renames(p) {
		var err error
		if rows, err = d.readServiceCounters(); err != nil {
			return err
		}
	}
	d.renameServices(p, rows)
	return nil
}

// ServiceCounters reads the kernel's per-service counters with the names of
// the policy in force: each service's packets and bytes by verdict and
// reason since it took its name (carried over the ids it had in this
// daemon's life), and NoService's. Only the verdicts a service has met are
// listed. Before the first Apply the names are unknown and only NoService is.
func (d *Datapath) ServiceCounters() ([]ServiceCounter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rows, err := d.readServiceCounters()
	if err != nil {
		return nil, err
	}
	ids := []uint32{0}
	for id := range d.svc.names {
		if id != 0 && int(id) < len(rows) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []ServiceCounter
	for _, id := range ids {
		name := serviceLabel(id, d.svc.names[id])
		org := d.svc.origin[id]
		for i, c := range rows[id] {
			if org != nil {
				c.packets -= org[i].packets
				c.bytes -= org[i].bytes
			}
			b := d.svc.base[svcCountKey{name, i}]
			c.packets += b.packets
			c.bytes += b.bytes
			if c.packets == 0 {
				continue
			}
			out = append(out, ServiceCounter{Service: name, Action: Action(i / numReasons), Reason: Reason(i % numReasons),
				Packets: c.packets, Bytes: c.bytes})
		}
	}
	return out, nil
}
