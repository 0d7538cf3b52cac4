package trafgen

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// DropProgram returns a program that drops everything: the "trivial XDP_DROP"
// configuration of the benchmarks. The caller closes it.
func DropProgram() (*ebpf.Program, error) { return mapless("drop_all") }

// PassProgram returns a program that passes everything: the "trivial
// XDP_PASS" configuration of the benchmarks. The caller closes it.
func PassProgram() (*ebpf.Program, error) { return mapless("pass_all") }

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
