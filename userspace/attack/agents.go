package attack

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"strings"
)

// Scanner user agents are found with an Aho-Corasick automaton compiled to a
// table (one lookup per byte, whatever the patterns), over the user agent
// with ASCII case folded. A pattern matches a whole word (or words): "nmap"
// matches "Nmap Scripting Engine" and "(compatible; Nmap", not "unmapped" or
// "Nmapper"; a pattern that starts or ends with punctuation ("(hydra)",
// "vega/") needs no boundary on that side.
// Only scanners that announce themselves are caught: one that sends a
// browser's user agent is caught by what it sends instead (injection-probe,
// sensitive-files).

// Bounds of the scanner patterns a policy may give: the automaton has at
// most MaxAgents*MaxAgentLength states.
const (
	MaxAgents      = 256
	MaxAgentLength = 64
)

type automaton struct {
	patterns []string // as given
	lens     []int
	cls      [256]uint8 // byte → column
	ncls     int
	// delta is the table of moves, a row of ncls per state: the next
	// state's row offset (state*ncls), with finalBit set when a pattern ends
	// in that state: one load and one test per byte
	delta []uint32
	out   [][]int32 // by state: the patterns ending there
}

const finalBit = 1 << 31

// CheckAgent reports why a is not a scanner pattern, or nil.
func CheckAgent(a string) error {
	switch {
	case strings.TrimSpace(a) == "":
		return fmt.Errorf("empty pattern")
	case len(a) > MaxAgentLength:
		return fmt.Errorf("%q is longer than %d bytes", a, MaxAgentLength)
	case len(strings.TrimSpace(a)) < 3:
		return fmt.Errorf("%q: shorter than 3 characters, it would match ordinary user agents", a)
	}
	for i := 0; i < len(a); i++ {
		if a[i] < ' ' || a[i] >= 0x7f {
			return fmt.Errorf("%q: only printable ASCII", a)
		}
	}
	return nil
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func compileAgents(patterns []string) (*automaton, error) {
	if len(patterns) > MaxAgents {
		return nil, fmt.Errorf("%d scanner agents; at most %d", len(patterns), MaxAgents)
	}
	a := &automaton{ncls: 1}
	for _, p := range patterns {
		if err := CheckAgent(p); err != nil {
			return nil, fmt.Errorf("scanner agent %w", err)
		}
		for i := 0; i < len(p); i++ {
			c := lowerASCII(p[i])
			if a.cls[c] == 0 {
				a.cls[c] = uint8(a.ncls)
				a.ncls++
			}
		}
	}
	for c := 'A'; c <= 'Z'; c++ {
		a.cls[c] = a.cls[c+'a'-'A']
	}
	// the trie, with -1 for no edge
	type node struct{ next []int32 }
	nodes := []node{{next: newEdges(a.ncls)}}
	var outs [][]int32
	outs = append(outs, nil)
	for id, p := range patterns {
		s := int32(0)
		for i := 0; i < len(p); i++ {
			col := a.cls[lowerASCII(p[i])]
			if nodes[s].next[col] < 0 {
				nodes[s].next[col] = int32(len(nodes))
				nodes = append(nodes, node{next: newEdges(a.ncls)})
				outs = append(outs, nil)
			}
			s = nodes[s].next[col]
		}
		outs[s] = append(outs[s], int32(id))
		a.patterns = append(a.patterns, p)
		a.lens = append(a.lens, len(p))
	}
	if len(nodes) > 1<<16 {
		return nil, fmt.Errorf("scanner agents: %d automaton states, more than 65536", len(nodes))
	}
	// breadth first: each state's failure link and its full row of moves
	fail := make([]int32, len(nodes))
	moves := make([]uint16, len(nodes)*a.ncls)
	queue := make([]int32, 0, len(nodes))
	for col := 0; col < a.ncls; col++ {
		if t := nodes[0].next[col]; t >= 0 {
			moves[col] = uint16(t)
			queue = append(queue, t)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		outs[s] = append(outs[s], outs[fail[s]]...)
		for col := 0; col < a.ncls; col++ {
			f := moves[int(fail[s])*a.ncls+col]
			if t := nodes[s].next[col]; t >= 0 {
				fail[t] = int32(f)
				moves[int(s)*a.ncls+col] = uint16(t)
				queue = append(queue, t)
			} else {
				moves[int(s)*a.ncls+col] = f
			}
		}
	}
	a.delta = make([]uint32, len(moves))
	for i, t := range moves {
		a.delta[i] = uint32(t) * uint32(a.ncls)
		if len(outs[t]) > 0 {
			a.delta[i] |= finalBit
		}
	}
	a.out = outs
	return a, nil
}

func newEdges(n int) []int32 {
	e := make([]int32, n)
	for i := range e {
		e[i] = -1
	}
	return e
}

// agentCache remembers the verdicts on the user agents seen last (whether
// each is a scanner's, whether it carries a payload): an access log repeats
// a few of them on most lines, and hashing and comparing one costs a
// fraction of running it through the automaton (each of whose steps waits
// for the last) and the payload scanners. Direct-mapped: a flood of
// distinct user agents only misses, at the uncached cost.
type agentCache struct {
	m     *Matcher
	seed  maphash.Seed
	slots [agentSlots]agentSlot
}

const (
	agentSlots = 128
	// maxCachedAgent: longer user agents are rare, and not kept
	maxCachedAgent = 256
)

type agentSlot struct {
	ua []byte
	// scanned: pattern and scanner hold ScannerAgent's verdict; inspected:
	// clean holds whether Injection found no payload in it
	scanned, scanner, inspected, clean bool
	pattern                            string
}

// slot is ua's cache slot for m, emptied when it held another user agent;
// nil when ua is not cached (no Scratch, too long).
func (sc *Scratch) slot(m *Matcher, ua []byte) *agentSlot {
	if sc == nil || len(ua) > maxCachedAgent {
		return nil
	}
	c := &sc.agents
	if c.m != m {
		*c = agentCache{m: m, seed: maphash.MakeSeed()}
	}
	s := &c.slots[maphash.Bytes(c.seed, ua)%agentSlots]
	if s.ua == nil || !bytes.Equal(s.ua, ua) {
		*s = agentSlot{ua: append(s.ua[:0], ua...)}
	}
	return s
}

// ScannerAgent reports whether the user agent ua is a scanner's, and the
// pattern that matched. sc may be nil (no cache).
func (m *Matcher) ScannerAgent(ua []byte, sc *Scratch) (string, bool) {
	if m == nil || m.agents == nil {
		return "", false
	}
	ua = ua[:min(len(ua), MaxAgent)]
	s := sc.slot(m, ua)
	if s == nil {
		return m.agents.match(ua)
	}
	if !s.scanned {
		s.pattern, s.scanner = m.agents.match(ua)
		s.scanned = true
	}
	return s.pattern, s.scanner
}

func (a *automaton) match(ua []byte) (string, bool) {
	row := uint32(0)
	for i := 0; i < len(ua); i++ {
		e := a.delta[row+uint32(a.cls[ua[i]])]
		row = e &^ finalBit
		if e&finalBit == 0 {
			continue
		}
		for _, id := range a.out[row/uint32(a.ncls)] {
			p := a.patterns[id]
			start := i + 1 - a.lens[id]
			if (start == 0 || !isAlnum(lowerASCII(ua[start-1])) || !isAlnum(lowerASCII(p[0]))) &&
				(i+1 == len(ua) || !isAlnum(lowerASCII(ua[i+1])) || !isAlnum(lowerASCII(p[len(p)-1]))) {
				return p, true
			}
		}
	}
	return "", false
}

// AgentsOn reports whether m looks at user agents.
func (m *Matcher) AgentsOn() bool { return m != nil && m.agents != nil }
