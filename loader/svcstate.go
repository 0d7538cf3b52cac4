package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// freshServices lists the service ids img uses that the policy in force (cur)
// does not: a service new to the kernel, which userspace/policy may have given
// the id of a service removed earlier (ids are few and come back).
func freshServices(cur, img *image) []uint32 {
	if cur == nil {
		return nil // unknown: nothing to compare with
	}
	var ids []uint32
	for id := range img.services {
		if _, used := cur.services[id]; !used {
			ids = append(ids, id)
		}
	}
	return ids
}

// resetServices forgets what the kernel keeps per service id for ids: the
// service's total buckets and fragment budget, its clients', prefixes' and
// proven clients' entries, and its rows of the per-service counters
// (svccount.go). A new service starts afresh, as one that is renamed does,
// instead of inheriting the buckets (a debt run up against the old one, by
// an attacker say), counters and proofs of the service that had its id
// before. The policy in force uses none of these ids, so no packet
// charges them meanwhile. Connection counts (conntrack) are left: they belong
// to connections still open, which release them when they end.
func (d *Datapath) resetServices(ids []uint32) error {
	if len(ids) == 0 {
		return nil
	}
	drop := map[uint32]bool{}
	for _, id := range ids {
		if err := d.objs.ServiceState.Update(id, GuardAgServiceState{}, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("reset the buckets of service %d: %w", id, err)
		}
		if err := d.objs.FragBudget.Update(id, uint64(0), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("reset the fragment budget of service %d: %w", id, err)
		}
		drop[id] = true
	}
	if err := d.zeroServiceCounters(ids); err != nil {
		return err
	}
	if err := deleteServiceKeys[GuardAgClientState](d.objs.Clients, drop); err != nil {
		return fmt.Errorf("forget the clients of new services: %w", err)
	}
	if err := deleteServiceKeys[GuardAgServiceState](d.objs.Prefixes, drop); err != nil {
		return fmt.Errorf("forget the prefixes of new services: %w", err)
	}
	if err := deleteServiceKeys[uint64](d.objs.Proven, drop); err != nil {
		return fmt.Errorf("forget the proven clients of new services: %w", err)
	}
	return nil
}

// deleteServiceKeys deletes the entries of m (keyed by client key) whose
// service is in ids, reading the map in batches.
func deleteServiceKeys[V any](m *ebpf.Map, ids map[uint32]bool) error {
	keys := make([]GuardAgClientKey, clientBatch)
	vals := make([]V, clientBatch)
	var gone []GuardAgClientKey
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for _, k := range keys[:n] {
			if ids[k.Service] {
				gone = append(gone, k)
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", m, err)
		}
	}
	for _, k := range gone {
		// an LRU may have evicted it meanwhile
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", m, err)
		}
	}
	return nil
}
