// Package guardbench holds the datapath's benchmark programs in an object of
// their own (bench.c), which #includes bpf/apiguard.c: the programs run the
// very code that ships, while the shipped object (loader/guard_bpfel.o) and
// the loader's options carry nothing for benchmarks. Open loads them beside a
// running datapath, sharing its maps and load-time constants, so a policy
// applied to the datapath is the one they enforce. Linux 6.6+, as the loader.
package guardbench

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// The object is built like the datapath's (loader/gen.go), little-endian only.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" bench bpf/bench.c

// Host is a loaded datapath (*loader.Datapath): it loads a test object's
// programs against its own maps and constants.
type Host interface {
	LoadAlongside(spec *ebpf.CollectionSpec) (*ebpf.Collection, error)
}

// Programs are the benchmark programs. Each run draws a source (over the
// sources given to Open) and writes it into the frame before anything reads it.
type Programs struct {
	// Guard is the XDP datapath, from a drawn source.
	Guard *ebpf.Program
	// Baseline is the draw and XDP_PASS: what every figure is measured against.
	Baseline *ebpf.Program
	// NaiveBucket is the simplest per-source state: one LRU lookup of a u32
	// key and an increment.
	NaiveBucket *ebpf.Program
	// LRUInsert is one insert into an LRU of the client table's kind, key
	// and value, nothing else.
	LRUInsert *ebpf.Program
	// Clock is one read of the precise clock.
	Clock *ebpf.Program

	coll *ebpf.Collection
}

// Open loads the benchmark programs beside h. sources is how many distinct
// sources the programs draw from (0 or 1: the frame's own source).
func Open(h Host, sources uint32) (*Programs, error) {
	spec, err := loadBench()
	if err != nil {
		return nil, fmt.Errorf("read the benchmark object: %w", err)
	}
	v, ok := spec.Variables["sources"]
	if !ok {
		return nil, errors.New("benchmark object has no 'sources' constant")
	}
	if err := v.Set(sources); err != nil {
		return nil, fmt.Errorf("set sources: %w", err)
	}
	coll, err := h.LoadAlongside(spec)
	if err != nil {
		return nil, err
	}
	p := &Programs{coll: coll}
	for name, into := range map[string]**ebpf.Program{
		"bench_guard": &p.Guard, "bench_baseline": &p.Baseline, "calib_naive_bucket": &p.NaiveBucket,
		"calib_lru_insert": &p.LRUInsert, "calib_clock": &p.Clock,
	} {
		if *into = coll.Programs[name]; *into == nil {
			coll.Close()
			return nil, fmt.Errorf("benchmark object has no program %s", name)
		}
	}
	return p, nil
}

// Close releases the programs and the benchmark's own maps.
func (p *Programs) Close() error {
	p.coll.Close()
	return nil
}
