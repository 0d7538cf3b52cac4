// Package lab is apiguard's network-namespace lab: a guarded API server, a
// router in front of it, a legitimate client and attackers, each in its own
// namespace, joined by veth pairs. apiguard guards the server's one interface
// that all traffic crosses. The demo (test/lab/cmd/demo) and the end-to-end
// tests (test/e2e) both build on it.
//
//	client   10.2.0.2 ─┐
//	attacker 10.3.0.2 ─┼─ router (forwards; a blackhole swallows replies to spoofed
//	attacker 10.4.0.2 ─┘          sources) ── 10.1.0.1 ═[apiguard]═ 10.1.0.2 server
//
// and the same in IPv6 (fd00:N::/64): the server is subnet 1, the clients come
// next, then the attackers. Everything the lab creates carries its process id
// and a random suffix and is removed by Close, which tests register with
// t.Cleanup and the demo calls on exit and on SIGINT/SIGTERM; CleanStale
// removes what a lab killed with SIGKILL left behind.
//
// The API server and the attackers run as processes of their own (the lab runs
// its executable again with a role, see RunRoleIfAsked), so that the server's
// CPU is its own, as on a real host, and an attacker's busy loops do not slow
// down the measuring client, which runs in the calling process.
package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/apiguard/apiguard/test/bench/trafgen"
	"github.com/apiguard/apiguard/test/netns"
	"github.com/cilium/ebpf/link"
)

// Config shapes a lab. The zero value is one client, one attacker and a
// two-queue server interface.
type Config struct {
	// Clients and Attackers are the numbers of client and attacker
	// namespaces (default 1 each).
	Clients   int
	Attackers int
	// ServerQueues is the number of rx queues of the guarded interface
	// (default 2): with two, two CPUs deliver packets to it at once.
	ServerQueues int
	// ThreadedNAPI moves the server's receive work (XDP and the network
	// stack) into kernel threads of its own, one per queue, like a NIC whose
	// interrupts run on the server's CPUs. By default a veth does that work
	// in the sender's system call, so a flood pays for its own reception.
	ThreadedNAPI bool
}

// Host is one namespace with its address on the link toward the router.
type Host struct {
	NS    *netns.Namespace
	Link  *netns.Link
	Addr4 netip.Addr
	Addr6 netip.Addr
}

// Dialer returns a dialer that opens connections from the namespace of h,
// for in-process code (the legitimate client, tests).
func (h Host) Dialer(workers int) (*netns.Dialer, error) { return h.NS.Dialer(workers) }

// Lab is a running topology.
type Lab struct {
	Router    *netns.Namespace
	Server    Host
	Client    Host // the first of Clients
	Clients   []Host
	Attackers []Host
	// GuardIf is the server's interface toward the router: apiguard guards it.
	GuardIf string
	// Dir holds the lab's files (policies, logs, the control socket).
	Dir string

	mu      sync.Mutex
	closers []func() error // run in reverse order by Close
	closed  bool
}

// netServer is the server's subnet number (the N in 10.N.0.0/24 and
// fd00:N::/64); clients and attackers follow.
const netServer = 1

// New builds the topology. On error, whatever was built is removed again.
func New(cfg Config) (_ *Lab, err error) {
	if cfg.Clients <= 0 {
		cfg.Clients = 1
	}
	if cfg.Attackers <= 0 {
		cfg.Attackers = 1
	}
	if cfg.Clients+cfg.Attackers > 200 {
		return nil, fmt.Errorf("%d clients and %d attackers: at most 200 in all", cfg.Clients, cfg.Attackers)
	}
	if cfg.ServerQueues <= 0 {
		cfg.ServerQueues = 2
	}
	l := &Lab{}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	l.Dir, err = os.MkdirTemp("", fmt.Sprintf("%s%d-", dirPrefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("lab directory: %w", err)
	}
	dir := l.Dir
	l.onClose(func() error { return os.RemoveAll(dir) })

	if l.Router, err = l.namespace("router"); err != nil {
		return nil, err
	}
	// The router forwards between its links and throws away what it has no
	// route for: the server's replies to spoofed sources end there, as they
	// would somewhere on the Internet. rp_filter stays off so spoofed sources
	// reach the server at all.
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
	} {
		if err := l.Router.Sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	for _, args := range [][]string{
		{"route", "add", "blackhole", "default"},
		{"-6", "route", "add", "blackhole", "default"},
	} {
		if err := l.Router.IP(args...); err != nil {
			return nil, err
		}
	}

	if l.Server, err = l.host("server", netServer, cfg.ServerQueues); err != nil {
		return nil, err
	}
	l.GuardIf = l.Server.Link.Name
	if cfg.ThreadedNAPI {
		// GRO gives the veth its NAPI instances before any XDP program does;
		// threaded mode needs them.
		if _, err := l.Server.NS.Exec("ethtool", "-K", l.GuardIf, "gro", "on"); err != nil {
			return nil, err
		}
		if err := l.Server.NS.WriteSys("class/net/"+l.GuardIf+"/threaded", "1"); err != nil {
			return nil, err
		}
	}
	subnet := uint8(netServer + 1)
	for range cfg.Clients {
		c, err := l.host("client", subnet, 1)
		if err != nil {
			return nil, err
		}
		l.Clients = append(l.Clients, c)
		subnet++
	}
	l.Client = l.Clients[0]
	for range cfg.Attackers {
		a, err := l.host("attacker", subnet, 1)
		if err != nil {
			return nil, err
		}
		l.Attackers = append(l.Attackers, a)
		subnet++
	}
	return l, nil
}

// host makes a namespace linked to the router, with default routes through it.
func (l *Lab) host(prefix string, subnet uint8, queues int) (Host, error) {
	ns, err := l.namespace(prefix)
	if err != nil {
		return Host{}, err
	}
	rl, hl, err := netns.VethWith(l.Router, ns, subnet, netns.VethOptions{Queues: queues})
	if err != nil {
		return Host{}, err
	}
	if prefix == "server" {
		// A frame the guard sends back in native XDP (XDP_TX: the SYN
		// proxy's SYN-ACKs) reaches a veth's peer only when the peer has an
		// XDP program of its own; a NIC's receive path needs nothing of the kind.
		if err := l.passXDP(rl.Name); err != nil {
			return Host{}, err
		}
	}
	for _, args := range [][]string{
		{"route", "add", "default", "via", rl.Addr4.String()},
		{"-6", "route", "add", "default", "via", rl.Addr6.String()},
	} {
		if err := ns.IP(args...); err != nil {
			return Host{}, err
		}
	}
	return Host{NS: ns, Link: hl, Addr4: hl.Addr4, Addr6: hl.Addr6}, nil
}

// namespace makes a namespace named after the lab's process and its role, so
// that leftovers of a lab whose process was killed can be told apart from a
// running lab's (see CleanStale).
func (l *Lab) namespace(role string) (*netns.Namespace, error) {
	ns, err := netns.New(fmt.Sprintf("%s%d-%s-", nsPrefix, os.Getpid(), role))
	if err != nil {
		return nil, err
	}
	l.onClose(ns.Close)
	return ns, nil
}

// onClose registers fn to run when the lab closes, before what was registered
// earlier: processes stop before the pins go, pins before the namespaces.
func (l *Lab) onClose(fn func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closers = append(l.closers, fn)
}

// Close stops every process the lab started and removes its pins, namespaces
// and files. It may be called more than once, and from a signal handler's
// goroutine while other calls are in flight: only the first does the work.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	closers := l.closers
	l.closers = nil
	l.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Namespaces lists the names of the lab's namespaces.
func (l *Lab) Namespaces() []string {
	out := []string{l.Router.Name, l.Server.NS.Name}
	for _, h := range append(append([]Host{}, l.Clients...), l.Attackers...) {
		out = append(out, h.NS.Name)
	}
	return out
}

// Path is a file in the lab's directory.
func (l *Lab) Path(name string) string { return filepath.Join(l.Dir, name) }

// WriteFile writes a file into the lab's directory and returns its path.
func (l *Lab) WriteFile(name, content string) (string, error) {
	p := l.Path(name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", p, err)
	}
	return p, nil
}

// ServerAddr is the server's address in the given family (4 or 6).
func (l *Lab) ServerAddr(family int) netip.Addr {
	if family == 6 {
		return l.Server.Addr6
	}
	return l.Server.Addr4
}

// passXDP attaches an XDP program that passes everything to the router's
// link named name, for as long as the lab lives.
func (l *Lab) passXDP(name string) error {
	prog, err := trafgen.PassProgram()
	if err != nil {
		return fmt.Errorf("XDP pass program: %w", err)
	}
	var lk link.Link
	err = l.Router.Do(func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		lk, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		prog.Close()
		return fmt.Errorf("attach XDP pass to the router's %s: %w", name, err)
	}
	l.onClose(func() error { return errors.Join(lk.Close(), prog.Close()) })
	return nil
}
