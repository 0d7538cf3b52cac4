package attack

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The corpus (testdata/corpus, described in its README) holds attack
// payloads by class, as their authors mean them, and legitimate API
// requests, as readable text; this file turns each into the request targets
// a client sends (form encoding, every reserved byte escaped, double
// encoding, mixed case, a path segment, and the minimal escaping of a tool
// like curl as nginx logs it) and measures, per class, precision (of the
// requests called that class, how many are) and recall (of the requests of
// the class, how many are called so). Below minQuality the test fails.
const minQuality = 0.95

func readLines(t testing.TB, name string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "corpus", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if l := s.Text(); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s is empty", name)
	}
	return out
}

// escapeAll percent-encodes every byte but letters and digits.
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// minimalEscape is what a tool such as curl sends for a payload written in
// a URL by hand — only what a request line cannot hold is escaped — as
// nginx writes it in the access log (a quote as \x22, a backslash as \x5C).
func minimalEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c >= 0x7f || c == '#' || c == '&' || c == '+' || c == '?':
			fmt.Fprintf(&b, "%%%02X", c)
		case c == '"':
			b.WriteString(`\x22`)
		case c == '\\':
			b.WriteString(`\x5C`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// flipCase alternates the case of letters, as filter-evading payloads do.
func flipCase(s string) string {
	b := []byte(s)
	up := false
	for i, c := range b {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			if up {
				b[i] = c &^ 0x20
			} else {
				b[i] = c | 0x20
			}
			up = !up
		}
	}
	return string(b)
}

// attackTargets are the request targets that carry payload p.
func attackTargets(c Class, p string) []string {
	out := []string{
		"/api/items?id=" + url.QueryEscape(p),
		"/api/search?q=" + escapeAll(p) + "&page=1",
		"/api/search?page=1&q=" + escapeAll(escapeAll(p)),
		"/api/items?sort=name&id=" + url.QueryEscape(flipCase(p)),
		"/api/search?q=" + minimalEscape(p),
	}
	// an absolute file name in a path is no traversal (sensitive-files
	// looks at paths): traversal payloads go in a path when they climb
	if c != Traversal || strings.Contains(p, "..") {
		out = append(out, "/api/items/"+escapeAll(p))
	}
	return out
}

// legitTargets are the request targets of a readable legitimate request:
// path segments and query values escaped as a form, as an encoder escaping
// everything, and as a browser does (only what the URL cannot hold). In the
// readable form "%26" stands for a '&' inside a value.
func legitTargets(readable string) []string {
	path, query, _ := strings.Cut(readable, "?")
	segs := strings.Split(path, "/")
	escSegs := make([]string, len(segs))
	for i, s := range segs {
		escSegs[i] = url.PathEscape(s)
	}
	p := strings.Join(escSegs, "/")
	if query == "" {
		return []string{p}
	}
	type kv struct{ k, v string }
	var pairs []kv
	for _, pair := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(pair, "=")
		pairs = append(pairs, kv{k, strings.ReplaceAll(v, "%26", "&")})
	}
	build := func(esc func(string) string) string {
		parts := make([]string, len(pairs))
		for i, x := range pairs {
			parts[i] = esc(x.k) + "=" + esc(x.v)
		}
		return p + "?" + strings.Join(parts, "&")
	}
	browser := func(s string) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			switch c := s[i]; {
			case c <= ' ' || c >= 0x7f || strings.IndexByte("\"<>`#%&+", c) >= 0:
				fmt.Fprintf(&b, "%%%02X", c)
			default:
				b.WriteByte(c)
			}
		}
		return b.String()
	}
	return []string{build(url.QueryEscape), build(escapeAll), build(browser)}
}

type tally struct{ tp, fp, fn int }

func (t tally) precision() float64 {
	if t.tp+t.fp == 0 {
		return 1
	}
	return float64(t.tp) / float64(t.tp+t.fp)
}

func (t tally) recall() float64 {
	if t.tp+t.fn == 0 {
		return 1
	}
	return float64(t.tp) / float64(t.tp+t.fn)
}

// score counts one prediction against the truth ("" for legitimate).
func score(tallies map[string]*tally, truth, predicted string) {
	if truth == predicted {
		if truth != "" {
			tallies[truth].tp++
		}
		return
	}
	if truth != "" {
		tallies[truth].fn++
	}
	if predicted != "" {
		tallies[predicted].fp++
	}
}

func TestCorpusQuality(t *testing.T) {
	m, err := Compile(Config{Injection: true, Paths: DefaultPaths(), Agents: DefaultAgents()})
	if err != nil {
		t.Fatal(err)
	}
	var sc Scratch
	tallies := map[string]*tally{}
	for _, c := range Classes() {
		tallies[c.String()] = &tally{}
	}
	tallies["sensitive"], tallies["scanner"] = &tally{}, &tally{}
	misses := map[string][]string{}
	miss := func(key, what string) {
		if len(misses[key]) < 60 {
			misses[key] = append(misses[key], what)
		}
	}
	inject := func(target string) string {
		path, query, _ := strings.Cut(target, "?")
		return m.Injection([]byte(path), []byte(query), nil, &sc).Class.String()
	}
	counts := map[string]int{}

	// injection: every class's payloads and the legitimate requests; a
	// payload is also sent in the user agent (as it is written: a header
	// is not URL-encoded), and every legitimate user agent is inspected
	agentInject := func(ua string) string {
		return m.Injection([]byte("/"), nil, []byte(ua), &sc).Class.String()
	}
	for _, c := range Classes() {
		for _, p := range readLines(t, c.String()+".txt") {
			for _, target := range attackTargets(c, p) {
				got := inject(target)
				score(tallies, c.String(), got)
				counts[c.String()]++
				if got != c.String() {
					miss(c.String()+" missed", fmt.Sprintf("%q (%q) called %q", p, target, got))
				}
			}
			// an absolute file name in a header is no traversal either
			if c != Traversal || strings.Contains(p, "..") {
				got := agentInject(p)
				score(tallies, c.String(), got)
				counts[c.String()]++
				if got != c.String() {
					miss(c.String()+" missed", fmt.Sprintf("%q in the user agent called %q", p, got))
				}
			}
		}
	}
	for _, ua := range readLines(t, "legit-agents.txt") {
		got := agentInject(ua)
		score(tallies, "", got)
		counts["legit agents"]++
		if got != "" {
			miss(got+" false positive", fmt.Sprintf("user agent %q called %q", ua, got))
		}
	}
	legit := readLines(t, "legit-requests.txt")
	for _, r := range legit {
		for _, target := range legitTargets(r) {
			got := inject(target)
			score(tallies, "", got)
			counts["legit requests"]++
			if got != "" {
				miss(got+" false positive", fmt.Sprintf("%q called %q", target, got))
			}
		}
	}

	// sensitive files: the probes' paths, and every legitimate path as if
	// it were answered 404
	sensitive := func(target string) string {
		path, _, _ := strings.Cut(target, "?")
		if _, _, ok := m.SensitivePath([]byte(path), &sc); ok {
			return "sensitive"
		}
		return ""
	}
	for _, p := range readLines(t, "sensitive.txt") {
		got := sensitive(p)
		score(tallies, "sensitive", got)
		counts["sensitive"]++
		if got == "" {
			miss("sensitive missed", p)
		}
	}
	for _, r := range legit {
		for _, target := range legitTargets(r)[:1] {
			got := sensitive(target)
			score(tallies, "", got)
			if got != "" {
				miss("sensitive false positive", target)
			}
		}
	}

	// scanner agents
	for _, name := range []string{"scanner-agents.txt", "legit-agents.txt"} {
		truth := ""
		if name == "scanner-agents.txt" {
			truth = "scanner"
		}
		for _, ua := range readLines(t, name) {
			got := ""
			if _, ok := m.ScannerAgent([]byte(ua), &sc); ok {
				got = "scanner"
			}
			score(tallies, truth, got)
			counts[strings.TrimSuffix(name, ".txt")]++
			if got != truth {
				miss("scanner "+map[bool]string{true: "missed", false: "false positive"}[truth != ""], ua)
			}
		}
	}

	names := make([]string, 0, len(tallies))
	for k := range tallies {
		names = append(names, k)
	}
	sort.Strings(names)
	t.Logf("requests: %v", counts)
	t.Logf("%-10s %6s %6s %6s %9s %7s", "class", "TP", "FP", "FN", "precision", "recall")
	for _, k := range names {
		x := tallies[k]
		t.Logf("%-10s %6d %6d %6d %9.3f %7.3f", k, x.tp, x.fp, x.fn, x.precision(), x.recall())
	}
	keys := make([]string, 0, len(misses))
	for k := range misses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%s (first %d):\n\t%s", k, len(misses[k]), strings.Join(misses[k], "\n\t"))
	}
	for _, k := range names {
		if x := tallies[k]; x.precision() < minQuality || x.recall() < minQuality {
			t.Errorf("%s: precision %.3f, recall %.3f; want both at least %.2f", k, x.precision(), x.recall(), minQuality)
		}
	}
}
