package policy

// Connection filtering: a service's source ACL (allowFrom, allowFromFiles),
// its caps on concurrent TCP connections (maxConnections), and how the kernel
// follows connections (spec.connections). docs/conntrack.md has the design.

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/apiguard/apiguard/loader"
)

// ConnCap caps the concurrent connections of one level. Zero means no cap.
// Established counts every connection, unfinished handshakes included (each
// may complete); HalfOpen counts only the unfinished ones.
type ConnCap struct {
	Established uint32
	HalfOpen    uint32
}

// ConnCaps caps a TCP service's concurrent connections per client (one
// clientKey prefix) and for the service in total. A SYN over a cap is
// dropped; an established connection is never cut.
type ConnCaps struct {
	Client ConnCap
	Total  ConnCap
}

// Set reports whether any cap is given.
func (c ConnCaps) Set() bool { return c != ConnCaps{} }

// TableFull is what happens to a new connection to a capped service when the
// kernel's flow table has no room for it.
type TableFull = DefaultAction

// Connections is how the kernel follows connections to capped services.
type Connections struct {
	EstablishedTimeout time.Duration // idle time after which an established connection stops counting
	HalfOpenTimeout    time.Duration // time after its SYN that an unfinished handshake stops counting
	ClosedTimeout      time.Duration // how long a closed connection's entry stays to recognise its last packets
	WhenTableFull      TableFull     // pass (untracked) or drop
	// ProvenClientTTL is how long a completed handshake lets a client skip
	// its TCP services' shared (prefix and total) new-connection limits; 0
	// turns it off. It needs no maxConnections.
	ProvenClientTTL time.Duration
}

// Limits of the connection settings.
const (
	// ACLCapacity is how many allowFrom entries one policy may hold, all
	// services together.
	ACLCapacity = loader.ACLCapacity
	// MaxConnCap is the largest connection cap.
	MaxConnCap = 1 << 30
)

func defaultConnections() Connections {
	return Connections{
		EstablishedTimeout: loader.DefaultEstablishedTimeout,
		HalfOpenTimeout:    loader.DefaultHalfOpenTimeout,
		ClosedTimeout:      loader.DefaultClosedTimeout,
		WhenTableFull:      Pass,
		ProvenClientTTL:    loader.DefaultProvenTTL,
	}
}

// serviceConns reads a service's allowFrom, allowFromFiles and maxConnections.
func (p *parser) serviceConns(o object, svc *Service) {
	inline, files := o.get("allowFrom"), o.get("allowFromFiles")
	if inline != nil || files != nil {
		p.allowFrom(o, inline, files, svc)
	}
	if v := o.get("maxConnections"); v != nil {
		svc.MaxConnections = p.maxConnections(v, o.field("maxConnections"), svc.Protocol)
	}
}

// aclEntry is one allowFrom prefix with where it was written, for warnings.
type aclEntry struct {
	pfx   netip.Prefix
	file  string
	line  int
	field string
}

func (e aclEntry) where(policyFile string) string {
	if e.file == policyFile {
		return fmt.Sprintf("%s, line %d", e.field, e.line)
	}
	return fmt.Sprintf("%s:%d", e.file, e.line)
}

func (p *parser) allowFrom(o object, inline, files *yaml.Node, svc *Service) {
	var entries []aclEntry
	errsBefore := len(p.errs)
	if inline != nil {
		p.cidrs(inline, o.field("allowFrom"), "a CIDR such as 10.0.0.0/8", func(pfx netip.Prefix, it *yaml.Node, _ int, f string) {
			entries = append(entries, aclEntry{pfx: pfx, file: p.file, line: it.Line, field: f})
		})
	}
	if files != nil {
		names := p.listFiles(files, o.field("allowFromFiles"), func(f, name string, data []byte) {
			entries = p.aclFile(data, p.listPath(name), f, entries)
		})
		svc.AllowFromFiles = append(svc.AllowFromFiles, names...)
	}
	if len(entries) == 0 && len(p.errs) == errsBefore {
		// an empty ACL is no ACL: a truncated list file must not open the service
		at, field := inline, o.field("allowFrom")
		if at == nil {
			at, field = files, o.field("allowFromFiles")
		}
		p.errAt(resolve(at), field, "no entry at all: the service would be open to every source; leave allowFrom and allowFromFiles out for that")
	}
	p.aclWarnings(entries)
	for _, e := range entries {
		svc.AllowFrom = append(svc.AllowFrom, e.pfx)
	}
}

// aclFile reads a list file: one CIDR per line, '#' or ';' starts a comment.
func (p *parser) aclFile(data []byte, file, field string, into []aclEntry) []aclEntry {
	bad, line := 0, 0
	for len(data) > 0 {
		if !p.countEntry(file, line+1, field) {
			return into
		}
		line++
		var text []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			text, data = data[:i], data[i+1:]
		} else {
			text, data = data, nil
		}
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte("\xef\xbb\xbf")) // a byte order mark
		}
		if i := bytes.IndexAny(text, "#;"); i >= 0 {
			text = text[:i]
		}
		text = bytes.TrimSpace(text)
		if len(text) == 0 {
			continue
		}
		pfx, err := parseListLine(string(text))
		if err != nil {
			if bad++; bad <= maxListErrors {
				p.addErr(Error{File: file, Line: line, Field: field, Msg: err.Error()})
			}
			continue
		}
		into = append(into, aclEntry{pfx: pfx, file: file, line: line, field: field})
	}
	if bad > maxListErrors {
		p.addErr(Error{File: file, Line: line, Field: field,
			Msg: fmt.Sprintf("%d more bad entries not shown", bad-maxListErrors)})
	}
	return into
}

// aclWarnings reports entries listed twice or inside another entry: legal,
// but usually a sign of a list that says something other than meant.
func (p *parser) aclWarnings(es []aclEntry) {
	order := make([]int, len(es))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		x, y := es[a].pfx, es[b].pfx
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(x.Bits(), y.Bits())
	})
	var stack []int // the chain of entries containing the current one
	warned := 0
	for _, i := range order {
		e := es[i]
		for len(stack) > 0 && !es[stack[len(stack)-1]].pfx.Contains(e.pfx.Addr()) {
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 {
			outer := es[stack[len(stack)-1]]
			msg := fmt.Sprintf("%s is redundant: %s (%s) contains it", e.pfx, outer.pfx, outer.where(p.file))
			if outer.pfx == e.pfx {
				msg = fmt.Sprintf("%s is listed twice (also %s)", e.pfx, outer.where(p.file))
			}
			if warned++; warned <= maxWarnings {
				p.warns = append(p.warns, Error{File: e.file, Line: e.line, Field: e.field, Msg: msg})
			}
			continue
		}
		stack = append(stack, i)
	}
	if warned > maxWarnings {
		p.warns = append(p.warns, Error{File: p.file, Line: 1, Field: "spec", Msg: fmt.Sprintf("%d more duplicate or redundant allowFrom entries not shown", warned-maxWarnings)})
	}
}

func (p *parser) maxConnections(n *yaml.Node, field string, proto Protocol) ConnCaps {
	var caps ConnCaps
	o, ok := p.mapping(n, field, "client", "total")
	if !ok {
		return caps
	}
	if proto == UDP {
		p.errAt(o.node, field, "caps count TCP connections; a udp service has none (limit packets instead)")
		return caps
	}
	if o.get("client") == nil && o.get("total") == nil {
		p.errAt(o.node, field, "empty: give client or total caps, or leave maxConnections out")
		return caps
	}
	for _, lvl := range []struct {
		key string
		c   *ConnCap
	}{{"client", &caps.Client}, {"total", &caps.Total}} {
		v := o.get(lvl.key)
		if v == nil {
			continue
		}
		lo, ok := p.mapping(v, o.field(lvl.key), "established", "halfOpen")
		if !ok {
			continue
		}
		if lo.get("established") == nil && lo.get("halfOpen") == nil {
			p.errAt(lo.node, lo.path, "empty: give established, halfOpen or both")
			continue
		}
		if x := lo.get("established"); x != nil {
			if c, ok := p.count(x, lo.field("established"), 1, MaxConnCap); ok {
				lvl.c.Established = uint32(c)
			}
		}
		if x := lo.get("halfOpen"); x != nil {
			if c, ok := p.count(x, lo.field("halfOpen"), 1, MaxConnCap); ok {
				lvl.c.HalfOpen = uint32(c)
			}
		}
		if c := *lvl.c; c.Established > 0 && c.HalfOpen > c.Established {
			p.warnAt(resolve(lo.get("halfOpen")), lo.field("halfOpen"),
				"%d is above established %d, which counts unfinished handshakes too and refuses first", c.HalfOpen, c.Established)
		}
	}
	for _, k := range []struct {
		name      string
		cl, total uint32
	}{{"established", caps.Client.Established, caps.Total.Established}, {"halfOpen", caps.Client.HalfOpen, caps.Total.HalfOpen}} {
		if k.cl > 0 && k.total > 0 && k.cl > k.total {
			p.warnAt(resolve(o.get("client")), o.field("client")+"."+k.name,
				"%d per client is above the service total %d: one client can take the whole service", k.cl, k.total)
		}
	}
	return caps
}

// connections reads spec.connections.
func (p *parser) connections(n *yaml.Node, c *Connections) {
	o, ok := p.mapping(n, "spec.connections", "establishedTimeout", "halfOpenTimeout", "closedTimeout", "whenTableFull", "provenClientTTL")
	if !ok {
		return
	}
	for _, d := range []struct {
		key    string
		v      *time.Duration
		lo, hi time.Duration
	}{
		{"establishedTimeout", &c.EstablishedTimeout, 10 * time.Second, 7 * 24 * time.Hour},
		{"halfOpenTimeout", &c.HalfOpenTimeout, time.Second, 10 * time.Minute},
		{"closedTimeout", &c.ClosedTimeout, time.Second, 10 * time.Minute},
		{"provenClientTTL", &c.ProvenClientTTL, 0, 24 * time.Hour},
	} {
		x := o.get(d.key)
		if x == nil {
			continue
		}
		dur, ok := p.duration(x, o.field(d.key))
		if !ok {
			continue
		}
		if d.lo == 0 && dur > d.hi {
			p.errAt(resolve(x), o.field(d.key), "%s is above %s (0s turns it off)", durationString(dur), durationString(d.hi))
			continue
		}
		if dur < d.lo || dur > d.hi {
			p.errAt(resolve(x), o.field(d.key), "%s is outside %s–%s", durationString(dur), durationString(d.lo), durationString(d.hi))
			continue
		}
		*d.v = dur
	}
	if x := o.get("whenTableFull"); x != nil {
		if s, ok := p.enum(x, o.field("whenTableFull"), "pass", "drop"); ok {
			c.WhenTableFull = TableFull(s)
		}
	}
}

// checkACLCapacity bounds the allowFrom entries of all services together.
func (p *parser) checkACLCapacity(svcs []Service, n *yaml.Node) {
	total := 0
	for _, s := range svcs {
		seen := map[netip.Prefix]bool{}
		for _, pfx := range s.AllowFrom {
			if !seen[pfx] {
				seen[pfx] = true
				total++
			}
		}
	}
	if total > ACLCapacity {
		p.errAt(n, "spec.services", "%d distinct allowFrom entries; the datapath holds at most %d for all services together", total, ACLCapacity)
	}
}

// loaderConns compiles a service's ACL and caps.
func (s *Service) loaderConns(ls *loader.Service) {
	ls.ACL = append([]netip.Prefix(nil), s.AllowFrom...)
	c := s.MaxConnections
	ls.MaxConns = loader.ConnLimits{
		ClientEstablished: c.Client.Established, ClientHalfOpen: c.Client.HalfOpen,
		TotalEstablished: c.Total.Established, TotalHalfOpen: c.Total.HalfOpen,
	}
}

func (c Connections) loader() loader.ConnTracking {
	return loader.ConnTracking{
		EstablishedTimeout: c.EstablishedTimeout,
		HalfOpenTimeout:    c.HalfOpenTimeout,
		ClosedTimeout:      c.ClosedTimeout,
		FailClosed:         c.WhenTableFull == Drop,
	}
}

// String is a cap in one line, for diffs: "established 50, halfOpen 10".
func (c ConnCap) String() string {
	var parts []string
	if c.Established > 0 {
		parts = append(parts, fmt.Sprintf("established %d", c.Established))
	}
	if c.HalfOpen > 0 {
		parts = append(parts, fmt.Sprintf("halfOpen %d", c.HalfOpen))
	}
	return strings.Join(parts, ", ")
}

func (d *differ) serviceConns(what string, old, new *Service) {
	d.prefixes(what+" allowFrom", old.AllowFrom, new.AllowFrom)
	d.change(what+" maxConnections client", old.MaxConnections.Client.String(), new.MaxConnections.Client.String())
	d.change(what+" maxConnections total", old.MaxConnections.Total.String(), new.MaxConnections.Total.String())
}

func (d *differ) connections(o, n Connections) {
	d.change("connections establishedTimeout", durationString(o.EstablishedTimeout), durationString(n.EstablishedTimeout))
	d.change("connections halfOpenTimeout", durationString(o.HalfOpenTimeout), durationString(n.HalfOpenTimeout))
	d.change("connections closedTimeout", durationString(o.ClosedTimeout), durationString(n.ClosedTimeout))
	d.change("connections whenTableFull", string(o.WhenTableFull), string(n.WhenTableFull))
	d.change("connections provenClientTTL", durationString(o.ProvenClientTTL), durationString(n.ProvenClientTTL))
}
