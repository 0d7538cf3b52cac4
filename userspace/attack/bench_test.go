package attack

import (
	"strings"
	"testing"
)

// BenchmarkInspect is what the matcher costs a request: the legitimate
// corpus (every request target, with a browser's user agent) and the attack
// corpus, each request looked at for an injection, a sensitive path and a
// scanner's user agent.
func BenchmarkInspect(b *testing.B) {
	m := mustCompile(b)
	type req struct{ path, query, ua []byte }
	load := func(files ...string) []req {
		var out []req
		for _, f := range files {
			for _, l := range readLines(b, f) {
				var targets []string
				if f == "legit-requests.txt" {
					targets = legitTargets(l)
				} else {
					targets = attackTargets(SQL, l)
				}
				for _, tg := range targets {
					p, q, _ := strings.Cut(tg, "?")
					out = append(out, req{[]byte(p), []byte(q),
						[]byte("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")})
				}
			}
		}
		return out
	}
	for _, c := range []struct {
		name  string
		files []string
	}{
		{"legit", []string{"legit-requests.txt"}},
		{"attacks", []string{"sql.txt", "xss.txt", "command.txt", "traversal.txt", "template.txt"}},
	} {
		reqs := load(c.files...)
		b.Run(c.name, func(b *testing.B) {
			var sc Scratch
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r := &reqs[i%len(reqs)]
				m.Injection(r.path, r.query, r.ua, &sc)
				m.SensitivePath(r.path, &sc)
				m.ScannerAgent(r.ua, &sc)
				i++
			}
		})
	}
}

// BenchmarkHostile feeds the matcher the longest request it reads (8 KiB of
// path and query) made of what each scanner stops at, to show that the cost
// per byte stays flat: "ns/byte" beside the plain case, in the same run.
func BenchmarkHostile(b *testing.B) {
	m := mustCompile(b)
	fill := func(unit string) []byte {
		return []byte(strings.Repeat(unit, MaxInspect/len(unit)+1)[:MaxInspect-3])
	}
	for _, c := range []struct{ name, query string }{
		{"plain", "q=" + string(fill("abcdefgh"))},
		{"spaces", "q=" + string(fill("a+"))},
		{"percent-nest", "q=" + string(fill("%2525"))},
		{"quotes", "q=" + string(fill("'"))},
		{"or-calls", "q=" + string(fill("'or a((("))},
		{"tags", "q=" + string(fill("<a "))},
		{"script-urls", "q=" + string(fill("javascript:"))},
		{"separators", "q=" + string(fill(";|&"))},
		{"newlines", "q=" + string(fill("%0A+"))}, // a separator, then blanks before the next
		{"cmd-words", "q=" + string(fill(";cat "))},
		{"braces", "q=" + string(fill("{"))},
		{"dollar-braces", "q=" + string(fill("${"))},
		{"tag-braces", "q=" + string(fill("{%"))},
		{"dots", "q=" + string(fill("../"))},
		{"entities", "q=" + string(fill("&#"))},
		{"backslashes", "q=" + string(fill(`\x5C`))},
		{"pairs", string(fill("a=&"))},
	} {
		path, query := []byte("/api/x"), []byte(c.query)
		b.Run(c.name, func(b *testing.B) {
			var sc Scratch
			b.SetBytes(int64(len(path) + len(query)))
			for b.Loop() {
				m.Injection(path, query, nil, &sc)
				m.SensitivePath(query, &sc)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(path)+len(query)), "ns/byte")
		})
	}
	b.Run("agent", func(b *testing.B) {
		// no cache: a flood of distinct user agents misses it
		ua := fill("nikt")[:MaxAgent]
		b.SetBytes(int64(len(ua)))
		for b.Loop() {
			m.ScannerAgent(ua, nil)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(ua)), "ns/byte")
	})
}
