package policy

import (
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/apiguard/apiguard/userspace/attack"
	"github.com/apiguard/apiguard/userspace/clientip"
	"go.yaml.in/yaml/v3"
)

// maxAccessLogs bounds the logs one daemon follows.
const maxAccessLogs = 64

func (p *parser) apiDetection(o object, d *Detection) {
	if v := o.get("auth-failures"); v != nil {
		a := &d.AuthFailures
		if do, ok := p.detector(v, o.field("auth-failures"), &a.Detector, "failures", "loginPaths"); ok {
			if x := do.get("failures"); x != nil {
				if c, ok := p.count(x, do.field("failures"), 1, math.MaxUint32); ok {
					a.Failures = c
				}
			}
			if x := do.get("loginPaths"); x != nil {
				a.LoginPaths = p.paths(x, do.field("loginPaths"), false)
			}
		}
	}
	if v := o.get("enumeration"); v != nil {
		e := &d.Enumeration
		if do, ok := p.detector(v, o.field("enumeration"), &e.Detector, "objects", "templates", "learn"); ok {
			if x := do.get("objects"); x != nil {
				// the detector keeps at most 16383 paths per client
				if c, ok := p.count(x, do.field("objects"), 1, 1<<14-1); ok {
					e.Objects = c
				}
			}
			if x := do.get("templates"); x != nil {
				e.Templates = p.paths(x, do.field("templates"), true)
			}
			if x := do.get("learn"); x != nil {
				if b, ok := p.boolean(x, do.field("learn")); ok {
					e.Learn = b
				}
			}
			if !e.Learn && len(e.Templates) == 0 && e.Enabled {
				p.errAt(p.nodeOr(do, "learn"), do.field("learn"), "false with no templates: no path would ever count; give templates or disable the detector")
			}
		}
	}
	p.thresholdDetector(o, false, "app-throttled", &d.AppThrottled.Detector, "responses", &d.AppThrottled.Responses)
	p.thresholdDetector(o, false, "error-burst", &d.ErrorBurst.Detector, "responses", &d.ErrorBurst.Responses)
	p.thresholdDetector(o, false, "injection-probe", &d.InjectionProbe.Detector, "requests", &d.InjectionProbe.Requests)
	if v := o.get("sensitive-files"); v != nil {
		sf := &d.SensitiveFiles
		if do, ok := p.detector(v, o.field("sensitive-files"), &sf.Detector, "requests", "paths", "defaults"); ok {
			p.patternRule(do, &sf.Requests, "paths", &sf.Paths, &sf.Defaults, attack.MaxPatterns, len(attack.DefaultPaths()), attack.CheckPath, sf.Enabled)
		}
	}
	if v := o.get("scanner-agent"); v != nil {
		sa := &d.ScannerAgent
		if do, ok := p.detector(v, o.field("scanner-agent"), &sa.Detector, "requests", "agents", "defaults"); ok {
			p.patternRule(do, &sa.Requests, "agents", &sa.Agents, &sa.Defaults, attack.MaxAgents, len(attack.DefaultAgents()), attack.CheckAgent, sa.Enabled)
		}
	}
}

// patternRule reads the fields of a rule with a pattern list: its threshold
// (requests), its patterns (each checked; at most max together with the
// nDefaults defaults when they are kept) and whether the defaults are kept.
func (p *parser) patternRule(o object, requests *uint64, key string, patterns *[]string, defaults *bool, max, nDefaults int,
	check func(string) error, enabled bool) {
	if x := o.get("requests"); x != nil {
		if c, ok := p.count(x, o.field("requests"), 1, math.MaxUint32); ok {
			*requests = c
		}
	}
	if x := o.get("defaults"); x != nil {
		if b, ok := p.boolean(x, o.field("defaults")); ok {
			*defaults = b
		}
	}
	if x := o.get(key); x != nil {
		if items, ok := p.list(x, o.field(key)); ok {
			*patterns = nil
			for i, it := range items {
				f := fmt.Sprintf("%s[%d]", o.field(key), i)
				s, ok := p.str(it, f)
				if !ok {
					continue
				}
				if err := check(s); err != nil {
					p.errAt(resolve(it), f, "%v", err)
					continue
				}
				*patterns = append(*patterns, s)
			}
			if *defaults {
				max -= nDefaults
			}
			if len(items) > max {
				p.errAt(resolve(x), o.field(key), "%d patterns; at most %d (%d with the defaults)", len(items), max, max+nDefaults*boolInt(*defaults))
			}
		}
	}
	if enabled && !*defaults && len(*patterns) == 0 {
		p.errAt(p.nodeOr(o, "defaults"), o.field("defaults"), "false with no %s: nothing would ever count; give %s or disable the detector", key, key)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// paths reads a list of URL paths; templates must name a {variable} segment.
func (p *parser) paths(n *yaml.Node, field string, templates bool) []string {
	items, ok := p.list(n, field)
	if !ok {
		return nil
	}
	var out []string
	for i, it := range items {
		f := fmt.Sprintf("%s[%d]", field, i)
		s, ok := p.str(it, f)
		if !ok {
			continue
		}
		if !strings.HasPrefix(s, "/") {
			p.errAt(resolve(it), f, "%q does not start with /", s)
			continue
		}
		if templates {
			if msg := templateProblem(s); msg != "" {
				p.errAt(resolve(it), f, "%q: %s", s, msg)
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

func templateProblem(t string) string {
	hasVar := false
	for _, seg := range strings.Split(t[1:], "/") {
		if strings.HasPrefix(seg, "{") != strings.HasSuffix(seg, "}") || strings.Count(seg, "{") > 1 {
			return fmt.Sprintf("segment %q: a variable is a whole segment, {name}", seg)
		}
		if strings.HasPrefix(seg, "{") {
			hasVar = true
		}
	}
	if !hasVar {
		return "no {variable} segment, so it names no object (such as /items/{id})"
	}
	return ""
}

func (p *parser) accessLogs(n *yaml.Node, field string) []AccessLog {
	items, ok := p.list(n, field)
	if !ok {
		return nil
	}
	if len(items) > maxAccessLogs {
		p.errAt(resolve(n), field, "%d logs; at most %d", len(items), maxAccessLogs)
		return nil
	}
	var out []AccessLog
	seen := map[string]int{}
	for i, it := range items {
		f := fmt.Sprintf("%s[%d]", field, i)
		o, ok := p.mapping(it, f, "path", "format", "fields", "forwarded", "trustedProxies", "fromStart", "maxLineLength")
		if !ok {
			continue
		}
		l := AccessLog{Format: "combined"}
		if v := o.get("path"); v == nil {
			p.errAt(o.node, o.field("path"), "missing; which file to follow")
		} else if s, ok := p.str(v, o.field("path")); ok {
			switch {
			case !filepath.IsAbs(s):
				p.errAt(resolve(v), o.field("path"), "%q is not an absolute path", s)
			case seen[filepath.Clean(s)] != 0:
				p.errAt(resolve(v), o.field("path"), "%s is followed twice (first at line %d)", s, seen[filepath.Clean(s)])
			default:
				l.Path = filepath.Clean(s)
				seen[l.Path] = resolve(v).Line
			}
		}
		if v := o.get("format"); v != nil {
			if s, ok := p.enum(v, o.field("format"), "combined", "json"); ok {
				l.Format = s
			}
		}
		if v := o.get("fields"); v != nil {
			if l.Format != "json" {
				p.errAt(resolve(v), o.field("fields"), "only a json log has fields (format is %s)", l.Format)
			} else {
				l.Fields = p.logFields(v, o.field("fields"))
			}
		}
		if v := o.get("forwarded"); v != nil {
			if b, ok := p.boolean(v, o.field("forwarded")); ok {
				if b && l.Format != "combined" {
					p.errAt(resolve(v), o.field("forwarded"), "a json log names its forwarded field in fields.forwarded")
				}
				l.Forwarded = b
			}
		}
		if v := o.get("trustedProxies"); v != nil {
			l.TrustedProxies = p.prefixes(v, o.field("trustedProxies"))
			// a list whose every item read (else errors were reported)
			items := resolve(v).Content
			if len(items) != len(l.TrustedProxies) {
				items = nil
			}
			for i, pfx := range l.TrustedProxies {
				if pfx.Bits() >= clientip.WidestTrusted || items == nil {
					continue
				}
				p.warnAt(resolve(items[i]), fmt.Sprintf("%s[%d]", o.field("trustedProxies"), i),
					"%v is wider than a /%d: any host in it that reaches the server directly can write X-Forwarded-For and blame any address; list the proxies' own addresses", pfx, clientip.WidestTrusted)
			}
		}
		if v := o.get("fromStart"); v != nil {
			if b, ok := p.boolean(v, o.field("fromStart")); ok {
				l.FromStart = b
			}
		}
		if v := o.get("maxLineLength"); v != nil {
			if c, ok := p.count(v, o.field("maxLineLength"), 64, 1<<20); ok {
				l.MaxLineLength = c
			}
		}
		out = append(out, l)
	}
	return out
}

func (p *parser) logFields(n *yaml.Node, field string) LogFields {
	var lf LogFields
	keys := []struct {
		key string
		v   *string
	}{{"client", &lf.Client}, {"time", &lf.Time}, {"method", &lf.Method}, {"path", &lf.Path}, {"request", &lf.Request},
		{"status", &lf.Status}, {"latency", &lf.Latency}, {"forwarded", &lf.Forwarded}, {"userAgent", &lf.UserAgent},
		{"query", &lf.Query}}
	known := []string{"latencyUnit"}
	for _, k := range keys {
		known = append(known, k.key)
	}
	o, ok := p.mapping(n, field, known...)
	if !ok {
		return lf
	}
	for _, k := range keys {
		if v := o.get(k.key); v != nil {
			if s, ok := p.str(v, o.field(k.key)); ok {
				if s == "" {
					p.errAt(resolve(v), o.field(k.key), "empty key")
					continue
				}
				*k.v = s
			}
		}
	}
	if v := o.get("latencyUnit"); v != nil {
		if s, ok := p.enum(v, o.field("latencyUnit"), "s", "ms", "us", "ns"); ok {
			lf.LatencyUnit = s
		}
	}
	return lf
}

// prefixes reads a list of addresses or CIDRs.
func (p *parser) prefixes(n *yaml.Node, field string) []netip.Prefix {
	items, ok := p.list(n, field)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for i, it := range items {
		f := fmt.Sprintf("%s[%d]", field, i)
		s, ok := p.str(it, f)
		if !ok {
			continue
		}
		var pfx netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			pfx, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil {
				pfx = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
			}
		}
		if err != nil {
			p.errAt(resolve(it), f, "%q is not an address or CIDR", s)
			continue
		}
		out = append(out, pfx.Masked())
	}
	return out
}
