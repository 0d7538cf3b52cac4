package attack

import (
	"fmt"
	"strings"
)

// Sensitive paths are matched on the path the server resolves: decoded like
// a payload (normalize), with backslashes as slashes, empty and "." segments
// dropped, ".." applied (never above the root) and Tomcat-style ";params"
// cut from each segment. /static/..%2f.%2e/%2E%65nv is /.env.
//
// A pattern is one of:
//
//	/path      the path itself or anything under it      /wp-admin, /server-status
//	*suffix    a segment that ends so                    *.bak, *.sql, *~
//	prefix*    a segment that starts so                  .* (dotfiles), .env*
//	name       a segment of that name, anywhere          wp-login.php, .git
//
// Matching ignores case. ".*" never matches .well-known (RFC 8615: the one
// dot-directory meant to be served).

// maxSegments bounds the segments of one path compared with the segment
// patterns (the first ones; a path of more is itself no API's): the cost
// of a path is at most maxSegments times the patterns.
const maxSegments = 128

// Bounds of the sensitive-path patterns a policy may give.
const (
	MaxPatterns      = 1024
	MaxPatternLength = 256
)

type pathSet struct {
	names    map[string]string // segment name → pattern
	prefixes []string          // segment prefixes (pattern without the '*')
	suffixes []string          // segment suffixes (pattern without the '*')
	roots    []string          // paths (without a trailing '/')
}

// CheckPath reports why p is not a sensitive-path pattern, or nil.
func CheckPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty pattern")
	case len(p) > MaxPatternLength:
		return fmt.Errorf("longer than %d bytes", MaxPatternLength)
	case p == "*" || p == "/":
		return fmt.Errorf("%q would match every path", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] >= 0x7f {
			return fmt.Errorf("%q: only printable ASCII without spaces (write the path as the server decodes it)", p)
		}
	}
	star := strings.Count(p, "*")
	switch {
	case strings.HasPrefix(p, "/"):
		if star > 0 {
			return fmt.Errorf("%q: a path pattern (/...) has no '*'", p)
		}
		for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
			if seg == "" || seg == "." || seg == ".." {
				return fmt.Errorf("%q: empty, . or .. segment (patterns match the resolved path)", p)
			}
		}
	case star > 1 || star == 1 && !strings.HasPrefix(p, "*") && !strings.HasSuffix(p, "*"):
		return fmt.Errorf("%q: one '*', at the start (*.bak) or the end (.env*)", p)
	case strings.Contains(p, "/"):
		return fmt.Errorf("%q: a segment pattern has no '/' (start with / for a path)", p)
	}
	return nil
}

func compilePaths(patterns []string) (*pathSet, error) {
	if len(patterns) > MaxPatterns {
		return nil, fmt.Errorf("%d sensitive-path patterns; at most %d", len(patterns), MaxPatterns)
	}
	s := &pathSet{names: map[string]string{}}
	for _, p := range patterns {
		if err := CheckPath(p); err != nil {
			return nil, fmt.Errorf("sensitive path %w", err)
		}
		l := strings.ToLower(p)
		switch {
		case strings.HasPrefix(l, "/"):
			s.roots = append(s.roots, strings.TrimRight(l, "/"))
		case strings.HasPrefix(l, "*"):
			s.suffixes = append(s.suffixes, l[1:])
		case strings.HasSuffix(l, "*"):
			s.prefixes = append(s.prefixes, l[:len(l)-1])
		default:
			s.names[l] = p
		}
	}
	return s, nil
}

// SensitivePath reports whether path (raw, without its query) is a
// sensitive path, with the pattern that matched and the resolved path
// (valid until sc is used again).
func (m *Matcher) SensitivePath(path []byte, sc *Scratch) (pattern string, resolved []byte, ok bool) {
	if m == nil || m.paths == nil || len(path) == 0 {
		return "", nil, false
	}
	path = path[:min(len(path), MaxInspect)]
	text, _ := sc.normalize(path, false)
	sc.path = resolve(sc.path[:0], text)
	p := sc.path
	s := m.paths
	for _, r := range s.roots {
		if len(p) >= len(r) && string(p[:len(r)]) == r && (len(p) == len(r) || p[len(r)] == '/') {
			return r, p, true
		}
	}
	for rest, segs := p, 0; len(rest) > 0 && segs < maxSegments; segs++ {
		rest = rest[1:] // the '/'
		end := 0
		for end < len(rest) && rest[end] != '/' {
			end++
		}
		seg := rest[:end]
		rest = rest[end:]
		if name, ok := s.names[string(seg)]; ok {
			return name, p, true
		}
		for _, x := range s.prefixes {
			if len(seg) >= len(x) && string(seg[:len(x)]) == x && !(x == "." && string(seg) == ".well-known") {
				return x + "*", p, true
			}
		}
		for _, x := range s.suffixes {
			if len(seg) > len(x) && string(seg[len(seg)-len(x):]) == x {
				return "*" + x, p, true
			}
		}
	}
	return "", p, false
}

// resolve appends the path the server resolves from text: "/" and the
// segments, ".." applied.
func resolve(dst, text []byte) []byte {
	dst = append(dst, '/')
	for i := 0; i < len(text); {
		for i < len(text) && isPathSep(text[i]) {
			i++
		}
		j := i
		for j < len(text) && !isPathSep(text[j]) {
			j++
		}
		seg := text[i:j]
		for k, c := range seg {
			if c == ';' {
				seg = seg[:k]
				break
			}
		}
		i = j
		switch string(seg) {
		case "", ".":
		case "..":
			// drop the last segment, never the root
			k := len(dst) - 1
			for k > 0 && dst[k] != '/' {
				k--
			}
			if dst = dst[:k]; len(dst) == 0 {
				dst = append(dst, '/')
			}
		default:
			if dst[len(dst)-1] != '/' {
				dst = append(dst, '/')
			}
			dst = append(dst, seg...)
		}
	}
	return dst
}
