// Package synproxy holds the benchmark object of the SYN proxy
// (bpf/bench_synproxy.c): the real XDP guard run on a fresh copy of one
// frame per BPF_PROG_TEST_RUN repetition, and a baseline that makes the
// same copy and passes. Nothing of it ships: the loader's benchmarks load it
// beside a datapath, with that datapath's maps.
package synproxy

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" bench ../../../bpf/bench_synproxy.c

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// FrameMax is the longest frame a run can start from.
const FrameMax = 256

// Programs are the programs to measure against each other: the XDP guard
// and its baseline, the TC program that hands handshakes to the listener
// (apiguard_synproxy, beside the XDP guard) and its own.
type Programs struct {
	Guard      *ebpf.Program `ebpf:"bench_guard"`
	Baseline   *ebpf.Program `ebpf:"bench_base"`
	Accept     *ebpf.Program `ebpf:"apiguard_synproxy"`
	TCBaseline *ebpf.Program `ebpf:"bench_tc_base"`
}

// Spec returns the object's spec, to be given the datapath's load-time
// constants and maps; SetFrame picks the frame every run starts from.
func Spec() (*ebpf.CollectionSpec, error) {
	spec, err := loadBench()
	if err != nil {
		return nil, fmt.Errorf("read the SYN proxy's benchmark object: %w", err)
	}
	return spec, nil
}

// SetFrame sets the frame every run of the programs loaded from spec starts from.
func SetFrame(spec *ebpf.CollectionSpec, frame []byte) error {
	if len(frame) == 0 || len(frame) > FrameMax {
		return fmt.Errorf("benchmark frame of %d bytes, want 1..%d", len(frame), FrameMax)
	}
	var buf [FrameMax]byte
	copy(buf[:], frame)
	for name, v := range map[string]any{"bench_len": uint32(len(frame)), "bench_frame": buf} {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("benchmark object has no %s", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}
