// Package guardbench holds the datapath's benchmark programs in an object of
// their own (bench.c), which #includes bpf/apiguard.c: the programs run the
// very code that ships, while the shipped object (loader/guard_bpfel.o) and
// the loader's options carry nothing for benchmarks. Open loads them beside a
// running datapath, sharing its maps and load-time constants, so a policy
// applied to the datapath is the one they enforce. Linux 6.6+, as the loader.
package guardbench

import (
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
	p := &Programs{}
	coll, err := load(h, map[string]any{"sources": sources}, map[string]**ebpf.Program{
		"bench_guard": &p.Guard, "bench_baseline": &p.Baseline, "calib_naive_bucket": &p.NaiveBucket,
		"calib_lru_insert": &p.LRUInsert, "calib_clock": &p.Clock,
	})
	if err != nil {
		return nil, err
	}
	p.coll = coll
	return p, nil
}

// Close releases the programs and the benchmark's own maps.
func (p *Programs) Close() error {
	p.coll.Close()
	return nil
}

// FrameMax is the longest frame a SYN proxy run can start from.
const FrameMax = 256

// SynProxyPrograms are the SYN proxy's benchmark programs: the XDP guard run
// on a fresh copy of one frame per repetition (the proxy rewrites the buffer:
// a SYN becomes its SYN-ACK), and baselines that do the same but the guard.
type SynProxyPrograms struct {
	// Guard is the XDP datapath on a fresh copy of the frame.
	Guard *ebpf.Program
	// Baseline makes the same copy and passes.
	Baseline *ebpf.Program
	// TCBaseline is the baseline of the TC hand-over program (it rewrites
	// nothing: no copy).
	TCBaseline *ebpf.Program

	coll *ebpf.Collection
}

// OpenSynProxy loads the SYN proxy's benchmark programs beside h, every run
// starting from frame.
func OpenSynProxy(h Host, frame []byte) (*SynProxyPrograms, error) {
	if len(frame) == 0 || len(frame) > FrameMax {
		return nil, fmt.Errorf("benchmark frame of %d bytes, want 1..%d", len(frame), FrameMax)
	}
	var buf [FrameMax]byte
	copy(buf[:], frame)
	p := &SynProxyPrograms{}
	coll, err := load(h, map[string]any{"bench_len": uint32(len(frame)), "bench_frame": buf},
		map[string]**ebpf.Program{"bench_sp_guard": &p.Guard, "bench_sp_base": &p.Baseline, "bench_sp_tc_base": &p.TCBaseline})
	if err != nil {
		return nil, err
	}
	p.coll = coll
	return p, nil
}

// Close releases the programs and the benchmark's own maps.
func (p *SynProxyPrograms) Close() error {
	p.coll.Close()
	return nil
}

// load loads beside h only the programs named in progs (the verifier checks
// a whole guard for each guard program: the others are left out), with the
// constants in consts set, and fills progs.
func load(h Host, consts map[string]any, progs map[string]**ebpf.Program) (*ebpf.Collection, error) {
	spec, err := loadBench()
	if err != nil {
		return nil, fmt.Errorf("read the benchmark object: %w", err)
	}
	for name, val := range consts {
		v, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("benchmark object has no constant %s", name)
		}
		if err := v.Set(val); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	for name := range spec.Programs {
		if _, want := progs[name]; !want {
			delete(spec.Programs, name)
		}
	}
	coll, err := h.LoadAlongside(spec)
	if err != nil {
		return nil, err
	}
	for name, into := range progs {
		if *into = coll.Programs[name]; *into == nil {
			coll.Close()
			return nil, fmt.Errorf("benchmark object has no program %s", name)
		}
	}
	return coll, nil
}
