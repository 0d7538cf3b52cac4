// Package attack recognises, in what an access log keeps of a request, the
// probing that comes before an attack on an API: injection payloads in the
// path or query (SQL, cross-site scripting, shell commands, path traversal,
// server-side templates), requests for files an API never serves (dotfiles,
// VCS metadata, backups, other software's admin pages), and the user agents
// of vulnerability scanners.
//
// Every scanner is hand-written and linear in its input, with a bounded
// input: no regular expression, no backtracking, no recursion. Text is
// normalised first (normalize.go) the way a server and its framework decode
// it, so that encoding, case and look-alike characters do not hide a payload.
// The patterns look for syntax, not words: a search for "select a script" or
// "O'Reilly" is not SQL, "' or '1'='1" is.
//
// A Matcher is immutable and safe for concurrent use; each caller brings its
// own Scratch (working memory), so the hot path allocates nothing.
package attack

import (
	"bytes"
	"fmt"
	"strings"
)

// Class is an injection payload's kind.
type Class uint8

const (
	NoClass Class = iota
	SQL
	XSS
	Command
	Traversal
	Template
)

var classNames = [...]string{"", "sql", "xss", "command", "traversal", "template"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class-%d", c)
}

// Classes lists the injection classes.
func Classes() []Class { return []Class{SQL, XSS, Command, Traversal, Template} }

// ParseClass reads a class name ("sql", "xss", "command", "traversal",
// "template", or a common synonym such as "sqli"); "" is NoClass.
func ParseClass(s string) (Class, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return NoClass, nil
	case "sql", "sqli", "sql-injection":
		return SQL, nil
	case "xss", "cross-site-scripting", "script":
		return XSS, nil
	case "command", "cmd", "command-injection", "rce", "os-command":
		return Command, nil
	case "traversal", "path-traversal", "lfi", "directory-traversal":
		return Traversal, nil
	case "template", "ssti", "template-injection":
		return Template, nil
	}
	return NoClass, fmt.Errorf("unknown injection class %q (want sql, xss, command, traversal or template)", s)
}

// Bounds of what one request costs. A request line is at most a few KiB
// (nginx's large_client_header_buffers is 8k); a payload beyond these bytes
// is not seen, which an attacker could use only with a server configured for
// longer request lines than that.
const (
	// MaxInspect bounds the bytes of path and query inspected together.
	MaxInspect = 8192
	// MaxAgent bounds the bytes of a user agent inspected.
	MaxAgent = 1024
	// maxSample bounds a finding's sample.
	maxSample = 96
)

// Config says what a Matcher looks for.
type Config struct {
	// Injection turns the payload scanners on.
	Injection bool
	// Paths are the sensitive-path patterns (CheckPath); none: no path is
	// sensitive.
	Paths []string
	// Agents are the scanner user-agent patterns (CheckAgent); none: no
	// agent is a scanner.
	Agents []string
}

// Matcher recognises attacks in requests. It is immutable.
type Matcher struct {
	injection bool
	paths     *pathSet
	agents    *automaton
}

// Compile checks cfg and builds its Matcher.
func Compile(cfg Config) (*Matcher, error) {
	m := &Matcher{injection: cfg.Injection}
	var err error
	if len(cfg.Paths) > 0 {
		if m.paths, err = compilePaths(cfg.Paths); err != nil {
			return nil, err
		}
	}
	if len(cfg.Agents) > 0 {
		if m.agents, err = compileAgents(cfg.Agents); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Scratch is one caller's working memory: a Matcher is shared, a Scratch is
// not. Findings point into it until its next use. The zero value is ready.
type Scratch struct {
	a, b []byte // percent-decoding passes
	path []byte // a normalised path (sensitive paths)
	toks []token
	cmd  []byte // a command's name (command.go)
	tail int
	// names are the query's pairs, joined the values of a name given twice
	names  [][]byte
	joined []byte
	// agents caches ScannerAgent's verdicts
	agents agentCache
	// query: the piece being inspected is a query pair (not the path)
	query bool
}

// Finding is an injection payload found in a request.
type Finding struct {
	Class Class
	// Sample is the decoded text around the payload (at most 96 bytes, not
	// sanitised: see Sanitize); it points into the Scratch.
	Sample []byte
}

// Injection looks for a payload in path and query (the raw request target,
// split at '?') and in the user agent (Log4Shell's favourite place), piece
// by piece: the path, each name=value pair, the values of a name given more
// than once joined by ',' (as ASP.NET joins them: id=1' union/*&id=*/select
// is one payload to it), the user agent.
func (m *Matcher) Injection(path, query, agent []byte, sc *Scratch) Finding {
	if m == nil || !m.injection {
		return Finding{}
	}
	path = path[:min(len(path), MaxInspect)]
	if f := sc.piece(path, false); f.Class != NoClass {
		return f
	}
	query = query[:min(len(query), MaxInspect-len(path))]
	names := sc.names[:0]
	for rest := query; len(rest) > 0; {
		pair, next, _ := bytes.Cut(rest, []byte{'&'})
		if f := sc.piece(pair, true); f.Class != NoClass {
			return f
		}
		if len(names) < maxPairs {
			names = append(names, pair)
		}
		rest = next
	}
	sc.names = names
	if f := sc.pollution(names); f.Class != NoClass {
		return f
	}
	if len(agent) > 0 {
		agent = agent[:min(len(agent), MaxAgent)]
		s := sc.slot(m, agent)
		if s != nil && s.inspected && s.clean {
			return Finding{}
		}
		f := sc.piece(agent, false)
		if s != nil {
			s.inspected, s.clean = true, f.Class == NoClass
		}
		if f.Class != NoClass {
			return f
		}
	}
	return Finding{}
}

// maxPairs bounds the query pairs compared for names given twice.
const maxPairs = 32

// pollution inspects, for each name given more than once among pairs, its
// values joined by ','.
func (sc *Scratch) pollution(pairs [][]byte) Finding {
	for i, p := range pairs {
		name, _, _ := bytes.Cut(p, []byte{'='})
		first, again := true, false
		for _, q := range pairs[:i] {
			if n, _, _ := bytes.Cut(q, []byte{'='}); bytes.Equal(n, name) {
				first = false // joined when its first pair came
				break
			}
		}
		if !first {
			continue
		}
		joined := append(sc.joined[:0], name...)
		joined = append(joined, '=')
		for j, q := range pairs[i:] {
			n, v, _ := bytes.Cut(q, []byte{'='})
			if !bytes.Equal(n, name) {
				continue
			}
			if j > 0 {
				joined = append(joined, ',')
				again = true
			}
			joined = append(joined, v...)
		}
		sc.joined = joined
		if again {
			if f := sc.piece(joined, true); f.Class != NoClass {
				return f
			}
		}
	}
	return Finding{}
}

// InjectionOn reports whether m looks for payloads.
func (m *Matcher) InjectionOn() bool { return m != nil && m.injection }

// plain is the raw bytes no payload needs: a piece made only of them is
// skipped without decoding, unless it may name a file (traversal: "..", or a
// value that is an absolute path or a URL scheme).
var plain = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "-_.,~=/:@" {
		t[c] = true
	}
	return t
}()

// piece inspects one path or one query pair.
func (sc *Scratch) piece(raw []byte, query bool) Finding {
	if len(raw) == 0 {
		return Finding{}
	}
	if isPlain(raw, query) {
		return Finding{}
	}
	text, h := sc.normalize(raw, query)
	sc.query = query
	for _, s := range scanners {
		if h&s.needs == 0 {
			continue
		}
		if at := s.scan(text, h, sc); at >= 0 {
			return Finding{Class: s.class, Sample: around(text, at)}
		}
	}
	return Finding{}
}

// isPlain reports whether raw is made of plain bytes and can name no file.
func isPlain(raw []byte, query bool) bool {
	value := 0
	if query {
		value = bytes.IndexByte(raw, '=') + 1
	}
	for i, c := range raw {
		if !plain[c] {
			return false
		}
		switch c {
		case '.':
			if i+1 < len(raw) && raw[i+1] == '.' {
				return false
			}
		case ':':
			if query {
				return false
			}
		case '/':
			if query && i == value {
				return false
			}
		}
	}
	return true
}

// around is the sample of text around offset at.
func around(text []byte, at int) []byte {
	from := max(0, min(at, len(text))-maxSample/4)
	return text[from:min(len(text), from+maxSample)]
}

// A scanner finds one class's payloads in a normalised text and returns
// where (-1: none). needs are the hints one of which every payload of the
// class has. The order settles payloads that are two things at once: a
// command that reads /etc/passwd is a command, an SQL injection that runs
// xp_cmdshell is SQL.
var scanners = [...]struct {
	class Class
	needs hints
	scan  func(text []byte, h hints, sc *Scratch) int
}{
	{Template, hBrace | hAngle | hHash | hDollar | hBracket | hAt | hQuestion, scanTemplate},
	{Command, hSemi | hPipe | hAmp | hNewline | hQuote | hDollar | hBrace | hQuestion | hStar | hAngle, scanCommand},
	{SQL, hQuote | hParen | hSemi | hHash | hDash | hStar | hAt | hSpace | hPipe | hAmp | hEq | hNewline, scanSQL},
	{XSS, hAngle | hQuote | hColon | hParen | hDot, scanXSS},
	{Traversal, hDot | hSlash | hColon, scanTraversal},
}
