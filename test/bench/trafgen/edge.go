package trafgen

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Edge is a lab's edge to the internet (bpf/trafgen.c lab_edge), in native
// XDP on the link a guarded veth's traffic comes back to: it passes frames for
// the addresses the lab holds (Allow), multicast, IPv6 link-local and non-IP
// frames, and drops the rest. A guard answering a flood from spoofed sources
// sends its answers there: in production they leave through the NIC, and the
// lab must not make the CPU that sent them carry them up a namespace's stack.
type Edge struct {
	objs struct {
		Prog  *ebpf.Program `ebpf:"lab_edge"`
		Local *ebpf.Map     `ebpf:"edge_local"`
	}
	xdp link.Link
}

// AttachEdge puts an edge on the link named ifname in namespace ns. The
// caller closes it.
func AttachEdge(ns *netns.Namespace, ifname string) (_ *Edge, err error) {
	e, err := loadEdge()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	idx, err := ifindexIn(ns, ifname)
	if err != nil {
		return nil, err
	}
	// XDP attaches by ifindex in the caller's namespace
	err = ns.Do(func() (err error) {
		e.xdp, err = link.AttachXDP(link.XDPOptions{Program: e.objs.Prog, Interface: idx, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attach edge to %s: %w", ifname, err)
	}
	return e, nil
}

// loadEdge loads the edge's program and map, attached nowhere.
func loadEdge() (*Edge, error) {
	e := &Edge{}
	spec, err := loadGen()
	if err != nil {
		return nil, fmt.Errorf("read edge object: %w", err)
	}
	if err := spec.LoadAndAssign(&e.objs, nil); err != nil {
		return nil, fmt.Errorf("load edge program: %w", err)
	}
	return e, nil
}

// Allow lets frames for addrs through the edge.
func (e *Edge) Allow(addrs ...netip.Addr) error {
	for _, a := range addrs {
		key := a.As16() // IPv4 v4-mapped, as the program reads it
		if err := e.objs.Local.Put(key, uint8(1)); err != nil {
			return fmt.Errorf("allow %s through the edge: %w", a, err)
		}
	}
	return nil
}

// Close detaches the edge and releases it.
func (e *Edge) Close() error {
	var errs []error
	for _, c := range []interface{ Close() error }{e.xdp, e.objs.Prog, e.objs.Local} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
