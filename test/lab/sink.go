package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Sink counts the UDP datagrams that reach a port of the server: what got
// through apiguard, end to end.
type Sink struct {
	conn *net.UDPConn
	n    atomic.Int64
	done chan struct{}
}

// Received is the number of datagrams read so far.
func (s *Sink) Received() int64 { return s.n.Load() }

// ListenUDP opens a sink on port of the server (IPv4 and IPv6). It runs in
// the calling process; the socket lives in the server namespace.
func (l *Lab) ListenUDP(port int) (*Sink, error) {
	s := &Sink{done: make(chan struct{})}
	err := l.Server.NS.Do(func() error {
		var err error
		s.conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(port))))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("udp sink on port %d: %w", port, err)
	}
	// A big buffer: the count should be what arrived, not what one reader
	// kept up with. FORCE, as root, goes past net.core.rmem_max.
	rc, err := s.conn.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
		})
		err = errors.Join(err, cerr)
	}
	if err != nil {
		s.conn.Close()
		return nil, fmt.Errorf("udp sink buffer: %w", err)
	}
	go func() {
		defer close(s.done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := s.conn.ReadFromUDP(buf); err != nil {
				return // closed
			}
			s.n.Add(1)
		}
	}()
	l.onClose(func() error { s.conn.Close(); <-s.done; return nil })
	return s, nil
}
