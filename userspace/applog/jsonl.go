package applog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/apiguard/apiguard/userspace/clientip"
)

// Fields maps an Entry's parts to the keys of a JSON log line. Client, Status
// and Time are required; Request ("GET /x?q HTTP/1.1") may stand for Method,
// Path and Query, and a Path that holds a '?' ($request_uri) for Path and
// Query. Keys are top-level; a dotted key ("http.status") walks nested objects.
type Fields struct {
	Client string `json:"client"`
	// Time is the request's time, in a form ParseTime reads.
	Time      string `json:"time"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Request   string `json:"request"`
	Status    string `json:"status"`
	Latency   string `json:"latency"`
	Forwarded string `json:"forwarded"`
	UserAgent string `json:"userAgent"`
	// Query is the query string alone ($args), when neither Request nor
	// Path carries it.
	Query string `json:"query"`
	// LatencyUnit is what a numeric latency counts: "s" (nginx's
	// $request_time, the default), "ms", "us" or "ns". A string latency is
	// a Go duration ("12ms").
	LatencyUnit string `json:"latencyUnit"`
}

// DefaultFields fit a common nginx JSON log_format (escape=json).
func DefaultFields() Fields {
	return Fields{Client: "remote_addr", Time: "time_iso8601", Request: "request", Status: "status", Latency: "request_time",
		Forwarded: "http_x_forwarded_for", UserAgent: "http_user_agent", LatencyUnit: "s"}
}

// Check reports a mapping that cannot give an Entry.
func (f Fields) Check() error {
	var errs []string
	if f.Client == "" {
		errs = append(errs, "client: a field must name the client address")
	}
	if f.Status == "" {
		errs = append(errs, "status: a field must name the status")
	}
	if f.Time == "" {
		errs = append(errs, "time: a field must name the request's time (a line is dated by it)")
	}
	if f.Path == "" && f.Request == "" {
		errs = append(errs, "path: a field must name the path (or request)")
	}
	switch f.LatencyUnit {
	case "", "s", "ms", "us", "ns":
	default:
		errs = append(errs, fmt.Sprintf("latencyUnit: %q is none of s, ms, us, ns", f.LatencyUnit))
	}
	if len(errs) > 0 {
		return fmt.Errorf("json fields: %s", strings.Join(errs, "; "))
	}
	return nil
}

// JSONLines parses one JSON object per line. It keeps the strings of the last
// line it parsed: its Entries are valid until the next Parse, like Combined's.
type JSONLines struct {
	Fields Fields
	obj    map[string]json.RawMessage
	strs   [7][]byte
	// unescaped is a line whose nginx escapes were made JSON (unescapeNginx)
	unescaped []byte
}

// NewJSONLines returns a parser for the mapping (checked).
func NewJSONLines(f Fields) (*JSONLines, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	if f.LatencyUnit == "" {
		f.LatencyUnit = "s"
	}
	return &JSONLines{Fields: f}, nil
}

// Parse implements Parser.
func (p *JSONLines) Parse(line []byte, e *Entry) error {
	*e = Entry{}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return malformed("not a JSON object")
	}
	clear(p.obj)
	if p.obj == nil {
		p.obj = map[string]json.RawMessage{}
	}
	err := json.Unmarshal(line, &p.obj)
	if err != nil && bytes.Contains(line, []byte(`\x`)) {
		// a log_format without escape=json: try again with nginx's escapes
		// made JSON's
		clear(p.obj)
		p.unescaped = unescapeNginx(p.unescaped[:0], line)
		err = json.Unmarshal(p.unescaped, &p.obj)
	}
	if err != nil {
		// encoding/json's message quotes the line; only the position is kept
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return malformed(fmt.Sprintf("not valid JSON (at byte %d)", se.Offset))
		}
		return malformed("not a JSON object of fields")
	}
	f := &p.Fields
	client, ok, err := p.str(f.Client, 0)
	if err != nil || !ok {
		return malformed("no client field " + strconv.Quote(f.Client))
	}
	addr, ok := clientip.ParseAddr(client)
	if !ok {
		return errBadRemote
	}
	e.Remote = addr
	if e.Status, err = p.status(); err != nil {
		return err
	}
	if e.Time, err = p.time(); err != nil {
		return err
	}
	if f.Request != "" {
		if r, ok, err := p.str(f.Request, 1); err != nil {
			return err
		} else if ok {
			splitRequest(r, e)
		}
	}
	if f.Method != "" {
		if m, ok, err := p.str(f.Method, 2); err != nil {
			return err
		} else if ok {
			e.Method = m
		}
	}
	if f.Path != "" {
		if v, ok, err := p.str(f.Path, 3); err != nil {
			return err
		} else if ok {
			path, query := splitTarget(v)
			e.Path = path
			if query != nil {
				e.Query = query
			}
		}
	}
	if f.Query != "" {
		if v, ok, err := p.str(f.Query, 5); err != nil {
			return err
		} else if ok && !(len(v) == 1 && v[0] == '-') {
			e.Query = v
		}
	}
	if f.UserAgent != "" {
		if v, ok, err := p.str(f.UserAgent, 6); err != nil {
			return err
		} else if ok && !(len(v) == 1 && v[0] == '-') {
			e.agent = v
		}
	}
	e.agentRead = true
	if f.Forwarded != "" {
		// the forwarded value may share slot 0 with the client: the client
		// address is parsed already
		if v, ok, err := p.str(f.Forwarded, 0); err != nil {
			return err
		} else if ok && !(len(v) == 1 && v[0] == '-') {
			e.Forwarded = v
		}
	}
	if f.Latency != "" {
		if e.Latency, err = p.latency(); err != nil {
			return err
		}
	}
	return nil
}

// unescapeNginx appends line to dst with nginx's default log escapes made
// JSON: a log_format written as JSON but without escape=json gets a client's
// quote as \x22, its backslash as \x5C and bytes outside printable ASCII
// as \xHH, which JSON has no escape for, so that a client could make every
// line of its own unreadable with one quote in its user agent. An ASCII
// \xHH becomes \u00HH (a quote stays inside its string: no field of the
// client's), a higher one the byte itself (UTF-8 written byte by byte).
// JSON's own escapes are copied whole: "\\x22" is a backslash and "x22".
func unescapeNginx(dst, line []byte) []byte {
	const hexDigits = "0123456789abcdef"
	for i := 0; i < len(line); i++ {
		c := line[i]
		if c != '\\' || i+1 == len(line) {
			dst = append(dst, c)
			continue
		}
		if line[i+1] == 'x' && i+3 < len(line) {
			hi, ok1 := unhex(line[i+2])
			lo, ok2 := unhex(line[i+3])
			if ok1 && ok2 {
				if v := hi<<4 | lo; v < 0x80 {
					dst = append(dst, '\\', 'u', '0', '0', hexDigits[hi], hexDigits[lo])
				} else {
					dst = append(dst, v)
				}
				i += 3
				continue
			}
		}
		dst = append(dst, c, line[i+1])
		i++
	}
	return dst
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c|0x20 >= 'a' && c|0x20 <= 'f':
		return (c | 0x20) - 'a' + 10, true
	}
	return 0, false
}

// lookup finds a (possibly dotted) key.
func (p *JSONLines) lookup(key string) (json.RawMessage, bool, error) {
	if v, ok := p.obj[key]; ok {
		return v, true, nil
	}
	head, rest, dotted := strings.Cut(key, ".")
	if !dotted {
		return nil, false, nil
	}
	v, ok := p.obj[head]
	for ok {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, false, fmt.Errorf("%w: field %q is not an object", ErrMalformed, head)
		}
		if v, ok = m[rest]; ok {
			return v, true, nil
		}
		head, rest, dotted = strings.Cut(rest, ".")
		if !dotted {
			return nil, false, nil
		}
		v, ok = m[head]
	}
	return nil, false, nil
}

func (p *JSONLines) str(key string, slot int) ([]byte, bool, error) {
	raw, ok, err := p.lookup(key)
	if err != nil || !ok || string(raw) == "null" {
		return nil, false, err
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, false, fmt.Errorf("%w: field %q is not a string", ErrMalformed, key)
	}
	p.strs[slot] = append(p.strs[slot][:0], s...)
	return p.strs[slot], true, nil
}

// time finds the time field's text; it is parsed later, and only for lines
// that may count. A JSON string is unquoted (a number is kept as it is).
func (p *JSONLines) time() ([]byte, error) {
	key := p.Fields.Time
	raw, ok, err := p.lookup(key)
	if err != nil {
		return nil, err
	}
	if !ok || string(raw) == "null" {
		return nil, malformed("no time field " + strconv.Quote(key))
	}
	if raw[0] != '"' {
		return raw, nil
	}
	if string(raw) == `""` {
		return nil, malformed("empty time field " + strconv.Quote(key))
	}
	if bytes.IndexByte(raw, '\\') < 0 && len(raw) >= 2 && raw[len(raw)-1] == '"' {
		return raw[1 : len(raw)-1], nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%w: time field %q is not a string", ErrMalformed, key)
	}
	p.strs[4] = append(p.strs[4][:0], s...)
	return p.strs[4], nil
}

func (p *JSONLines) status() (int, error) {
	key := p.Fields.Status
	raw, ok, err := p.lookup(key)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, malformed("no status field " + strconv.Quote(key))
	}
	s := string(bytes.Trim(raw, `"`))
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 999 {
		return 0, malformed("status is not an HTTP status")
	}
	return n, nil
}

func (p *JSONLines) latency() (time.Duration, error) {
	key := p.Fields.Latency
	raw, ok, err := p.lookup(key)
	if err != nil || !ok || string(raw) == "null" {
		return 0, err
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, malformed("latency is not a JSON string")
		}
		if d, err := time.ParseDuration(s); err == nil {
			return d, nil
		}
		raw = []byte(s) // nginx writes $request_time as a number in a string
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, malformed("latency is not a duration")
	}
	unit := map[string]float64{"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1}[p.Fields.LatencyUnit]
	if v*unit > math.MaxInt64 {
		return 0, malformed("latency is too long")
	}
	return time.Duration(v * unit), nil
}
