package loader

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Proven sources (bpf/include/proof.h): the addresses this host's TCP services
// spoke to on a connection past its handshake, keyed by the client key (the
// address masked to the policy's clientKey), with when (CLOCK_MONOTONIC ns,
// coarse). Policy.ProveSources turns the recording on.

// SourceProof is when key was last proven; ok is false when it never was (or
// its entry was evicted). key must be a client key as the policy in force
// masks it: a /32 or /128 for the default IPv4 key, a /64 for IPv6.
func (d *Datapath) SourceProof(key netip.Prefix) (mono uint64, ok bool, err error) {
	k := GuardAgSrcKey{Addr: key.Masked().Addr().As16()}
	err = d.objs.ProvenSources.Lookup(&k, &mono)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read proven source %v: %w", key, err)
	}
	return mono, true, nil
}

// SourceProofs calls fn with every proven source (its address, as masked
// when it was proven) and when. Entries may be evicted or added meanwhile.
func (d *Datapath) SourceProofs(fn func(addr netip.Addr, mono uint64) error) error {
	keys := make([]GuardAgSrcKey, clientBatch)
	vals := make([]uint64, clientBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.ProvenSources.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			if ferr := fn(addrFrom16(keys[i].Addr), vals[i]); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read proven sources: %w", err)
		}
	}
}
