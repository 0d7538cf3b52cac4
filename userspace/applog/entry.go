// Package applog reads what an API server writes about its clients: it follows
// access logs (rotation, truncation, restarts) and parses their lines (nginx
// `combined`, or JSON lines with a field mapping) into entries the API rules
// of userspace/detect count.
//
// Parsing is hand-written and allocation-free on the hot path: an Entry's
// byte slices point into the line and are valid until the next line is read.
package applog

import (
	"errors"
	"net/netip"
	"time"
)

// Entry is one parsed request.
type Entry struct {
	// Remote is the connection's peer as logged ($remote_addr).
	Remote netip.Addr
	// Forwarded is the raw X-Forwarded-For-style value, if the format has one.
	Forwarded []byte
	Method    []byte
	// Path is the request target without its query; Query is what follows
	// its '?' (raw, still escaped).
	Path   []byte
	Query  []byte
	Status int
	// agent is the client's User-Agent header, if the format has it; a
	// combined line's is read from tail on first use (UserAgent): only the
	// matcher needs it, and only when a rule looks at user agents
	agent     []byte
	agentRead bool
	tail      []byte
	// Latency is the time the server took; 0 when the format has none.
	Latency time.Duration
	// Time is the request's time as logged ($time_local, or the JSON time
	// field's text), for ParseTime: it is parsed only for lines that may count.
	Time []byte
}

// UserAgent is the request's user agent ("-" is none).
func (e *Entry) UserAgent() []byte {
	if !e.agentRead {
		e.agentRead = true
		if f, n := quotedFields(e.tail, 2); n == 2 {
			e.agent = f[1]
		}
	}
	return e.agent
}

// Parser turns one line (without its newline) into an Entry.
type Parser interface {
	Parse(line []byte, e *Entry) error
}

// ErrMalformed wraps every parse error: the line is counted and skipped.
var ErrMalformed = errors.New("malformed line")
