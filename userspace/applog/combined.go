package applog

import (
	"bytes"
	"fmt"

	"github.com/apiguard/apiguard/userspace/clientip"
)

// Combined parses nginx's `combined` log format:
//
//	$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
//
// The referer and the user agent may be missing (the `common` format); the
// user agent is kept. With Forwarded set, the line carries one more quoted
// field, as nginx's sample `main` format does: "$http_x_forwarded_for".
// nginx escapes a quote
// inside a field as \x22 and a backslash as \x5C, Apache a quote as \": a
// quote preceded by an odd number of backslashes is inside its field, so that
// a client cannot shift the fields (and write the forwarded one) with quotes
// in its request or user agent. The time is kept as text (Entry.Time): only
// lines that may count need it parsed.
type Combined struct {
	Forwarded bool
}

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

var (
	errNoRemote  = malformed("no client address")
	errBadRemote = malformed("client address does not parse")
	errNoTime    = malformed("no [time]")
	errNoRequest = malformed(`no "request"`)
	errNoStatus  = malformed("no 3-digit status")
	errNoBytes   = malformed("no body bytes")
	errNoXFF     = malformed(`no "forwarded-for" field after the user agent`)
)

// Parse implements Parser.
func (c Combined) Parse(line []byte, e *Entry) error {
	*e = Entry{}
	i := bytes.IndexByte(line, ' ')
	if i <= 0 {
		return errNoRemote
	}
	addr, ok := clientip.ParseAddr(line[:i])
	if !ok {
		return errBadRemote
	}
	e.Remote = addr
	// " - $remote_user [$time_local] "$request"". The user is the client's
	// to write (a Basic authorization header's user name) and may hold " ["
	// and "]", but never a quote, which nginx and Apache escape; the time
	// holds neither bracket. So the time ends at the first `] "`, and starts
	// at the last " [" before it: a user name cannot move it, nor get the
	// line skipped for a time that does not parse.
	rest := line[i:]
	end := bytes.Index(rest, []byte(`] "`))
	if end < 0 {
		return errNoTime
	}
	j := bytes.LastIndex(rest[:end], []byte(" ["))
	if j < 0 {
		return errNoTime
	}
	e.Time = rest[j+2 : end]
	rest = rest[end+3:]
	j = closeQuote(rest)
	if j < 0 {
		return errNoRequest
	}
	splitRequest(rest[:j], e)
	rest = rest[j+1:]
	// " 404 "
	if len(rest) < 5 || rest[0] != ' ' || rest[4] != ' ' {
		return errNoStatus
	}
	s0, s1, s2 := rest[1]-'0', rest[2]-'0', rest[3]-'0'
	if s0 > 9 || s1 > 9 || s2 > 9 {
		return errNoStatus
	}
	e.Status = int(s0)*100 + int(s1)*10 + int(s2)
	rest = rest[5:]
	j = 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	if j == 0 && !(len(rest) > 0 && rest[0] == '-') {
		return errNoBytes
	}
	// "$http_referer" "$http_user_agent", and the forwarded-for field after
	// them; without that one, they are read when asked for (Entry.UserAgent)
	rest = rest[j:]
	if !c.Forwarded {
		e.tail = rest
		return nil
	}
	f, n := quotedFields(rest, 3)
	if n < 3 {
		return errNoXFF
	}
	e.agent, e.Forwarded, e.agentRead = f[1], f[2], true
	return nil
}

// quotedFields reads up to want quoted fields from b (what follows a
// combined line's body bytes), "-" read as empty, and says how many it found.
func quotedFields(b []byte, want int) (f [3][]byte, n int) {
	for n < want {
		// nginx separates the fields with one space: look no further
		if len(b) >= 2 && b[0] == ' ' && b[1] == '"' {
			b = b[2:]
		} else if k := bytes.IndexByte(b, '"'); k >= 0 {
			b = b[k+1:]
		} else {
			return f, n
		}
		k := closeQuote(b)
		if k < 0 {
			return f, n
		}
		if v := b[:k]; !(len(v) == 1 && v[0] == '-') {
			f[n] = v
		}
		n++
		b = b[k+1:]
	}
	return f, n
}

// closeQuote finds the quote that ends a field, b being what follows its
// opening quote: the first one not escaped by a backslash. Small enough to be
// inlined: nginx never writes a backslash before a quote.
func closeQuote(b []byte) int {
	k := bytes.IndexByte(b, '"')
	if k > 0 && b[k-1] == '\\' {
		return closeEscapedQuote(b, k)
	}
	return k
}

// closeEscapedQuote goes on from a quote at k that may be escaped: a quote
// preceded by an odd number of backslashes is inside the field.
func closeEscapedQuote(b []byte, k int) int {
	for {
		n := 0
		for j := k - 1; j >= 0 && b[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return k
		}
		next := bytes.IndexByte(b[k+1:], '"')
		if next < 0 {
			return -1
		}
		k += 1 + next
	}
}

// splitRequest takes "GET /path?q HTTP/1.1". A request nginx could not parse
// (a TLS handshake on a plain port, "-") leaves Method and Path empty: the
// line is still a client's request and its status (400) counts.
//
// nginx serves "GET   /.env  HTTP/1.1" (spaces before and after the target
// are skipped) and logs the line as the client sent it: the target is the
// first word after the method, however many spaces come first. A target
// that is nothing but spaces would otherwise hide the path and query from
// every rule.
func splitRequest(r []byte, e *Entry) {
	sp := bytes.IndexByte(r, ' ')
	if sp <= 0 {
		return
	}
	e.Method = r[:sp]
	target := bytes.TrimLeft(r[sp+1:], " ")
	if k := bytes.IndexByte(target, ' '); k >= 0 {
		target = target[:k]
	}
	e.Path, e.Query = splitTarget(target)
}

// splitTarget cuts a request target at its '?', and an absolute one
// (RFC 9112's absolute-form, "http://host/server-status", which nginx
// serves as /server-status and logs as sent) to its path: rules match paths
// from the root, and login paths, templates and sensitive paths would
// otherwise miss it.
func splitTarget(target []byte) (path, query []byte) {
	if k := bytes.IndexByte(target, '?'); k >= 0 {
		path, query = target[:k], target[k+1:]
	} else {
		path = target
	}
	return originPath(path), query
}

// root is the path of an absolute target that names none ("http://host?q").
var root = []byte{'/'}

// originPath is the path of an absolute-form target without its query
// (scheme://authority/path), or path itself when it is not one.
func originPath(path []byte) []byte {
	if len(path) == 0 || path[0] == '/' {
		return path
	}
	i := bytes.Index(path, []byte("://"))
	if i <= 0 || !isScheme(path[:i]) {
		return path
	}
	rest := path[i+3:]
	if k := bytes.IndexByte(rest, '/'); k >= 0 {
		return rest[k:]
	}
	return root
}

// isScheme reports whether b is a URI scheme: a letter, then letters,
// digits, '+', '-' and '.' (RFC 3986).
func isScheme(b []byte) bool {
	for i, c := range b {
		letter := c|0x20 >= 'a' && c|0x20 <= 'z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}
