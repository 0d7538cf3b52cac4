// Package netns builds throwaway network namespaces joined by veth pairs for
// tests and the lab. Every name carries a random suffix, and everything created
// is removed by Close (registered with t.Cleanup by the test helpers).
package netns

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
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
		ns.Close()
		return nil, err
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

// Veth joins a and b with a veth pair addressed 10.<net>.0.1/24 and .2
// (and fd00:<net>::1/64 and ::2), both up. net tells pairs apart.
func Veth(a, b *Namespace, net uint8) (*Link, *Link, error) {
	la := &Link{NS: a, Name: Unique("va"),
		Addr4: netip.AddrFrom4([4]byte{10, net, 0, 1}), Addr6: netip.MustParseAddr(fmt.Sprintf("fd00:%x::1", net))}
	lb := &Link{NS: b, Name: Unique("vb"),
		Addr4: netip.AddrFrom4([4]byte{10, net, 0, 2}), Addr6: netip.MustParseAddr(fmt.Sprintf("fd00:%x::2", net))}
	if err := ip("link", "add", la.Name, "netns", a.Name, "type", "veth", "peer", "name", lb.Name, "netns", b.Name); err != nil {
		return nil, nil, err
	}
	for _, l := range []*Link{la, lb} {
		for _, args := range [][]string{
			{"addr", "add", l.Addr4.String() + "/24", "dev", l.Name},
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

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
