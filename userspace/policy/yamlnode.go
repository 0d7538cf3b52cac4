package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file walks yaml.Node trees by hand rather than decoding into structs:
// that is how every error keeps its line, unknown keys are caught with a
// suggestion, and one bad value does not hide the next.

func resolve(n *yaml.Node) *yaml.Node {
	// bounded: yaml refuses alias cycles, and a chain is at most the document
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 1000; i++ {
		n = n.Alias
	}
	return n
}

// describe names what a node is, for "expected X, found Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		return strconv.Quote(v)
	}
	return "something else"
}

func (p *parser) errAt(n *yaml.Node, field, format string, args ...any) {
	line := 1
	if n != nil && n.Line > 0 {
		line = n.Line
	}
	if field == "" {
		field = "document"
	}
	p.addErr(Error{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) warnAt(n *yaml.Node, field, format string, args ...any) {
	p.warns = append(p.warns, Error{File: p.file, Line: n.Line, Field: field, Msg: fmt.Sprintf(format, args...)}.clipped())
}

// object is a checked mapping: its known keys' value nodes by name.
type object struct {
	node *yaml.Node
	path string
	vals map[string]*yaml.Node
}

func (o object) get(key string) *yaml.Node { return o.vals[key] }

func (o object) field(key string) string { return join(o.path, key) }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping checks that n is a mapping with only known keys, each once, and
// reports every unknown key with the nearest known one. ok is false when n is
// not a mapping at all.
func (p *parser) mapping(n *yaml.Node, path string, known ...string) (object, bool) {
	n = resolve(n)
	o := object{node: n, path: path, vals: map[string]*yaml.Node{}}
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return o, true // "key:" with nothing after it: an empty mapping
		}
		p.errAt(n, path, "expected a mapping (key: value lines), found %s", describe(n))
		return o, false
	}
	p.collect(o, n, known, 0, map[*yaml.Node]bool{n: true})
	return o, true
}

// collect gathers n's keys into o; merged mappings are visited once each, so a
// merge that refers back to itself cannot loop or multiply.
func (p *parser) collect(o object, n *yaml.Node, known []string, depth int, seen map[*yaml.Node]bool) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errAt(k, o.path, "keys must be plain words, found %s", describe(k))
			continue
		}
		if k.Tag == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if !slicesContains(known, k.Value) {
			msg := fmt.Sprintf("unknown field %q", k.Value)
			if s := suggest(k.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else if len(known) > 0 {
				msg += " (known: " + strings.Join(known, ", ") + ")"
			}
			p.errAt(k, o.field(k.Value), "%s", msg)
			continue
		}
		if prev, dup := o.vals[k.Value]; dup && depth == 0 {
			p.errAt(k, o.field(k.Value), "set twice (first at line %d)", prev.Line)
			continue
		} else if dup {
			continue // explicit keys win over merged ones
		}
		o.vals[k.Value] = v
	}
	// "<<: *base" merges keys the mapping does not set itself
	for _, m := range merges {
		m = resolve(m)
		items := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			items = m.Content
		}
		for _, it := range items {
			it = resolve(it)
			if it.Kind != yaml.MappingNode {
				p.errAt(it, o.path, "a merge (<<) needs a mapping or a list of mappings")
				continue
			}
			if seen[it] {
				continue
			}
			seen[it] = true
			p.collect(o, it, known, depth+1, seen)
		}
	}
}

func slicesContains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the known key closest to s, if it is close enough to be a typo.
func suggest(s string, known []string) string {
	best, bestD := "", 3
	if len(s) <= 3 {
		bestD = 2
	}
	for _, k := range known {
		if strings.EqualFold(k, s) {
			return k
		}
		if d := editDistance(strings.ToLower(s), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// scalar returns n's text when n is a non-null scalar.
func (p *parser) scalar(n *yaml.Node, field, what string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errAt(n, field, "expected %s, found %s", what, describe(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) str(n *yaml.Node, field string) (string, bool) {
	return p.scalar(n, field, "a string")
}

// enum reads one of the allowed words.
func (p *parser) enum(n *yaml.Node, field string, allowed ...string) (string, bool) {
	s, ok := p.scalar(n, field, "one of "+strings.Join(allowed, ", "))
	if !ok {
		return "", false
	}
	if slicesContains(allowed, s) {
		return s, true
	}
	msg := fmt.Sprintf("%q is not one of %s", s, strings.Join(allowed, ", "))
	if g := suggest(s, allowed); g != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", g)
	}
	p.errAt(resolve(n), field, "%s", msg)
	return "", false
}

func (p *parser) boolean(n *yaml.Node, field string) (bool, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		var b bool
		if err := n.Decode(&b); err == nil {
			return b, true
		}
	}
	p.errAt(n, field, "expected true or false, found %s", describe(n))
	return false, false
}

// uint reads a whole number in [lo, hi].
func (p *parser) count(n *yaml.Node, field string, lo, hi uint64) (uint64, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		p.errAt(n, field, "expected a whole number, found %s", describe(n))
		return 0, false
	}
	v, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
	if err != nil || v < lo || v > hi {
		p.errAt(n, field, "%s is outside %d–%d", n.Value, lo, hi)
		return 0, false
	}
	return v, true
}

func (p *parser) duration(n *yaml.Node, field string) (time.Duration, bool) {
	s, ok := p.scalar(n, field, "a duration such as 30s or 10m")
	if !ok {
		return 0, false
	}
	v, err := parseDuration(s)
	if err != nil {
		p.errAt(resolve(n), field, "%v", err)
		return 0, false
	}
	return v, true
}

// list returns n's items; a single scalar counts as a list of one.
func (p *parser) list(n *yaml.Node, field string) ([]*yaml.Node, bool) {
	n = resolve(n)
	switch {
	case n.Kind == yaml.SequenceNode:
		return n.Content, true
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return nil, true
	case n.Kind == yaml.ScalarNode:
		return []*yaml.Node{n}, true
	}
	p.errAt(n, field, "expected a list, found %s", describe(n))
	return nil, false
}
