package detect

import (
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/apiguard/apiguard/userspace/attack"
)

// Signal is one thing the API layer knows about a client: an answered request
// (from an access log) or a report the application made on the control socket.
// The API rules count them per client key, like the packet rules count
// kernel events, and raise flags through the same flag → ban flow. One
// request may count for several rules: a scanner's 404 for /.env counts for
// sensitive-files and scanner-agent.
type Signal struct {
	Client netip.Addr
	// At is CLOCK_MONOTONIC ns (the kernel events' clock); 0 means now.
	At int64
	// Age is how old the evidence was when it was read (an access log line
	// is dated by its own time): a signal older than a rule's window does
	// not count for that rule.
	Age time.Duration

	// A request: its path (without the query), its raw query (without the
	// '?'), its user agent and the status answered.
	Method    string
	Path      string
	Query     string
	UserAgent string
	Status    int

	// A report names the rule it counts for (Status is then ignored) and a
	// weight (0 counts as 1): "5 failed logins" is one report of weight 5.
	// An injection report may name the payload's class; its Path is the
	// request's target (the query may follow a '?').
	Report Reason
	Weight uint32
	Class  attack.Class
}

// AuthFailuresRule fires after more than Failures 401 answers on a login path,
// or reported failed logins, within Window. LoginPaths are path prefixes; an
// empty list counts every 401 (guessing tokens is guessing credentials).
type AuthFailuresRule struct {
	Rule
	Failures   uint64
	LoginPaths []string
}

// EnumerationRule fires when more than Objects distinct object paths were
// answered 403 or 404 within Window. An object path matches one of Templates
// ("/items/{id}": a {name} segment matches any one segment) or, with Learn,
// has a segment that looks like an identifier (all digits, a UUID, or 16+ hex
// digits), which is how templates are learned without configuration.
type EnumerationRule struct {
	Rule
	Objects   uint64
	Templates []string
	Learn     bool
}

// CountRule fires after more than Responses matching answers within Window
// (app-throttled: 429; error-burst: 5xx).
type CountRule struct {
	Rule
	Responses uint64
}

// InjectionRule fires after more than Requests requests whose path or query
// carries an injection payload (userspace/attack: SQL, XSS, command,
// traversal, template), whatever the answer, or reported injection
// attempts, within Window.
type InjectionRule struct {
	Rule
	Requests uint64
}

// SensitiveFilesRule fires after more than Requests requests for sensitive
// paths answered 4xx (refused or missing; 429 is throttling) within Window.
// Paths are patterns (attack.CheckPath) added to attack.DefaultPaths when
// Defaults, or alone.
type SensitiveFilesRule struct {
	Rule
	Requests uint64
	Paths    []string
	Defaults bool
}

// ScannerAgentRule flags a client at its first request with a scanner's
// user agent and takes the rule's action (a ban) once more than Requests
// came within Window: one request may be a stray tool, a scan is many.
// Agents are patterns (attack.CheckAgent) added to attack.DefaultAgents
// when Defaults, or alone.
type ScannerAgentRule struct {
	Rule
	Requests uint64
	Agents   []string
	Defaults bool
}

// APIRules are the API-layer rules.
type APIRules struct {
	AuthFailures   AuthFailuresRule
	Enumeration    EnumerationRule
	AppThrottled   CountRule
	ErrorBurst     CountRule
	InjectionProbe InjectionRule
	SensitiveFiles SensitiveFilesRule
	ScannerAgent   ScannerAgentRule
	// MaxClients bounds the clients tracked by these rules.
	MaxClients int
}

// DefaultAPIRules are the policy's defaults for the API rules. A person mistyping
// a password does it a handful of times; credential stuffing does it hundreds
// of times a minute. A browsing client meets a few 404s; walking /items/1…N
// meets hundreds. 429s mean the application already refuses the client: a
// hundred in a minute is a client ignoring it. 5xx may well be the server's
// fault, so error-burst only flags. No client of an API sends injection
// payloads, asks for /.git/config or announces itself as sqlmap: a handful
// is a probe (a person trying a form by hand sends a few), a scan sends
// hundreds; a scanner's user agent flags at once.
func DefaultAPIRules() APIRules {
	minute := time.Minute
	return APIRules{
		AuthFailures:   AuthFailuresRule{Rule: Rule{Enabled: true, Action: ActionBan, Window: minute}, Failures: 20},
		Enumeration:    EnumerationRule{Rule: Rule{Enabled: true, Action: ActionBan, Window: minute}, Objects: 50, Learn: true},
		AppThrottled:   CountRule{Rule: Rule{Enabled: true, Action: ActionBan, Window: minute}, Responses: 100},
		ErrorBurst:     CountRule{Rule: Rule{Enabled: true, Action: ActionFlag, Window: minute}, Responses: 50},
		InjectionProbe: InjectionRule{Rule: Rule{Enabled: true, Action: ActionBan, Window: minute}, Requests: 10},
		SensitiveFiles: SensitiveFilesRule{Rule: Rule{Enabled: true, Action: ActionBan, Window: minute}, Requests: 5, Defaults: true},
		ScannerAgent:   ScannerAgentRule{Rule: Rule{Enabled: true, Action: ActionBan, Window: minute}, Requests: 5, Defaults: true},
		MaxClients:     1 << 16,
	}
}

// matcherConfig is what the rules in a ask userspace/attack to look for:
// nothing for a disabled rule.
func (a *APIRules) matcherConfig() attack.Config {
	var c attack.Config
	c.Injection = a.InjectionProbe.Enabled
	if r := &a.SensitiveFiles; r.Enabled {
		if r.Defaults {
			c.Paths = attack.DefaultPaths()
		}
		c.Paths = append(c.Paths, r.Paths...)
	}
	if r := &a.ScannerAgent; r.Enabled {
		if r.Defaults {
			c.Agents = attack.DefaultAgents()
		}
		c.Agents = append(c.Agents, r.Agents...)
	}
	return c
}

// withDefaults fills the thresholds; Config.withDefaults fills the rules.
func (a APIRules) withDefaults(def APIRules) APIRules {
	setZero(&a.AuthFailures.Failures, def.AuthFailures.Failures)
	setZero(&a.Enumeration.Objects, def.Enumeration.Objects)
	setZero(&a.AppThrottled.Responses, def.AppThrottled.Responses)
	setZero(&a.ErrorBurst.Responses, def.ErrorBurst.Responses)
	setZero(&a.InjectionProbe.Requests, def.InjectionProbe.Requests)
	setZero(&a.SensitiveFiles.Requests, def.SensitiveFiles.Requests)
	setZero(&a.ScannerAgent.Requests, def.ScannerAgent.Requests)
	setZero(&a.MaxClients, def.MaxClients)
	return a
}

// maxEnumObjects bounds one client's set of distinct paths.
const maxEnumObjects = 1 << 14

// validate checks the thresholds; Config.Validate checks the rules.
func (a APIRules) validate() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if a.Enumeration.Objects >= maxEnumObjects {
		add("enumeration: objects %d: at most %d are tracked per client", a.Enumeration.Objects, maxEnumObjects-1)
	}
	for _, t := range a.Enumeration.Templates {
		if err := checkTemplate(t); err != nil {
			add("enumeration: template %q: %v", t, err)
		}
	}
	for _, p := range a.AuthFailures.LoginPaths {
		if !strings.HasPrefix(p, "/") {
			add("auth-failures: login path %q does not start with /", p)
		}
	}
	if a.MaxClients < 0 {
		add("api: maxClients %d is negative", a.MaxClients)
	}
	if r := a.SensitiveFiles; r.Enabled && !r.Defaults && len(r.Paths) == 0 {
		add("sensitive-files: no defaults and no paths: no path would ever count; give paths or disable the rule")
	}
	if r := a.ScannerAgent; r.Enabled && !r.Defaults && len(r.Agents) == 0 {
		add("scanner-agent: no defaults and no agents: no user agent would ever count; give agents or disable the rule")
	}
	if _, err := attack.Compile(a.matcherConfig()); err != nil {
		add("%v", err)
	}
	return errs
}

func checkTemplate(t string) error {
	if !strings.HasPrefix(t, "/") {
		return fmt.Errorf("does not start with /")
	}
	hasVar := false
	for seg := range strings.SplitSeq(t[1:], "/") {
		if strings.HasPrefix(seg, "{") != strings.HasSuffix(seg, "}") {
			return fmt.Errorf("segment %q: a variable is {name}, the whole segment", seg)
		}
		if strings.HasPrefix(seg, "{") {
			hasVar = true
		}
	}
	if !hasVar {
		return fmt.Errorf("no {variable} segment: it names no object")
	}
	return nil
}

// apiClient is one client key's API windows.
type apiClient struct {
	prefix netip.Prefix
	last   int64
	// the counting rules' windows, by table row, made on first use: most
	// clients trip one rule, if any
	counts  [numReasons]*ring
	objects map[uint64]int64 // path hash → last 403/404
	pruned  int64
}

// apiState is the Detector's API side, kept apart from the packet side: its
// windows start and stop with its own rules.
type apiState struct {
	idle    int64
	clients *lru[addrKey, *apiClient]
	seed    maphash.Seed
	signals uint64

	// matcher looks for attacks in requests (the rules' patterns); sc,
	// bufs and found are its working memory for the signal being observed
	matcher *attack.Matcher
	sc      attack.Scratch
	bufs    [4][]byte
	found   found
}

// found is what the matcher found in the signal being observed, for its
// evidence; the byte slices are valid until the next signal.
type found struct {
	class    attack.Class
	sample   []byte
	pattern  string // the sensitive-path pattern
	resolved []byte // the path the server resolves
	agent    string // the scanner pattern
}

// resetAPI forgets every API client (their windows changed shape).
func (d *Detector) resetAPI() {
	d.api.clients = newLRU[addrKey, *apiClient]()
	d.api.seed = maphash.MakeSeed()
}

// ObserveSignal counts one API-layer signal. It reports whether the signal
// counted for any rule (a 200 without a payload or a scanner's user agent
// counts for none).
func (d *Detector) ObserveSignal(s Signal) bool {
	if !s.Client.IsValid() {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := s.At
	if now == 0 {
		now = int64(d.opts.Now())
	}
	d.api.signals++
	var buf [4]Reason
	reasons := d.classify(s, buf[:0])
	weight := uint64(max(s.Weight, 1))
	var c *apiClient
	counted := false
	for _, reason := range reasons {
		if s.Age >= d.cfg.rule(reason).Window {
			continue // no evidence of this rule any more
		}
		if c == nil {
			c = d.apiClient(s.Client, now)
		}
		h := hit{reason: reason, prefix: c.prefix, source: s.Client}
		if reason == Enumeration {
			d.enumerate(c, s, h, weight, now)
		} else {
			d.count(c, s, h, weight, now)
		}
		counted = true
	}
	return counted
}

// classify appends the rules a signal counts for to out: at most one by its
// status (or its report), and any of the three that look at what the
// request carried.
func (d *Detector) classify(s Signal, out []Reason) []Reason {
	a := &d.cfg.API
	f := &d.api.found
	*f = found{}
	if s.Report != "" {
		if s.Report == InjectionProbe {
			f.class = s.Class
			if path, query, _ := strings.Cut(s.Path, "?"); f.class == attack.NoClass && s.Path != "" {
				f.class = d.api.matcher.Injection(d.bytes(0, path), d.bytes(1, query), nil, &d.api.sc).Class
			}
		}
		return d.enabled(out, s.Report)
	}
	switch {
	case s.Status == 401 && loginPath(a.AuthFailures.LoginPaths, s.Path):
		out = d.enabled(out, AuthFailures)
	case (s.Status == 403 || s.Status == 404) && objectPath(&a.Enumeration, s.Path):
		out = d.enabled(out, Enumeration)
	case s.Status == 429:
		out = d.enabled(out, AppThrottled)
	case s.Status >= 500 && s.Status <= 599:
		out = d.enabled(out, ErrorBurst)
	}
	m := d.api.matcher
	if a.InjectionProbe.Enabled {
		if fi := m.Injection(d.bytes(0, s.Path), d.bytes(1, s.Query), d.bytes(2, s.UserAgent), &d.api.sc); fi.Class != attack.NoClass {
			// the sample lives in the scratch, which the path check reuses
			f.class, f.sample = fi.Class, append(d.api.bufs[3][:0], fi.Sample...)
			d.api.bufs[3] = f.sample
			out = append(out, InjectionProbe)
		}
	}
	if a.SensitiveFiles.Enabled && Refused(s.Status) {
		if pattern, resolved, ok := m.SensitivePath(d.bytes(0, s.Path), &d.api.sc); ok {
			f.pattern, f.resolved = pattern, resolved
			out = append(out, SensitiveFiles)
		}
	}
	if a.ScannerAgent.Enabled && s.UserAgent != "" {
		if pattern, ok := m.ScannerAgent(d.bytes(2, s.UserAgent), &d.api.sc); ok {
			f.agent = pattern
			out = append(out, ScannerAgent)
		}
	}
	return out
}

// Refused says whether a status answers a request for a sensitive path the
// way a host that does not serve it does: a 4xx (not found, forbidden,
// unauthorised, bad request), but not 429, which is throttling.
func Refused(status int) bool {
	return status >= 400 && status <= 499 && status != 429
}

// enabled appends r to out when it is an API rule the policy enables.
func (d *Detector) enabled(out []Reason, r Reason) []Reason {
	if i := r.index(); i < 0 || table[i].layer != apiLayer || !table[i].rule(&d.cfg).Enabled {
		return out
	}
	return append(out, r)
}

// bytes copies s into the i-th reusable buffer: the matcher reads bytes.
func (d *Detector) bytes(i int, s string) []byte {
	d.api.bufs[i] = append(d.api.bufs[i][:0], s...)
	return d.api.bufs[i]
}

// Matcher is the matcher of the rules in force, for the access-log sources
// to screen lines without the Detector's lock (it is immutable).
func (d *Detector) Matcher() *attack.Matcher { return d.matcher.Load() }

// counted is a counting rule's threshold (more than over) and what it counts.
func (d *Detector) counted(r Reason) (over uint64, what string) {
	a := &d.cfg.API
	switch r {
	case AuthFailures:
		return a.AuthFailures.Failures, "failed logins"
	case AppThrottled:
		return a.AppThrottled.Responses, "times the application throttled it (429)"
	case ErrorBurst:
		return a.ErrorBurst.Responses, "server errors (5xx) answering it"
	case InjectionProbe:
		return a.InjectionProbe.Requests, "injection probes"
	case SensitiveFiles:
		return a.SensitiveFiles.Requests, "requests for sensitive paths refused or missing (4xx)"
	case ScannerAgent:
		return a.ScannerAgent.Requests, "requests with a scanner's user agent"
	}
	return math.MaxUint64, ""
}

// count counts the signal in the client's window of h.reason and raises it
// once the window holds more than the rule's threshold (scanner-agent: from
// the first, flagging only until the threshold).
func (d *Detector) count(c *apiClient, s Signal, h hit, weight uint64, now int64) {
	over, what := d.counted(h.reason)
	flagAt := over
	if h.reason == ScannerAgent {
		flagAt = 0
	}
	window := d.cfg.rule(h.reason).Window
	r := lazyRing(&c.counts[h.reason.index()])
	r.add(d.span(h.reason), now, weight)
	if r.sum > flagAt {
		h.flagOnly = r.sum <= over
		d.raise(now, h, func() Evidence {
			e := d.evidence(h.reason, s)
			e.Events = r.sum
			e.Summary = fmt.Sprintf("%d %s in %v (latest %s)", r.sum, what, window, e.Summary)
			return e
		})
	}
}

// Bounds of what evidence quotes from a request: a log line can hold
// anything (userspace/attack.Sanitize).
const (
	maxQuotedPath   = 64
	maxQuotedSample = 96
)

func describe(s Signal) string {
	if s.Report != "" {
		return "a report from the application"
	}
	return fmt.Sprintf("%d to %s %s", s.Status, attack.SanitizeString(s.Method, 16), attack.SanitizeString(s.Path, maxQuotedPath))
}

// evidence is what a signal shows of rule r: the request (describe), and
// for the rules that look at what it carried, what matched, sanitised.
func (d *Detector) evidence(r Reason, s Signal) Evidence {
	f := &d.api.found
	e := Evidence{Summary: describe(s)}
	switch r {
	case InjectionProbe:
		if f.class != attack.NoClass {
			e.Class = f.class.String()
		}
		switch {
		case s.Report != "" && s.Path != "":
			e.Match = attack.SanitizeString(s.Path, maxQuotedSample)
		case s.Report == "":
			e.Match = attack.Sanitize(f.sample, maxQuotedSample)
		}
		if e.Class != "" {
			e.Summary += ": " + e.Class
		}
		if e.Match != "" {
			e.Summary += ` "` + e.Match + `"`
		}
	case SensitiveFiles:
		e.Match = attack.Sanitize(f.resolved, maxQuotedPath)
		e.Summary += fmt.Sprintf(`: "%s" matches "%s"`, e.Match, f.pattern)
	case ScannerAgent:
		if s.Report == "" {
			e.Match = attack.SanitizeString(s.UserAgent, maxQuotedSample)
			e.Summary += fmt.Sprintf(`: user agent "%s" matches "%s"`, e.Match, f.agent)
		}
	}
	return e
}

func (d *Detector) enumerate(c *apiClient, s Signal, h hit, weight uint64, now int64) {
	a := &d.cfg.API
	threshold := int(a.Enumeration.Objects)
	limit := min(max(2*threshold, 64), maxEnumObjects)
	if c.objects == nil {
		c.objects = map[uint64]int64{}
	}
	if len(c.objects) >= threshold && now-c.pruned >= d.span(Enumeration).bucket {
		cutoff := now - int64(a.Enumeration.Window)
		for k, t := range c.objects {
			if t <= cutoff {
				delete(c.objects, k)
			}
		}
		c.pruned = now
	}
	// A report without a path names weight objects the application saw
	// denied; each counts as its own.
	for i := range weight {
		if len(c.objects) >= limit {
			break
		}
		var h uint64
		if s.Report != "" && s.Path == "" {
			h = maphash.Comparable(d.api.seed, [2]int64{now, int64(i)})
		} else {
			h = maphash.String(d.api.seed, s.Path)
		}
		c.objects[h] = max(c.objects[h], now)
		if s.Path != "" {
			break
		}
	}
	if len(c.objects) <= threshold {
		return
	}
	d.raise(now, h, func() Evidence {
		n := fmt.Sprint(len(c.objects))
		if len(c.objects) >= limit {
			n = "at least " + n
		}
		latest := describe(s)
		if s.Path != "" {
			latest += ", template " + Template(s.Path)
		}
		return Evidence{Events: uint64(len(c.objects)),
			Summary: fmt.Sprintf("%s distinct object paths answered 403/404 in %v (latest %.160s)", n, a.Enumeration.Window, latest)}
	})
}

func (d *Detector) apiClient(addr netip.Addr, now int64) *apiClient {
	addr = addr.Unmap()
	bits := int(d.cfg.ClientBits6)
	if addr.Is4() {
		bits = int(d.cfg.ClientBits4)
	}
	pfx, _ := addr.Prefix(bits)
	k := addrKey(pfx.Addr().As16())
	c, ok := d.api.clients.get(k)
	if ok {
		c.last = max(c.last, now)
		return c
	}
	if d.api.clients.len() >= d.cfg.API.MaxClients {
		old, oc, _ := d.api.clients.oldest()
		if now-oc.last < d.api.idle {
			d.evicted++
		}
		d.api.clients.remove(old)
	}
	c = &apiClient{prefix: pfx, last: now}
	d.api.clients.put(k, c)
	return c
}

func (d *Detector) pruneAPI(now int64) {
	for {
		k, c, ok := d.api.clients.oldest()
		if !ok || now-c.last < d.api.idle {
			break
		}
		d.api.clients.remove(k)
	}
}

// loginPath reports whether p is under one of prefixes (every path when there
// are none).
func loginPath(prefixes []string, p string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, x := range prefixes {
		if strings.HasPrefix(p, x) && (len(p) == len(x) || strings.HasSuffix(x, "/") || p[len(x)] == '/' || p[len(x)] == '?') {
			return true
		}
	}
	return false
}

// objectPath reports whether p names an object: it matches a template, or
// (learning) one of its segments looks like an identifier.
func objectPath(r *EnumerationRule, p string) bool {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	for _, t := range r.Templates {
		if matchTemplate(t, p) {
			return true
		}
	}
	if !r.Learn {
		return false
	}
	for seg := range strings.SplitSeq(p, "/") {
		if IsIDSegment(seg) {
			return true
		}
	}
	return false
}

func matchTemplate(t, p string) bool {
	for {
		ts, trest, tmore := strings.Cut(t, "/")
		ps, prest, pmore := strings.Cut(p, "/")
		if strings.HasPrefix(ts, "{") {
			if ps == "" {
				return false
			}
		} else if ts != ps {
			return false
		}
		if tmore != pmore {
			return false
		}
		if !tmore {
			return true
		}
		t, p = trest, prest
	}
}

// IsIDSegment reports whether a path segment looks like an object identifier:
// all digits, a UUID, or at least 16 hex digits. Templates are learned by
// collapsing such segments to {id}.
func IsIDSegment(s string) bool {
	if s == "" {
		return false
	}
	digits, hex := true, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		isDigit := c >= '0' && c <= '9'
		isHex := isDigit || (c|0x20) >= 'a' && (c|0x20) <= 'f'
		digits = digits && isDigit
		hex = hex && isHex
	}
	if digits || (hex && len(s) >= 16) {
		return true
	}
	// 8-4-4-4-12
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !(c >= '0' && c <= '9' || (c|0x20) >= 'a' && (c|0x20) <= 'f') {
			return false
		}
	}
	return true
}

// Template collapses a path's identifier segments to {id}: /items/42/tags →
// /items/{id}/tags.
func Template(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if IsIDSegment(s) {
			segs[i] = "{id}"
		}
	}
	return strings.Join(segs, "/")
}

// Signals is how many API signals ObserveSignal was given.
func (d *Detector) Signals() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.api.signals
}

// APIClients is how many clients the API rules track now.
func (d *Detector) APIClients() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.api.clients.len()
}

// ReportReason maps the reason of an application's report to its rule. The
// rule names are accepted, and the words an application would use.
func ReportReason(s string) (Reason, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "auth-failures", "auth-failure", "failed-login", "login-failed":
		return AuthFailures, nil
	case "enumeration", "authz-failure", "forbidden", "not-found":
		return Enumeration, nil
	case "app-throttled", "throttled", "rate-limited":
		return AppThrottled, nil
	case "error-burst", "server-error":
		return ErrorBurst, nil
	case "injection-probe", "injection", "injection-attempt":
		return InjectionProbe, nil
	case "sensitive-files", "sensitive-file":
		return SensitiveFiles, nil
	case "scanner-agent", "scanner":
		return ScannerAgent, nil
	}
	return "", fmt.Errorf("unknown report reason %q (want failed-login, authz-failure, throttled, server-error, injection, sensitive-file or scanner, or a rule name: %s, %s, %s, %s, %s, %s, %s)",
		s, AuthFailures, Enumeration, AppThrottled, ErrorBurst, InjectionProbe, SensitiveFiles, ScannerAgent)
}
