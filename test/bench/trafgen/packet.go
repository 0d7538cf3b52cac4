package trafgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"unsafe"

	"github.com/apiguard/apiguard/test/netns"
	"golang.org/x/sys/unix"
)

// batch is how many frames one sendmmsg call carries.
const batch = 256

// packetSocket sends frames out of one link with sendmmsg on an AF_PACKET
// socket that bypasses the qdisc: the frames reach the veth's xmit directly.
// With vary set, it rewrites each frame's source before sending (the Packet
// method); the Redirect method sends the template as it is and lets its devmap
// program vary the copies.
type packetSocket struct {
	fd     int
	t      template
	vary   bool
	cfg    Config
	frames []byte // batch copies of the template, back to back
	iovs   []unix.Iovec
	msgs   []unix.Mmsghdr
	seq    uint32
	rng    *rand.PCG
	// pushback counts sends the link refused (its peer's queue was full)
	pushback uint64
}

func newPacket(ns *netns.Namespace, link string, cfg Config, t template) (*packetSocket, error) {
	return openPacketSocket(ns, link, cfg, t, cfg.Sources > 1)
}

func openPacketSocket(ns *netns.Namespace, link string, cfg Config, t template, vary bool) (*packetSocket, error) {
	ifindex, err := ifindexIn(ns, link)
	if err != nil {
		return nil, err
	}
	p := &packetSocket{fd: -1, t: t, vary: vary, cfg: cfg, rng: rand.NewPCG(1, 2)}
	// a socket belongs to the namespace it is created in, wherever it is used
	err = ns.Do(func() error {
		// protocol 0: the socket receives nothing
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		p.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
		}
		// room for several batches in flight
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 16<<20); err != nil {
			return fmt.Errorf("SO_SNDBUFFORCE: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
			return fmt.Errorf("bind to %s: %w", link, err)
		}
		return nil
	})
	if err != nil {
		p.close()
		return nil, err
	}
	n := len(t.frame)
	p.frames = make([]byte, n*batch)
	p.iovs = make([]unix.Iovec, batch)
	p.msgs = make([]unix.Mmsghdr, batch)
	for i := range batch {
		f := p.frames[i*n : (i+1)*n]
		copy(f, t.frame)
		p.iovs[i].Base = &f[0]
		p.iovs[i].SetLen(n)
		p.msgs[i].Hdr.Iov = &p.iovs[i]
		p.msgs[i].Hdr.SetIovlen(1)
	}
	return p, nil
}

// send offers n frames in batches. A batch the link refuses part of (ENOBUFS:
// the peer's queue is full) counts what was sent and goes on with the rest.
func (p *packetSocket) send(n uint32) (uint64, error) {
	var sent uint64
	for left := int(n); left > 0; {
		k := min(left, batch)
		if p.vary {
			p.nextSources(k)
		}
		m, err := p.sendmmsg(k)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.EAGAIN):
			// the link refused a frame (its peer's queue was full), in this
			// call or, reported now, at the end of the last: skip one
			p.pushback++
			m = 1
		default:
			return sent, fmt.Errorf("sendmmsg: %w", err)
		}
		sent += uint64(m)
		left -= m
	}
	return sent, nil
}

func (p *packetSocket) sendmmsg(k int) (int, error) {
	r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd), uintptr(unsafe.Pointer(&p.msgs[0])), uintptr(k), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	// fewer than k: sendmmsg stopped at a failing message and keeps its error
	// for the next call
	return int(r), nil
}

// nextSources gives the first k frames of the batch their next sources, as
// the BPF generator does (next_source in bpf/trafgen.c).
func (p *packetSocket) nextSources(k int) {
	n := len(p.t.frame)
	for i := range k {
		f := p.frames[i*n : (i+1)*n]
		var idx uint32
		if p.cfg.Random {
			idx = uint32(p.rng.Uint64()>>32) % p.cfg.Sources
		} else {
			idx = p.seq % p.cfg.Sources
			p.seq++
		}
		a := f[p.t.addrOff : p.t.addrOff+4]
		old := binary.BigEndian.Uint32(a)
		nw := old&0xff000000 | idx&0x00ffffff
		binary.BigEndian.PutUint32(a, nw)
		if p.t.ipCsumOff != 0 {
			fixChecksum(f[p.t.ipCsumOff:], old, nw)
		}
		fixChecksum(f[p.t.l4CsumOff:], old, nw)
	}
}

// fixChecksum updates the 16-bit one's complement checksum at c[0:2] for a
// 32-bit word that changed from old to nw (RFC 1624).
func fixChecksum(c []byte, old, nw uint32) {
	check := binary.BigEndian.Uint16(c)
	sum := uint32(^check)
	sum += uint32(^uint16(old>>16)) + uint32(^uint16(old))
	sum += nw>>16 + nw&0xffff
	sum = sum&0xffff + sum>>16
	sum = sum&0xffff + sum>>16
	binary.BigEndian.PutUint16(c, ^uint16(sum))
}

func (p *packetSocket) close() error {
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	return err
}
