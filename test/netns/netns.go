// Package netns builds throwaway network namespaces joined by veth pairs for
// tests and the lab. Every name carries a random suffix, and everything created
// is removed by Close (registered with t.Cleanup by the test helpers).
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Unique returns prefix plus a random suffix, short enough for an interface name.
func Unique(prefix string) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}

// Namespace is a named network namespace (ip netns).
type Namespace struct {
	Name string
}

// New creates a namespace with loopback up.
func New(prefix string) (*Namespace, error) {
	ns := &Namespace{Name: Unique(prefix)}
	if err := ip("netns", "add", ns.Name); err != nil {
		return nil, err
	}
	if err := ns.IP("link", "set", "lo", "up"); err != nil {
		return nil, errors.Join(err, ns.Close())
	}
	return ns, nil
}

// IP runs an ip(8) command inside the namespace.
func (ns *Namespace) IP(args ...string) error {
	return ip(append([]string{"-n", ns.Name}, args...)...)
}

// Exec runs a command inside the namespace and returns its combined output.
func (ns *Namespace) Exec(name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns.Name, err, out)
	}
	return string(out), nil
}

// Command prepares a long-running command inside the namespace.
func (ns *Namespace) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Do runs fn on an OS thread switched into the namespace. Sockets opened by fn
// stay in the namespace after Do returns.
func (ns *Namespace) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: if switching back failed it must die
		// with the goroutine rather than serve others in the wrong namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns.Name)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns.Name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", ns.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Close deletes the namespace and with it every interface inside.
func (ns *Namespace) Close() error {
	return ip("netns", "del", ns.Name)
}

// Link is one end of a veth pair with its addresses.
type Link struct {
	NS    *Namespace
	Name  string
	Addr4 netip.Addr
	Addr6 netip.Addr
}

// VethOptions tunes a veth pair.
type VethOptions struct {
	// Queues is the number of rx and tx queues of each end (default 1). With
	// more than one, packets from different flows land on different rx queues,
	// each drained by its own NAPI instance: two CPUs can deliver to the same
	// end at once, as with a multi-queue NIC.
	Queues int
}

// Veth joins a and b with a veth pair addressed 10.<net>.0.1/24 and .2
// (and fd00:<net>::1/64 and ::2), both up. net tells pairs apart.
func Veth(a, b *Namespace, net uint8) (*Link, *Link, error) {
	return VethWith(a, b, net, VethOptions{})
}

// VethWith is Veth with options.
func VethWith(a, b *Namespace, net uint8, o VethOptions) (*Link, *Link, error) {
	la := &Link{NS: a, Name: Unique("va"),
		Addr4: netip.AddrFrom4([4]byte{10, net, 0, 1}), Addr6: netip.MustParseAddr(fmt.Sprintf("fd00:%x::1", net))}
	lb := &Link{NS: b, Name: Unique("vb"),
		Addr4: netip.AddrFrom4([4]byte{10, net, 0, 2}), Addr6: netip.MustParseAddr(fmt.Sprintf("fd00:%x::2", net))}
	var queues []string
	if o.Queues > 1 {
		n := strconv.Itoa(o.Queues)
		queues = []string{"numtxqueues", n, "numrxqueues", n}
	}
	args := []string{"link", "add", la.Name}
	args = append(args, queues...)
	args = append(args, "netns", a.Name, "type", "veth", "peer", "name", lb.Name)
	args = append(args, queues...)
	args = append(args, "netns", b.Name)
	if err := ip(args...); err != nil {
		return nil, nil, err
	}
	for _, l := range []*Link{la, lb} {
		for _, args := range [][]string{
			{"addr", "add", l.Addr4.String() + "/24", "dev", l.Name},
			// nodad: the address is usable at once, not after duplicate detection
			{"addr", "add", l.Addr6.String() + "/64", "dev", l.Name, "nodad"},
			{"link", "set", l.Name, "up"},
		} {
			if err := l.NS.IP(args...); err != nil {
				return nil, nil, err
			}
		}
	}
	return la, lb, nil
}

// Prefix4 and Prefix6 are the link's subnets.
func (l *Link) Prefix4() netip.Prefix { return netip.PrefixFrom(l.Addr4, 24).Masked() }
func (l *Link) Prefix6() netip.Prefix { return netip.PrefixFrom(l.Addr6, 64).Masked() }

// MAC returns the hardware address of the link.
func (l *Link) MAC() (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := l.NS.Do(func() error {
		ifc, err := net.InterfaceByName(l.Name)
		if err != nil {
			return err
		}
		mac = ifc.HardwareAddr
		return nil
	})
	return mac, err
}

// Sysctl sets a sysctl of the namespace, e.g. "net.ipv4.ip_forward" to "1".
// /proc/sys/net shows the namespace of the thread that opens it, so the file
// is written from a thread inside.
func (ns *Namespace) Sysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return ns.Do(func() error {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, ns.Name, err)
		}
		return nil
	})
}

// WriteSys writes a file under /sys as the namespace sees it, e.g.
// "class/net/eth0/threaded". sysfs shows the network devices of the namespace
// that mounted it, so this goes through `ip netns exec`, which mounts a fresh
// one.
func (ns *Namespace) WriteSys(path, value string) error {
	if strings.Contains(path, "..") {
		return fmt.Errorf("sysfs path %q leaves /sys", path)
	}
	_, err := ns.Exec("sh", "-c", `printf '%s' "$1" > "/sys/$2"`, "sh", value, path)
	return err
}

// Dialer opens connections from inside a namespace for code running on any
// thread (an http.Transport, for one). A socket belongs to the namespace of
// the thread that creates it, so each worker is a goroutine locked to a
// thread that entered the namespace for good.
type Dialer struct {
	reqs chan dialReq
	once sync.Once
}

type dialReq struct {
	ctx           context.Context
	network, addr string
	res           chan dialRes
}

type dialRes struct {
	conn net.Conn
	err  error
}

// Dialer starts workers dialing threads in the namespace; Close stops them.
func (ns *Namespace) Dialer(workers int) (*Dialer, error) {
	d := &Dialer{reqs: make(chan dialReq)}
	started := make(chan error, workers)
	for range workers {
		go func() {
			// Locked while in the namespace. At the end the thread goes back
			// to its own namespace and to the pool; if it cannot, it stays
			// locked and ends with the goroutine rather than serve others in
			// the wrong namespace. (A thread that ends also delivers the
			// parent-death signal of processes it started, so ending threads
			// is best avoided.)
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				started <- fmt.Errorf("get current netns: %w", err)
				return
			}
			defer orig.Close()
			target, err := netns.GetFromName(ns.Name)
			if err != nil {
				started <- fmt.Errorf("open netns %s: %w", ns.Name, err)
				return
			}
			err = netns.Set(target)
			target.Close()
			if err != nil {
				started <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
				return
			}
			started <- nil
			for r := range d.reqs {
				var nd net.Dialer
				c, err := nd.DialContext(r.ctx, r.network, r.addr)
				r.res <- dialRes{c, err}
			}
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
	}
	var errs []error
	for range workers {
		errs = append(errs, <-started)
	}
	if err := errors.Join(errs...); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// DialContext dials from inside the namespace.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	r := dialReq{ctx: ctx, network: network, addr: addr, res: make(chan dialRes, 1)}
	select {
	case d.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := <-r.res
	return res.conn, res.err
}

// Close stops the workers; connections already made stay open.
func (d *Dialer) Close() {
	d.once.Do(func() { close(d.reqs) })
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ThreadedNAPI moves the link's receive work into NAPI kernel threads
// (sysfs "threaded") and pins them to cpu, so that it runs on a CPU of its own
// and its CPU time can be read per thread. It returns the threads' pids. The
// threads get real-time (FIFO) priority: a NIC's receive work runs in softirq
// context, ahead of every task, and other processes on the CPU must not hold
// it back (on a shared machine they would, and the ring would overflow while
// the thread waits its turn).
// Attaching or detaching XDP re-creates a veth's NAPI instances and their
// threads: call it again after each change. A veth has NAPI only with an XDP
// program attached or GRO on.
func (l *Link) ThreadedNAPI(cpu int) ([]int, error) {
	if err := l.NS.WriteSys("class/net/"+l.Name+"/threaded", "1"); err != nil {
		return nil, err
	}
	prefix := "napi/" + l.Name
	deadline := time.Now().Add(2 * time.Second)
	for {
		pids, err := threadsNamed(prefix)
		if err == nil {
			for _, pid := range pids {
				var set unix.CPUSet
				set.Set(cpu)
				if err := unix.SchedSetaffinity(pid, &set); err != nil {
					return nil, fmt.Errorf("pin %s (pid %d) to CPU %d: %w", prefix, pid, cpu, err)
				}
				if err := Realtime(pid); err != nil {
					return nil, fmt.Errorf("%s (pid %d): %w", prefix, pid, err)
				}
			}
			return pids, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// threadsNamed returns the pids of the threads whose names start with prefix
// (names are truncated to 15 characters).
func threadsNamed(prefix string) ([]int, error) {
	if len(prefix) > 15 {
		prefix = prefix[:15]
	}
	comms, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range comms {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a process that ended meanwhile
		}
		if strings.HasPrefix(strings.TrimSpace(string(b)), prefix) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no thread named %s*", prefix)
	}
	return pids, nil
}

// ThreadCPU is the CPU time a thread has run, in nanoseconds, from
// /proc/PID/schedstat (exact, unlike the tick-sampled times of /proc/PID/stat).
func ThreadCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, fmt.Errorf("empty /proc/%d/schedstat", pid)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/%d/schedstat: %w", pid, err)
	}
	return time.Duration(ns), nil
}

// Realtime gives a thread (0: the calling one) FIFO priority 50; the kernel's
// real-time throttling still leaves other tasks 5% of the CPU.
func Realtime(pid int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 50}
	if err := unix.SchedSetAttr(pid, &attr, 0); err != nil {
		return fmt.Errorf("SCHED_FIFO: %w", err)
	}
	return nil
}

// Timeshared puts a thread (0: the calling one) back to normal scheduling.
func Timeshared(pid int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}
	if err := unix.SchedSetAttr(pid, &attr, 0); err != nil {
		return fmt.Errorf("SCHED_NORMAL: %w", err)
	}
	return nil
}
