package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unsafe"
)

// listKind tells allow entries from deny entries.
type listKind uint8

const (
	allowList listKind = iota
	denyList
)

func (k listKind) String() string {
	if k == allowList {
		return "allow"
	}
	return "deny"
}

// listSource is where a group of entries came from: the policy's inline list,
// or one list file.
type listSource struct {
	file   string
	field  string // spec.deny, or spec.denyFiles[2]
	inline bool   // entries are list items: their field gets an index
}

// entry is one allow or deny CIDR with where it was written, kept only while
// validating so errors about it can point at it.
type entry struct {
	pfx  netip.Prefix
	kind listKind
	src  int32 // index into parser.sources
	line int32
	idx  int32 // item index for inline entries
}

// maxListErrors bounds the errors reported for one list file: a file that is
// not a CIDR list at all should not bury everything else.
const maxListErrors = 20

// parseCIDR reads one entry: a CIDR, or a bare address meaning exactly that host.
// Host bits set, zones and IPv4-mapped IPv6 are errors: each hides a mistake.
func parseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "%") {
		return netip.Prefix{}, fmt.Errorf("%q: addresses with a zone cannot be matched", s)
	}
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR", s)
		}
		pfx = p
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a valid address or CIDR", s)
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if pfx.Addr().Is4In6() {
		v4 := netip.PrefixFrom(pfx.Addr().Unmap(), max(pfx.Bits()-96, 0))
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address, which IPv4 packets never carry; write the IPv4 form %s", s, v4)
	}
	if m := pfx.Masked(); m != pfx {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, m)
	}
	return pfx, nil
}

// parseListLine is parseCIDR for a line of a list file, which is quoted back
// in an error only when it looks like an address (addressLike): the policy
// that names a list file may name any file the daemon can read.
func parseListLine(s string) (netip.Prefix, error) {
	if !addressLike(s) {
		return netip.Prefix{}, fmt.Errorf("not an address or CIDR: a %d-byte entry with characters no address has (not quoted)", len(s))
	}
	return parseCIDR(s)
}

// listEntries parses a list file: one entry per line, '#' or ';' starts a
// comment, blank lines and surrounding space are ignored.
func (p *parser) listEntries(data []byte, kind listKind, src int32) {
	s := p.sources[src]
	// the file as a string without a copy (data is never written to, and no
	// line outlives this call: entries keep parsed prefixes), so each line
	// is a substring: a 100,000-line list costs no allocation per line, a
	// 64 MiB one no second 64 MiB
	text := strings.TrimPrefix(unsafe.String(unsafe.SliceData(data), len(data)), "\ufeff") // a byte order mark from Windows editors
	// sized for the file's lines, but never past a full table's worth: a
	// file of empty lines must not reserve what it will never fill
	p.entries = slices.Grow(p.entries, max(0, min(strings.Count(text, "\n")+1, ListCapacity, maxListEntries-p.listed)))
	bad := 0
	line := int32(0)
	for len(text) > 0 {
		if !p.countEntry(s.file, int(line+1), s.field) {
			return
		}
		line++
		var cur string
		cur, text, _ = strings.Cut(text, "\n")
		if i := strings.IndexAny(cur, "#;"); i >= 0 {
			cur = cur[:i]
		}
		cur = strings.TrimSpace(cur)
		if cur == "" {
			continue
		}
		pfx, err := parseListLine(cur)
		if err != nil {
			bad++
			if bad <= maxListErrors {
				p.addErr(Error{File: s.file, Line: int(line), Field: s.field, Msg: err.Error()})
			}
			continue
		}
		p.entries = append(p.entries, entry{pfx: pfx, kind: kind, src: src, line: line})
	}
	if bad > maxListErrors {
		p.addErr(Error{File: s.file, Line: int(line), Field: s.field,
			Msg: fmt.Sprintf("%d more bad entries not shown", bad-maxListErrors)})
	}
}

// maxListEntries is what the datapath's tables hold together (allow and deny,
// IPv4 and IPv6, and the allowFrom table). Past it a policy could never be
// applied, so reading stops there rather than keep entries to refuse later.
const maxListEntries = 4*ListCapacity + ACLCapacity

// countEntry counts one more line of a list file towards maxListEntries,
// and reports (once) the line where the policy passes it.
func (p *parser) countEntry(file string, line int, field string) bool {
	p.listed++
	if p.listed <= maxListEntries {
		return true
	}
	if p.listed == maxListEntries+1 {
		p.addErr(Error{File: file, Line: line, Field: field,
			Msg: fmt.Sprintf("the list files hold more than %d lines, more than the datapath's tables hold together; the rest is not read", maxListEntries)})
	}
	return false
}

// at is an Error pointing at e.
func (p *parser) at(e entry, msg string) Error {
	s := p.sources[e.src]
	field := s.field
	if s.inline {
		field = fmt.Sprintf("%s[%d]", s.field, e.idx)
	}
	return Error{File: s.file, Line: int(e.line), Field: field, Msg: msg}
}

// where says where e was written, for messages about another entry.
func (p *parser) where(e entry) string {
	x := p.at(e, "")
	if x.File == p.file {
		return fmt.Sprintf("%s, line %d", x.Field, x.Line)
	}
	return fmt.Sprintf("%s:%d", x.File, x.Line)
}

// maxWarnings bounds the warnings of one kind; a summary counts the rest.
const maxWarnings = 10

// checkEntries finds allow entries that make deny entries dead (the datapath
// checks allow first, so a deny inside an allow can never match), entries
// inside another entry of the same list (redundant: a warning), and lists
// too long for the datapath.
//
// It sorts all entries by first address and then by prefix length, and sweeps
// them keeping a stack of the entries that contain the current one. CIDRs
// either nest or are disjoint, so the stack is the chain of enclosing entries;
// the sweep is O(n log n) for any mix of lists and lengths.
func (p *parser) checkEntries() {
	es := p.entries
	order := make([]int32, len(es))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		x, y := &es[a], &es[b]
		if c := x.pfx.Addr().Compare(y.pfx.Addr()); c != 0 {
			return c
		}
		if c := cmp.Compare(x.pfx.Bits(), y.pfx.Bits()); c != 0 {
			return c
		}
		// allow first, so an allow equal to a deny counts as containing it
		if c := cmp.Compare(x.kind, y.kind); c != 0 {
			return c
		}
		return cmp.Compare(a, b) // file order among duplicates
	})

	type open struct {
		e           int32 // index into es
		allow, deny int32 // innermost enclosing allow/deny entry including this one, or -1
	}
	var stack []open
	var counts [2][2]int // distinct entries by list and family (0: IPv4)
	var dupWarn, nestWarn int
	for _, i := range order {
		e := es[i]
		for len(stack) > 0 && !es[stack[len(stack)-1].e].pfx.Contains(e.pfx.Addr()) {
			stack = stack[:len(stack)-1]
		}
		top := open{e: i, allow: -1, deny: -1}
		if len(stack) > 0 {
			top.allow, top.deny = stack[len(stack)-1].allow, stack[len(stack)-1].deny
		}
		same := top.deny
		if e.kind == allowList {
			same = top.allow
		}
		if e.kind == denyList && top.allow >= 0 {
			a := es[top.allow]
			p.addErr(p.at(e, fmt.Sprintf("deny %s can never match: allow %s (%s) contains it, and allow is checked first",
				e.pfx, a.pfx, p.where(a))))
		}
		switch {
		case same >= 0 && es[same].pfx == e.pfx:
			dupWarn++
			if dupWarn <= maxWarnings {
				p.warns = append(p.warns, p.at(e, fmt.Sprintf("%s %s is listed twice (also %s)", e.kind, e.pfx, p.where(es[same]))))
			}
			continue // already counted and on the stack
		case same >= 0:
			nestWarn++
			if nestWarn <= maxWarnings {
				p.warns = append(p.warns, p.at(e, fmt.Sprintf("%s %s is redundant: %s %s (%s) contains it",
					e.kind, e.pfx, e.kind, es[same].pfx, p.where(es[same]))))
			}
		}
		fam := 0
		if e.pfx.Addr().Is6() {
			fam = 1
		}
		counts[e.kind][fam]++
		if e.kind == allowList {
			top.allow = i
		} else {
			top.deny = i
		}
		stack = append(stack, top)
	}
	if dupWarn > maxWarnings {
		p.warns = append(p.warns, Error{File: p.file, Line: 1, Field: "spec", Msg: fmt.Sprintf("%d more duplicate entries not shown", dupWarn-maxWarnings)})
	}
	if nestWarn > maxWarnings {
		p.warns = append(p.warns, Error{File: p.file, Line: 1, Field: "spec", Msg: fmt.Sprintf("%d more redundant entries not shown", nestWarn-maxWarnings)})
	}
	for kind, byFam := range counts {
		for fam, n := range byFam {
			if n > ListCapacity {
				p.addErr(Error{File: p.file, Line: p.listLine[kind], Field: "spec." + listKind(kind).String(),
					Msg: fmt.Sprintf("%d distinct IPv%d entries; the datapath holds at most %d", n, 4+2*fam, ListCapacity)})
			}
		}
	}
}
