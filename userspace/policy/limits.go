package policy

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/apiguard/apiguard/userspace/safefile"
	"go.yaml.in/yaml/v3"
)

// A policy is outside input: whoever writes it must not be able to stall or
// exhaust the daemon that reads it, nor make it show files it can read. These
// limits bound the work and memory of one parse, whatever the file holds.
const (
	// MaxPolicyBytes bounds a policy file. YAML costs about a hundred times
	// its size in memory while it is decoded; long lists belong in list
	// files, which are read line by line.
	MaxPolicyBytes = 1 << 20
	// MaxPolicyNodes bounds the YAML values of a policy with every alias
	// counted in full each time it is used: a few kilobytes of nested
	// aliases otherwise stand for billions of values to check.
	MaxPolicyNodes = 100_000
	// MaxListBytes bounds the list files of one policy together (deny,
	// allow and allowFrom files): a few times what the datapath's tables can
	// hold, written one IPv6 CIDR to a line.
	MaxListBytes = 64 << 20
	// maxErrors bounds the problems reported for one policy: past it, the
	// rest are counted, not kept.
	maxErrors = 200
)

// ReadFile reads a policy file: a regular file of at most MaxPolicyBytes
// (a FIFO, a device or a file under /proc is refused, without blocking).
func ReadFile(path string) ([]byte, error) {
	data, err := safefile.Read(path, MaxPolicyBytes)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return data, nil
}

// ListReader is the readFile of Parse for a policy in dir: list file names
// are relative to it, and each must be a regular file of at most
// MaxListBytes.
func ListReader(dir string) func(string) ([]byte, error) {
	return func(p string) ([]byte, error) {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return safefile.Read(p, MaxListBytes)
	}
}

// nodeBudget counts the YAML values of doc with aliases expanded, stopping
// as soon as the count passes limit. Anchored values are counted once and
// remembered, so the walk costs the size of the document, not of its
// expansion. over is the alias (outermost, when aliases nest) whose use
// passed the limit, for the error's line.
type nodeBudget struct {
	limit int
	total int
	sizes map[*yaml.Node]int
	over  *yaml.Node
}

func (b *nodeBudget) spend(doc *yaml.Node) bool {
	b.sizes = map[*yaml.Node]int{}
	b.size(doc, nil, 0)
	return b.total <= b.limit
}

// size returns n's expanded size (capped at limit+1) and adds it to the
// total when n is not inside an alias already being counted.
func (b *nodeBudget) size(n *yaml.Node, via *yaml.Node, depth int) int {
	if n == nil || b.total > b.limit {
		return 0
	}
	if n.Kind == yaml.AliasNode {
		if via == nil {
			via = n
		}
		// yaml refuses an anchor that contains itself; depth guards anyway
		if depth > 1000 {
			b.total = b.limit + 1
			b.over = via
			return b.limit + 1
		}
		return b.size(n.Alias, via, depth+1)
	}
	if s, ok := b.sizes[n]; ok {
		b.add(s, via)
		return s
	}
	s := 1
	b.add(1, via)
	for _, c := range n.Content {
		s += b.size(c, via, depth)
		if s > b.limit {
			s = b.limit + 1
			break
		}
	}
	if n.Anchor != "" {
		b.sizes[n] = s
	}
	return s
}

// add counts s values. Inside an anchored value reached through an alias
// the whole size is added at the alias, so nothing is counted twice: only
// values reached without a remembered size are added one by one.
func (b *nodeBudget) add(s int, via *yaml.Node) {
	b.total += s
	if b.total > b.limit && b.over == nil {
		b.over = via
	}
}

// addressLike reports whether s may be quoted in an error about a list
// entry: short, and written only with the characters of addresses and CIDRs
// (hex digits, '.', ':', '/', and an interface name after '%'). Anything else
// is described, never quoted: a list file may be any file the daemon can read
// (a key, a configuration with passwords), and its lines must not reach an
// error message, a log or the control API.
func addressLike(s string) bool {
	const maxShown = 64 // an IPv6 address, a zone and a prefix length
	addr, zone, _ := strings.Cut(s, "%")
	return len(s) <= maxShown && strings.ContainsAny(addr, ".:") &&
		strings.Trim(addr, "0123456789abcdefABCDEF.:/") == "" &&
		strings.Trim(zone, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.-/") == ""
}
