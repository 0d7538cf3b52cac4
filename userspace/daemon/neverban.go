package daemon

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/crowdsec"
	"github.com/apiguard/apiguard/userspace/policy"
	"github.com/vishvananda/netlink"
)

// The never-ban set: addresses no ban may cover, because cutting them off
// cuts the host off (its own addresses, its default gateways, its resolvers,
// the CrowdSec LAPI whose deletions would then never arrive), blinds the
// attribution of API evidence (trusted proxies), or because the policy says
// so (spec.neverBan). The detector flags them and says why instead of
// banning; a CrowdSec decision covering one is skipped and counted; a manual
// ban on one needs --force.
//
// The set is rebuilt when the policy changes and every neverBanRefresh, from
// the kernel (netlink: addresses and routes of the daemon's network
// namespace), /etc/resolv.conf and DNS (a LAPI named by host name).

const (
	// neverBanRefresh is how stale the host's addresses, gateways and
	// resolvers may be: a new gateway is protected within this.
	neverBanRefresh = 30 * time.Second
	// DefaultResolvConf is where the resolvers are read from.
	DefaultResolvConf = "/etc/resolv.conf"
	// lapiLookupTimeout bounds the DNS lookup of a LAPI named by host name.
	lapiLookupTimeout = 2 * time.Second
)

// neverBanEntry is one protected prefix and why it is protected.
type neverBanEntry struct {
	prefix netip.Prefix
	why    string
}

// neverBanSet is an immutable snapshot, looked up without locks.
type neverBanSet struct {
	// sorted by address: the entries inside a queried prefix are a range
	entries []neverBanEntry
	// byBits[n]: the entries of prefix length n by their address, for the
	// entries that contain a queried prefix
	byBits map[int]map[netip.Addr]neverBanEntry
}

func newNeverBanSet(entries []neverBanEntry) *neverBanSet {
	s := &neverBanSet{byBits: map[int]map[netip.Addr]neverBanEntry{}}
	for _, e := range entries {
		e.prefix = unmapPrefix(e.prefix)
		if !e.prefix.IsValid() {
			continue
		}
		m := s.byBits[e.prefix.Bits()]
		if m == nil {
			m = map[netip.Addr]neverBanEntry{}
			s.byBits[e.prefix.Bits()] = m
		}
		if _, dup := m[e.prefix.Addr()]; dup {
			continue // the first reason found stays
		}
		m[e.prefix.Addr()] = e
		s.entries = append(s.entries, e)
	}
	slices.SortFunc(s.entries, func(a, b neverBanEntry) int {
		return cmp.Or(a.prefix.Addr().Compare(b.prefix.Addr()), a.prefix.Bits()-b.prefix.Bits())
	})
	return s
}

// unmapPrefix masks p and writes an IPv4-mapped prefix as IPv4.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return p
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < loader.V4MappedBits {
			return netip.Prefix{}
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-loader.V4MappedBits)
	}
	return p.Masked()
}

// covering finds an entry that a ban on p would cover (or that covers p):
// any overlap is one.
func (s *neverBanSet) covering(p netip.Prefix) (neverBanEntry, bool) {
	if s == nil {
		return neverBanEntry{}, false
	}
	p = unmapPrefix(p)
	if !p.IsValid() {
		return neverBanEntry{}, false
	}
	// an entry containing p
	for bits, m := range s.byBits {
		if bits > p.Bits() {
			continue
		}
		q, err := p.Addr().Prefix(bits)
		if err != nil {
			continue // the other family
		}
		if e, ok := m[q.Addr()]; ok {
			return e, true
		}
	}
	// an entry inside p: its address lies in p's range
	i, _ := slices.BinarySearchFunc(s.entries, p.Addr(), func(e neverBanEntry, a netip.Addr) int {
		return e.prefix.Addr().Compare(a)
	})
	if i < len(s.entries) && p.Contains(s.entries[i].prefix.Addr()) {
		return s.entries[i], true
	}
	return neverBanEntry{}, false
}

func (s *neverBanSet) len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// neverBanLink keeps the daemon's never-ban set up to date.
type neverBanLink struct {
	set     atomic.Pointer[neverBanSet]
	changed chan struct{}

	// mu guards the last good entries of each source: a source that fails
	// to read keeps its previous ones, rather than losing its protection
	mu   sync.Mutex
	last map[string][]neverBanEntry

	// crowdsec counts CrowdSec decisions skipped because they cover the set
	crowdsec atomic.Uint64
}

// neverBan reports whether a ban on p would cover an address of the
// never-ban set, and why that address is protected.
func (d *Daemon) neverBan(p netip.Prefix) (why string, ok bool) {
	e, ok := d.never.set.Load().covering(p)
	if !ok {
		return "", false
	}
	return fmt.Sprintf("%s (%v)", e.why, e.prefix), true
}

// configureNeverBan has the set rebuilt for the policy in force.
func (d *Daemon) configureNeverBan() {
	if d.never.changed == nil {
		return
	}
	select {
	case d.never.changed <- struct{}{}:
	default:
	}
}

// refreshNeverBan rebuilds the set until ctx ends.
func (d *Daemon) refreshNeverBan(ctx context.Context) error {
	t := time.NewTicker(neverBanRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-d.never.changed:
		}
		d.buildNeverBan(ctx)
	}
}

// buildNeverBan reads every source and swaps the set in.
func (d *Daemon) buildNeverBan(ctx context.Context) {
	pol := d.CurrentPolicy()
	sources := []struct {
		name string
		read func() ([]neverBanEntry, error)
	}{
		{"host addresses", hostAddresses},
		{"default gateways", defaultGateways},
		{"resolvers", func() ([]neverBanEntry, error) { return resolvers(d.cfg.ResolvConf) }},
		{"policy", func() ([]neverBanEntry, error) { return policyNeverBan(ctx, pol) }},
	}
	d.never.mu.Lock()
	defer d.never.mu.Unlock()
	if d.never.last == nil {
		d.never.last = map[string][]neverBanEntry{}
	}
	var all []neverBanEntry
	for _, s := range sources {
		es, err := s.read()
		if err != nil {
			d.log.Warn("cannot read part of the never-ban set; its previous entries stay", "source", s.name, "err", err)
			es = d.never.last[s.name]
		}
		d.never.last[s.name] = es
		all = append(all, es...)
	}
	d.never.set.Store(newNeverBanSet(all))
}

// hostAddresses are the addresses of every interface of the daemon's network
// namespace.
func hostAddresses() ([]neverBanEntry, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []neverBanEntry
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("list the addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			out = append(out, neverBanEntry{netip.PrefixFrom(ip, ip.BitLen()), "the host's own address on " + l.Attrs().Name})
		}
	}
	return out, nil
}

// defaultGateways are the next hops of the main table's default routes.
func defaultGateways() ([]neverBanEntry, error) {
	var out []neverBanEntry
	add := func(ip net.IP) {
		if a, ok := netip.AddrFromSlice(ip); ok && a.IsValid() && !a.IsUnspecified() {
			a = a.Unmap()
			out = append(out, neverBanEntry{netip.PrefixFrom(a, a.BitLen()), "the host's default gateway"})
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteList(nil, fam)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			add(r.Gw)
			if v, ok := r.Via.(*netlink.Via); ok && v != nil {
				add(v.Addr)
			}
			for _, nh := range r.MultiPath {
				add(nh.Gw)
			}
		}
	}
	nhs, err := defaultNexthops()
	if err != nil {
		return nil, err
	}
	for _, nh := range nhs {
		add(nh.gw)
	}
	return out, nil
}

// resolvers are the nameserver lines of a resolv.conf. A missing file has
// none.
func resolvers(path string) ([]neverBanEntry, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var out []neverBanEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue // resolv(5) ignores what it cannot read; so do we
		}
		a = a.WithZone("").Unmap()
		out = append(out, neverBanEntry{netip.PrefixFrom(a, a.BitLen()), "a resolver in " + path})
	}
	return out, sc.Err()
}

// policyNeverBan is what the policy names: spec.neverBan, the trusted proxies
// of its access logs, and its CrowdSec LAPI (looked up when named by host).
func policyNeverBan(ctx context.Context, pol *policy.Policy) ([]neverBanEntry, error) {
	if pol == nil {
		return nil, nil
	}
	var out []neverBanEntry
	for _, p := range pol.Spec.NeverBan {
		out = append(out, neverBanEntry{p, "spec.neverBan"})
	}
	for _, l := range pol.Spec.AccessLogs {
		for _, p := range l.TrustedProxies {
			out = append(out, neverBanEntry{p, "a trusted proxy of the access log " + l.Path})
		}
	}
	if cs := pol.Spec.CrowdSec; cs.Enabled && cs.LAPI != "" {
		u, err := url.Parse(cs.LAPI)
		if err != nil {
			return out, fmt.Errorf("the CrowdSec LAPI address %q: %w", cs.LAPI, err)
		}
		addrs, err := lookupHost(ctx, u.Hostname())
		if err != nil {
			return out, fmt.Errorf("look the CrowdSec LAPI up: %w", err)
		}
		for _, a := range addrs {
			out = append(out, neverBanEntry{netip.PrefixFrom(a, a.BitLen()), "the CrowdSec LAPI " + u.Host})
		}
	}
	return out, nil
}

// lookupHost is host's addresses: itself when it is one.
func lookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.WithZone("").Unmap()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, lapiLookupTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range addrs {
		addrs[i] = addrs[i].WithZone("").Unmap()
	}
	return addrs, nil
}

// NeverBanEntries is the size of the never-ban set.
func (d *Daemon) NeverBanEntries() int { return d.never.set.Load().len() }

// NeverBanCrowdSec counts CrowdSec decisions skipped for covering the set.
func (d *Daemon) NeverBanCrowdSec() uint64 { return d.never.crowdsec.Load() }

// withoutNeverBan is add without the CrowdSec decisions that cover the
// never-ban set (add itself is left as it is); they are counted, and said
// once per call.
func (d *Daemon) withoutNeverBan(add []crowdsec.Ban) []crowdsec.Ban {
	set := d.never.set.Load()
	var kept []crowdsec.Ban
	skipped := 0
	for i, b := range add {
		e, ok := set.covering(b.Prefix)
		if !ok {
			if kept != nil {
				kept = append(kept, b)
			}
			continue
		}
		if skipped == 0 {
			kept = append(make([]crowdsec.Ban, 0, len(add)-1), add[:i]...)
			d.log.Warn("a CrowdSec decision covers an address that is never banned; not enforced",
				"decision", b.Prefix, "covers", e.prefix, "why", e.why)
		}
		skipped++
	}
	if skipped == 0 {
		return add
	}
	if skipped > 1 {
		d.log.Warn("CrowdSec decisions covering never-banned addresses were not enforced", "decisions", skipped)
	}
	d.never.crowdsec.Add(uint64(skipped))
	return kept
}
