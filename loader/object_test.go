package loader

import (
	"debug/elf"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// Names only benchmark code uses (test/bench/guardbench): parts of names,
// and whole names.
var (
	benchParts = []string{"bench", "baseline", "calib", "cycle", "draw_source"}
	benchWhole = []string{"sources"}
)

// benchNames lists the sections, symbols and load-time constant fields of
// an object (what `llvm-objdump -h -t` and its BTF show) that name benchmark
// code.
func benchNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	for _, s := range f.Sections {
		names = append(names, "section "+s.Name)
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		names = append(names, "symbol "+s.Name)
	}
	spec, err := btf.LoadSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	var consts *btf.Struct
	if err := spec.TypeByName("ag_consts", &consts); err != nil {
		t.Fatal(err)
	}
	for _, m := range consts.Members {
		names = append(names, "field ag_consts."+m.Name)
	}
	var found []string
	for _, n := range names {
		_, name, _ := strings.Cut(n, " ")
		name = strings.TrimPrefix(name, "ag_consts.")
		if slices.Contains(benchWhole, name) || slices.ContainsFunc(benchParts, func(m string) bool { return strings.Contains(name, m) }) {
			found = append(found, n)
		}
	}
	return found
}

// The shipped object is the datapath and nothing else: exactly the programs
// the loader attaches or runs, and no section, symbol or load-time constant
// of benchmark code; those live in the benchmark object, which includes the
// datapath (and there the same check finds them).
func TestShippedObjectHasNoBenchmarkHooks(t *testing.T) {
	if found := benchNames(t, "guard_bpfel.o"); len(found) > 0 {
		t.Errorf("the shipped object carries benchmark code: %v", found)
	}
	spec, err := LoadGuard()
	if err != nil {
		t.Fatal(err)
	}
	var progs []string
	for name := range spec.Programs {
		progs = append(progs, name)
	}
	slices.Sort(progs)
	want := []string{"apiguard_egress", "apiguard_flow_sweep", "apiguard_synproxy", "apiguard_tc", "apiguard_xdp"}
	if !slices.Equal(progs, want) {
		t.Errorf("programs %v, want %v", progs, want)
	}
	bench := benchNames(t, "../test/bench/guardbench/bench_bpfel.o")
	for _, want := range []string{"symbol bench_guard", "symbol bench_baseline", "symbol calib_lru_insert", "symbol sources", "symbol bench_sp_guard", "symbol bench_frame"} {
		if !slices.Contains(bench, want) {
			t.Errorf("the check does not see %q in the benchmark object (it found %v)", want, bench)
		}
	}
}
