package attack

import "bytes"

// Template injection asks the server's template engine to evaluate
// something: {{7*7}}, ${7*7}, <%= 7*7 %>, #{...}, {% ... %}, Velocity's
// #set(...), FreeMarker's <#assign ...>, and JNDI lookups (${jndi:ldap://..},
// which Log4j evaluates). A placeholder a client forgot to fill in
// ({{userId}}, ${user.name}, Postman's {{$guid}}) is left alone: only an
// expression counts — arithmetic, a call, an index, a filter, a string, a
// dunder, or one of the objects payloads reach for.

// maxExpr bounds how far an expression is read.
const maxExpr = 256

// templateNames are the objects and functions template payloads reach for.
var templateNames = map[string]bool{
	"config": true, "self": true, "request": true, "settings": true, "lipsum": true, "cycler": true, "joiner": true,
	"namespace": true, "url_for": true, "get_flashed_messages": true, "_self": true, "constructor": true,
	"class": true, "mro": true, "subclasses": true, "globals": true, "builtins": true, "import": true, "popen": true,
	"system": true, "exec": true, "eval": true, "runtime": true, "getruntime": true, "getclass": true, "forname": true,
	"processbuilder": true, "jndi": true, "getattr": true, "subprocess": true,
}

// lookups are Log4j's lookup prefixes (${prefix:...}): a request that
// carries one asks the logger to evaluate it.
var lookups = map[string]bool{
	"jndi": true, "env": true, "sys": true, "lower": true, "upper": true, "java": true, "base64": true, "ctx": true,
	"date": true, "main": true, "docker": true, "k8s": true, "spring": true, "bundle": true, "marker": true,
	"log4j": true, "sd": true, "web": true, "event": true, "map": true, "jvmrunargs": true,
}

// scanTemplate reads the text once. An opener ({{ ${ #{ *{ @{ %{ ~{ @( {%)
// is remembered until the next '}' (or maxExpr bytes); an expression
// feature met meanwhile makes it a payload. So "{{{{{{..." costs one pass,
// not one expression read per brace.
func scanTemplate(text []byte, _ hints, _ *Scratch) int {
	n := len(text)
	open, tag := -1, -1 // the latest opener, the latest {% since a '}'
	for i := 0; i < n; i++ {
		c := text[i]
		var d byte
		if i+1 < n {
			d = text[i+1]
		}
		if open >= 0 && i-open > maxExpr {
			open = -1
		}
		if tag >= 0 && i-tag > maxExpr {
			tag = -1
		}
		switch {
		case c == '}':
			if tag >= 0 && i > 0 && text[i-1] == '%' && i-1 > tag+1 {
				return tag // {% ... %}: Jinja, Twig, Django tags
			}
			open = -1
			continue
		case c == '{' && d == '{':
			// {{=7*7}}, {{#with ...}}, {{!...}}
			if k := skipSpaces(text, i+2); k < n && (text[k] == '=' || text[k] == '#' || text[k] == '!') {
				return i
			}
			open = i
			i++
			continue
		case d == '{' && (c == '$' || c == '#' || c == '*' || c == '@' || c == '%' || c == '~'):
			if k := skipSpaces(text, i+2); k < n && (text[k] == '=' || text[k] == '!') {
				return i
			}
			open = i
			i++
			continue
		case c == '@' && d == '(':
			open = i // Razor
			i++
			continue
		case c == '{' && d == '%':
			tag = i
			i++
			continue
		case c == '<' && d == '%':
			if i+2 < n && (text[i+2] == '=' || text[i+2] == '-' || text[i+2] == ' ' || text[i+2] == '@' || isLetter(text[i+2])) {
				return i // ERB, JSP, ASP
			}
		case c == '<' && d == '#' && i+2 < n && isLetter(text[i+2]):
			return i // FreeMarker directives
		case c == '#' && isLetter(d):
			// Velocity: #set(, #foreach(, #evaluate(
			j := i + 1
			for j < n && isLetter(text[j]) && j-i < 12 {
				j++
			}
			switch string(text[i+1 : j]) {
			case "set", "foreach", "evaluate", "define", "macro", "parse", "include":
				if j < n && text[j] == '(' {
					return i
				}
			}
		case c == '{' && (bytes.HasPrefix(text[i:], []byte("{php}")) || bytes.HasPrefix(text[i:], []byte("{$smarty"))):
			return i // Smarty
		case c == '$' && bytes.HasPrefix(text[i:], []byte("$class.")):
			return i // Velocity's ClassTool
		case c == '?' && bytes.HasPrefix(text[i:], []byte("?new(")):
			return i // FreeMarker's ?new()
		}
		if open < 0 {
			continue
		}
		if end := feature(text, i, open); end < 0 {
			return open
		} else {
			i = end - 1
		}
	}
	return -1
}

func skipSpaces(b []byte, i int) int {
	for i < len(b) && b[i] == ' ' {
		i++
	}
	return i
}

// feature looks at text[i] inside an expression opened at open: -1 when it
// is what payloads write (a call, an index, a filter, a string, a comment
// mark, a dunder, arithmetic, a name payloads reach for, a Log4j lookup);
// otherwise where to go on from.
func feature(b []byte, i, open int) int {
	c := b[i]
	n := len(b)
	switch {
	case c == '(' || c == '[' || c == '|' || c == '\'' || c == '"' || c == '`' || c == '#' && i > open+1:
		return -1
	case c == ':' && i+1 < n && b[i+1] == '-':
		return -1 // ${::-j}
	case c == '_' && i+1 < n && b[i+1] == '_':
		return -1 // __class__
	case c >= '0' && c <= '9':
		// arithmetic: 7*7, 7+'7'
		j := i + 1
		for j < n && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		k := skipSpaces(b, j)
		if k < n && (b[k] == '*' || b[k] == '+' || b[k] == '-' || b[k] == '/' || b[k] == '%') {
			return -1
		}
		return j
	case isLetter(c):
		j := i + 1
		for j < n && (isAlnum(b[j]) || b[j] == '_') {
			j++
		}
		if i > 0 && (isAlnum(b[i-1]) || b[i-1] == '_') {
			return j
		}
		word := string(b[i:j])
		if templateNames[word] || j < n && b[j] == ':' && lookups[word] {
			return -1
		}
		return j
	}
	return i + 1
}
