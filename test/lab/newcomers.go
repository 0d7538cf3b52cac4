package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Newcomers are clients the server has never seen: each makes one request
// from a source address of its own, never used before, as a stream of new
// users would. They show what a SYN flood does to a first connection, which
// no earlier handshake vouches for (docs/synproxy.md).

// NewcomerAddrs adds n addresses to client namespace from, each new to the
// lab (first is where to start in its subnet, 10.N.0.first on): the router
// reaches them on the client's link.
func (l *Lab) NewcomerAddrs(from, first, n int) ([]netip.Addr, error) {
	if from < 0 || from >= len(l.Clients) {
		return nil, fmt.Errorf("client %d: the lab has %d", from, len(l.Clients))
	}
	h := l.Clients[from]
	if first < 3 || first+n > 255 {
		return nil, fmt.Errorf("newcomers %d..%d: want 3..254 (the router and the client hold 1 and 2)", first, first+n-1)
	}
	base := h.Addr4.As4()
	var cmds []string
	out := make([]netip.Addr, 0, n)
	for i := range n {
		a := base
		a[3] = byte(first + i)
		out = append(out, netip.AddrFrom4(a))
		cmds = append(cmds, fmt.Sprintf("addr add %s/24 dev %s", netip.AddrFrom4(a), h.Link.Name))
	}
	f, err := os.CreateTemp("", "apiguard-lab-ip-batch")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(strings.Join(cmds, "\n") + "\n"); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	if err := h.NS.IP("-batch", f.Name()); err != nil {
		return nil, fmt.Errorf("add newcomer addresses: %w", err)
	}
	return out, nil
}

// NewcomerStats is what a set of newcomers saw.
type NewcomerStats struct {
	Total, OK int           // OK: answered within the timeout
	P99       time.Duration // connect time of those that connected
}

// RunNewcomers has each address of client namespace from make one request
// (GET /health) to target, a few at a time, each within timeout from its
// dial, and says how many were answered.
func (l *Lab) RunNewcomers(ctx context.Context, from int, addrs []netip.Addr, target netip.AddrPort, timeout time.Duration) NewcomerStats {
	const workers = 8
	h := l.Clients[from]
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		st       = NewcomerStats{Total: len(addrs)}
		connects []time.Duration
		work     = make(chan netip.Addr)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range work {
				dial, ok := newcomer(ctx, h, a, target, timeout)
				mu.Lock()
				if ok {
					st.OK++
					connects = append(connects, dial)
				}
				mu.Unlock()
			}
		}()
	}
	for _, a := range addrs {
		if ctx.Err() != nil {
			break
		}
		work <- a
	}
	close(work)
	wg.Wait()
	if len(connects) > 0 {
		slices.Sort(connects)
		st.P99 = connects[min(len(connects)-1, (len(connects)*99+99)/100-1)]
	}
	return st
}

func newcomer(ctx context.Context, h Host, from netip.Addr, target netip.AddrPort, timeout time.Duration) (time.Duration, bool) {
	var dial time.Duration
	ok := false
	h.NS.Do(func() error {
		start := time.Now()
		d := net.Dialer{Timeout: timeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
		c, err := d.DialContext(ctx, "tcp", target.String())
		if err != nil {
			return nil
		}
		defer c.Close()
		dial = time.Since(start)
		c.SetDeadline(start.Add(timeout))
		if _, err := fmt.Fprintf(c, "GET /health HTTP/1.0\r\nHost: %s\r\n\r\n", target); err != nil {
			return nil
		}
		buf := make([]byte, 12)
		n, err := c.Read(buf)
		reply := string(buf[:n])
		ok = err == nil && (strings.HasPrefix(reply, "HTTP/1.1 200") || strings.HasPrefix(reply, "HTTP/1.0 200"))
		return nil
	})
	return dial, ok
}
