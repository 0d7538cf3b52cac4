package trafgen

import (
	"fmt"
	"io"

	"github.com/cilium/ebpf"
)

// DropProgram returns a program that drops everything: the "trivial XDP_DROP"
// configuration of the benchmarks. The caller closes it.
func DropProgram() (*ebpf.Program, error) { return mapless("drop_all") }

// PassProgram returns a program that passes everything: the "trivial
// XDP_PASS" configuration of the benchmarks. The caller closes it.
func PassProgram() (*ebpf.Program, error) { return mapless("pass_all") }

// NaiveBucket returns the calibration program: one LRU lookup keyed by a random
// u32 over 64k values and an increment. The caller closes both.
func NaiveBucket() (*ebpf.Program, io.Closer, error) {
	var o struct {
		Prog  *ebpf.Program `ebpf:"naive_bucket"`
		State *ebpf.Map     `ebpf:"naive_state"`
	}
	spec, err := loadGen()
	if err != nil {
		return nil, nil, fmt.Errorf("read naive bucket object: %w", err)
	}
	// only the objects named in o's tags are loaded
	if err := spec.LoadAndAssign(&o, nil); err != nil {
		return nil, nil, fmt.Errorf("load naive bucket: %w", err)
	}
	return o.Prog, o.State, nil
}

// ClockRead returns a calibration program that only draws a source (like the
// datapath's benchmark baseline) and reads the precise clock: the cost of the
// one clock read every limited packet needs. The caller closes it.
func ClockRead() (*ebpf.Program, error) { return mapless("clock_read") }

// mapless loads one program of the object that uses no map.
func mapless(name string) (*ebpf.Program, error) {
	spec, err := loadGen()
	if err != nil {
		return nil, fmt.Errorf("read %s object: %w", name, err)
	}
	ps, ok := spec.Programs[name]
	if !ok {
		return nil, fmt.Errorf("no program %q in the generator object", name)
	}
	prog, err := ebpf.NewProgram(ps)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	return prog, nil
}
