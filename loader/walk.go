package loader

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/cilium/ebpf"
)

// walkBatch is how many entries one BPF_MAP_LOOKUP_BATCH call reads. Hash
// maps need it above their longest bucket (ENOSPC otherwise), which 4096 is
// by far; 100k entries then cost 25 system calls instead of 200k (NextKey and
// Lookup per entry, and NextKey on an LPM trie searches from its root).
const walkBatch = 4096

// eachEntry calls fn for every entry of m (K and V its key and value types),
// read in batches where the kernel supports it and one by one otherwise.
// Like any walk of a live map, entries changed meanwhile may be seen once,
// twice or not at all.
func eachEntry[K, V any](m *ebpf.Map, fn func(k *K, v *V)) error {
	keys, vals := make([]K, walkBatch), make([]V, walkBatch)
	var cursor ebpf.MapBatchCursor
	for first := true; ; first = false {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(&keys[i], &vals[i])
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil // the end
		case first && n == 0 && errors.Is(err, ebpf.ErrNotSupported):
			return eachEntrySlow(m, fn)
		case err != nil:
			return err
		}
	}
}

func eachEntrySlow[K, V any](m *ebpf.Map, fn func(k *K, v *V)) error {
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(&k, &v)
	}
	return it.Err()
}

// countKeys counts m's entries. Keys and values are read as opaque bytes of
// the map's sizes.
func countKeys(m *ebpf.Map) (int, error) {
	switch m.Type() {
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash, ebpf.PerCPUCGroupStorage:
		// batches of per-CPU values need other buffers; none of the
		// maps counted is per-CPU
		return 0, fmt.Errorf("count %v: a per-CPU map", m)
	}
	keys := rawSlice(m.KeySize())
	vals := rawSlice(m.ValueSize())
	var cursor ebpf.MapBatchCursor
	total := 0
	for first := true; ; first = false {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += n
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return total, nil
		case first && n == 0 && errors.Is(err, ebpf.ErrNotSupported):
			return countKeysSlow(m)
		case err != nil:
			return total, err
		}
	}
}

func countKeysSlow(m *ebpf.Map) (int, error) {
	n := 0
	it := m.Iterate()
	var k, v []byte
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}

// rawSlice is walkBatch elements of size bytes each ([]T with T = [size]byte):
// BatchLookup counts elements, not bytes.
func rawSlice(size uint32) any {
	t := reflect.ArrayOf(int(size), reflect.TypeFor[byte]())
	return reflect.MakeSlice(reflect.SliceOf(t), walkBatch, walkBatch).Interface()
}
