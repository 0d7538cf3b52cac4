// Package trafgen floods a veth from one core for the live-path benchmarks and
// the flood tests. Three methods put a template frame on the wire, each
// rewriting its source address per frame (one source, N in turn, or random)
// with checksums kept valid:
//
//   - LiveFrames: an XDP program run with BPF_PROG_TEST_RUN in live-frames
//     mode transmits each copy with XDP_TX (Linux 5.18+; several Mpps). Some
//     kernels refuse the mode (EPERM): ProbeLiveFrames tells.
//   - Redirect: an AF_PACKET socket sends the template into an intermediate
//     veth whose XDP program broadcasts each frame through a devmap to the
//     target link several times, a devmap program giving each copy its own
//     source. The receiver gets xdp_frames, as from a NIC's driver.
//   - Packet: an AF_PACKET socket (PACKET_QDISC_BYPASS, sendmmsg) sends
//     straight out of the target link. The receiver gets skbs, which a veth
//     converts for its XDP program at a cost a NIC's frames do not have.
//
// Best picks the first the kernel allows, in that order. The generator's
// count is what it offered, never what arrived: count at the receiver.
package trafgen

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" gen ../../../bpf/trafgen.c

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/apiguard/apiguard/test/netns"
	"golang.org/x/sys/unix"
)

// Method is how a generator puts frames on the wire.
type Method int

// The methods, fastest first. Best is the zero value: the fastest allowed.
const (
	Best Method = iota
	LiveFrames
	Redirect
	Packet
)

func (m Method) String() string {
	switch m {
	case Best:
		return "best"
	case LiveFrames:
		return "live-frames"
	case Redirect:
		return "redirect"
	case Packet:
		return "af-packet"
	}
	return fmt.Sprintf("method(%d)", int(m))
}

// Delivers says what the receiving veth's XDP program is handed.
func (m Method) Delivers() string {
	if m == Packet {
		return "skbs (converted for XDP by veth)"
	}
	return "xdp_frames (as from a NIC driver)"
}

// ParseMethod reads a method's name as String prints it.
func ParseMethod(s string) (Method, error) {
	for m := Best; m <= Packet; m++ {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown generator %q (want best, live-frames, redirect or af-packet)", s)
}

// Config says what to send and how.
type Config struct {
	// Frame is the template, as test/packet builds it (no VLAN tags).
	Frame []byte
	// Sources: 0 or 1 sends from the frame's own source; N > 1 cycles 24 bits of
	// the source over N values (in turn, or at random): the low 24 bits of an
	// IPv4 address, bits 40..63 of an IPv6 one (so each source is its own /64).
	Sources uint32
	Random  bool
	// Method: Best (default) takes the fastest the kernel allows.
	Method Method
	// Fanout is how many copies Redirect makes of each frame it sends
	// (default 8, at most 64).
	Fanout int
	// CPU, when Pinned, is the CPU the sending thread runs on (the Packet and
	// Redirect methods' kernel work runs there too). Pinned threads run with
	// real-time priority while they send, so that other processes on a shared
	// machine don't decide the offered rate.
	CPU    int
	Pinned bool
}

// Generator sends one template frame out of one link.
type Generator struct {
	ns     *netns.Namespace
	method Method
	s      sender
	cfg    Config
}

// sender is one method. send offers n frames, or fewer when the kernel
// pushed back, and returns how many it offered.
type sender interface {
	send(n uint32) (uint64, error)
	close() error
}

// Open prepares a generator that sends cfg.Frame out of the link named link
// in namespace ns.
func Open(ns *netns.Namespace, link string, cfg Config) (*Generator, error) {
	tmpl, err := templateOf(cfg)
	if err != nil {
		return nil, err
	}
	m := cfg.Method
	if m == Best {
		m = Redirect
		if ProbeLiveFrames() == nil {
			m = LiveFrames
		}
	}
	g := &Generator{ns: ns, method: m, cfg: cfg}
	switch m {
	case LiveFrames:
		g.s, err = newLive(ns, link, cfg, tmpl)
	case Redirect:
		g.s, err = newRedirect(ns, link, cfg, tmpl)
	case Packet:
		g.s, err = newPacket(ns, link, cfg, tmpl)
	default:
		err = fmt.Errorf("unknown generator method %d", int(m))
	}
	if err != nil {
		return nil, fmt.Errorf("%s generator on %s: %w", m, link, err)
	}
	return g, nil
}

// Method is the method this generator uses.
func (g *Generator) Method() Method { return g.method }

// Close releases the generator and anything it created.
func (g *Generator) Close() error { return g.s.close() }

// Send offers count frames (fewer if the kernel pushed back) and returns how
// many it offered.
func (g *Generator) Send(count uint32) (uint64, error) {
	var sent uint64
	err := g.do(func() (err error) {
		sent, err = g.s.send(count)
		return err
	})
	return sent, err
}

// Flood sends as fast as it can for d, at most maxFrames, and returns how many
// frames it offered.
func (g *Generator) Flood(d time.Duration, maxFrames uint64) (uint64, error) {
	var sent uint64
	err := g.do(func() error {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) && sent < maxFrames {
			n, err := g.s.send(uint32(min(g.chunk(), maxFrames-sent)))
			sent += n
			if err != nil {
				return err
			}
		}
		return nil
	})
	return sent, err
}

// Paced sends at about rate frames per second for d and returns how many
// frames it offered. Every 10 ms it sends what the rate owes by then, so a
// thread the scheduler held back catches up (by at most 100 ms worth of
// frames at once) instead of falling behind for good.
func (g *Generator) Paced(d time.Duration, rate uint32) (uint64, error) {
	const slice = 10 * time.Millisecond
	maxOwed := max(uint64(rate)/10, 1)
	var sent uint64
	err := g.do(func() error {
		start := time.Now()
		for i := 1; i <= int(d/slice); i++ {
			due := uint64(float64(rate) * min(time.Since(start), d).Seconds())
			if due > sent {
				n, err := g.s.send(uint32(min(due-sent, maxOwed)))
				sent += n
				if err != nil {
					return err
				}
			}
			if wait := time.Until(start.Add(time.Duration(i) * slice)); wait > 0 {
				time.Sleep(wait)
			}
		}
		return nil
	})
	return sent, err
}

// chunk is how many frames one send call of Flood offers: a live-frames run
// ends in an RCU grace period, so it must last tens of milliseconds; the
// socket methods come back between batches anyway.
func (g *Generator) chunk() uint64 {
	if g.method == LiveFrames {
		return 1 << 18
	}
	return 1 << 14
}

// do runs fn on a thread inside the generator's namespace (live frames name
// the interface by index there), pinned when asked.
func (g *Generator) do(fn func() error) error {
	return g.ns.Do(func() error {
		if !g.cfg.Pinned {
			return fn()
		}
		var was, set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &was); err != nil {
			return fmt.Errorf("read the generator's CPU affinity: %w", err)
		}
		set.Set(g.cfg.CPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("pin the generator to CPU %d: %w", g.cfg.CPU, err)
		}
		if err := netns.Realtime(0); err != nil {
			return fmt.Errorf("generator: %w", err)
		}
		ferr := fn()
		// the thread goes back to the pool: timeshared, with its whole affinity
		if err := errors.Join(netns.Timeshared(0), unix.SchedSetaffinity(0, &was)); err != nil {
			return errors.Join(ferr, fmt.Errorf("unpin the generator: %w", err))
		}
		return ferr
	})
}

// template is where the source address and the checksums covering it sit in
// the frame.
type template struct {
	frame     []byte
	addrOff   int // the 4 bytes of the source to vary
	ipCsumOff int // IPv4 header checksum, 0 for IPv6
	l4CsumOff int // UDP/TCP checksum (covers the address through the pseudo-header)
}

func templateOf(cfg Config) (template, error) {
	f := cfg.Frame
	t := template{frame: f}
	if len(f) < 14+20+8 {
		return t, errors.New("template frame too short")
	}
	var l4off, proto int
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		t.addrOff = 14 + 12
		t.ipCsumOff = 14 + 10
		l4off = 14 + int(f[14]&0x0f)*4
		proto = int(f[14+9])
	case 0x86dd:
		// bits 32..63 of the source: IPv6 clients are /64s, so vary inside the prefix
		t.addrOff = 14 + 8 + 4
		l4off = 14 + 40
		proto = int(f[14+6])
	default:
		return t, errors.New("template frame is neither IPv4 nor IPv6")
	}
	switch proto {
	case unix.IPPROTO_UDP:
		t.l4CsumOff = l4off + 6
	case unix.IPPROTO_TCP:
		t.l4CsumOff = l4off + 16
	default:
		return t, fmt.Errorf("template frame carries protocol %d, want TCP or UDP", proto)
	}
	if t.l4CsumOff+2 > len(f) {
		return t, errors.New("template frame too short for its L4 header")
	}
	return t, nil
}

// consts are the BPF generator's constants for a template.
func (t template) consts(cfg Config) genGenConsts {
	c := genGenConsts{Sources: cfg.Sources, AddrOff: uint32(t.addrOff),
		IpCsumOff: uint32(t.ipCsumOff), L4CsumOff: uint32(t.l4CsumOff)}
	if cfg.Random {
		c.Random = 1
	}
	return c
}
