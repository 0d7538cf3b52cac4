package loader

import (
	"encoding/binary"
	"testing"

	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
)

// TestWalksSeeEveryEntry: batched walks across several batches count and
// read every entry of the map types the datapath walks.
func TestWalksSeeEveryEntry(t *testing.T) {
	testenv.RequireRoot(t)
	const n = 3*walkBatch + 17
	for _, typ := range []ebpf.MapType{ebpf.LPMTrie, ebpf.LRUHash, ebpf.Hash} {
		t.Run(typ.String(), func(t *testing.T) {
			spec := &ebpf.MapSpec{Type: typ, KeySize: 8, ValueSize: 16, MaxEntries: 2 * n}
			if typ == ebpf.LPMTrie {
				spec.Flags = 1 // BPF_F_NO_PREALLOC, which LPM tries require
			}
			m, err := ebpf.NewMap(spec)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for i := range n {
				k := GuardAgLpm4{Prefixlen: 32}
				binary.BigEndian.PutUint32(k.Addr[:], uint32(i)+1<<24)
				if err := m.Put(k, GuardAgBan{Expires: uint64(i), Reason: uint32(i)}); err != nil {
					t.Fatal(err)
				}
			}
			c, err := countKeys(m)
			if err != nil || c != n {
				t.Errorf("countKeys = %d, %v; want %d", c, err, n)
			}
			seen := map[uint32]bool{}
			if err := eachEntry(m, func(k *GuardAgLpm4, v *GuardAgBan) {
				i := binary.BigEndian.Uint32(k.Addr[:]) - 1<<24
				if v.Reason != i || v.Expires != uint64(i) {
					t.Errorf("entry %d holds %+v", i, *v)
				}
				seen[i] = true
			}); err != nil {
				t.Fatal(err)
			}
			if len(seen) != n {
				t.Errorf("eachEntry saw %d distinct entries, want %d", len(seen), n)
			}
		})
	}
}
