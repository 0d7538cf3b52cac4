// Package trafgen floods a veth at several Mpps from one core: an XDP program
// run with BPF_PROG_TEST_RUN in live-frames mode transmits a template frame
// (XDP_TX) out of an interface, rewriting its source address per packet. It is
// the generator of the live-path benchmarks; it needs root and Linux 5.18+.
package trafgen

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" gen ../../../bpf/trafgen.c

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cilium/ebpf"
)

const liveFrames = 2 // BPF_F_TEST_XDP_LIVE_FRAMES

// Config says what to send.
type Config struct {
	// Frame is the template, as test/packet builds it (no VLAN tags).
	Frame []byte
	// Sources: 0 or 1 sends from the frame's own source; N > 1 cycles 24 bits of
	// the source over N values (in turn, or at random): the low 24 bits of an
	// IPv4 address, bits 40..63 of an IPv6 one (so each source is its own /64).
	Sources uint32
	Random  bool
}

// Generator is a loaded generator program.
type Generator struct {
	objs  genObjects
	frame []byte
}

// New loads the generator for one template frame.
func New(cfg Config) (*Generator, error) {
	spec, err := loadGen()
	if err != nil {
		return nil, fmt.Errorf("read generator object: %w", err)
	}
	c, err := constsFor(cfg)
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["gen"].Set(c); err != nil {
		return nil, fmt.Errorf("set generator constants: %w", err)
	}
	g := &Generator{frame: cfg.Frame}
	if err := spec.LoadAndAssign(&g.objs, nil); err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	return g, nil
}

func constsFor(cfg Config) (genGenConsts, error) {
	f := cfg.Frame
	if len(f) < 14+20+8 {
		return genGenConsts{}, errors.New("template frame too short")
	}
	c := genGenConsts{Sources: cfg.Sources}
	if cfg.Random {
		c.Random = 1
	}
	var l4off, proto int
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		c.AddrOff = 14 + 12
		c.IpCsumOff = 14 + 10
		l4off = 14 + int(f[14]&0x0f)*4
		proto = int(f[14+9])
	case 0x86dd:
		// bits 32..63 of the source: IPv6 clients are /64s, so vary inside the prefix
		c.AddrOff = 14 + 8 + 4
		l4off = 14 + 40
		proto = int(f[14+6])
	default:
		return c, errors.New("template frame is neither IPv4 nor IPv6")
	}
	switch proto {
	case 17:
		c.L4CsumOff = uint32(l4off + 6)
	case 6:
		c.L4CsumOff = uint32(l4off + 16)
	default:
		return c, fmt.Errorf("template frame carries protocol %d, want TCP or UDP", proto)
	}
	return c, nil
}

// Close unloads the generator.
func (g *Generator) Close() error { return g.objs.Close() }

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

// xdpMD mirrors struct xdp_md, the context BPF_PROG_TEST_RUN takes for XDP.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Send transmits count frames out of ifindex, which must be in the calling
// thread's network namespace. It returns when the kernel has queued them all.
func (g *Generator) Send(ifindex int, count uint32) error {
	ctx := xdpMD{DataEnd: uint32(len(g.frame)), IngressIfindex: uint32(ifindex)}
	_, err := g.objs.Trafgen.Run(&ebpf.RunOptions{
		Data:      g.frame,
		Context:   ctx,
		Repeat:    count,
		Flags:     liveFrames,
		BatchSize: 64,
	})
	if err != nil {
		return fmt.Errorf("live-frames run on ifindex %d: %w", ifindex, err)
	}
	return nil
}

// Flood sends for d, in calls of chunk frames (each call ends in an RCU grace
// period, so a chunk should last tens of milliseconds or more), and returns how
// many frames it offered. At most maxFrames are sent.
func (g *Generator) Flood(ifindex int, d time.Duration, chunk, maxFrames uint32) (uint64, error) {
	var sent uint64
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && sent < uint64(maxFrames) {
		n := min(chunk, uint32(uint64(maxFrames)-sent))
		if err := g.Send(ifindex, n); err != nil {
			return sent, err
		}
		sent += uint64(n)
	}
	return sent, nil
}

// Paced sends at about rate frames per second for d, in 10 ms slices.
func (g *Generator) Paced(ifindex int, d time.Duration, rate uint32) (uint64, error) {
	const slice = 10 * time.Millisecond
	per := max(rate/100, 1)
	var sent uint64
	start := time.Now()
	for i := 0; time.Since(start) < d && i < int(d/slice)+1; i++ {
		if err := g.Send(ifindex, per); err != nil {
			return sent, err
		}
		sent += uint64(per)
		if wait := time.Until(start.Add(time.Duration(i+1) * slice)); wait > 0 {
			time.Sleep(wait)
		}
	}
	return sent, nil
}
