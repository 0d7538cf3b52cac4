package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apiguard/apiguard/loader"
)

// Diff lists human-readable changes from old to new, one per line, such as
// "+ deny 203.0.113.0/24" or "~ service https: client packets 100/s -> 200/s".
// Lines start with "+" (added), "-" (removed) or "~" (changed). It is empty
// when the two enforce and detect the same things. A nil policy counts as one
// with every default and no lists or services, so Diff(nil, p) shows what p
// sets beyond the defaults.
func Diff(old, new *Policy) []string {
	var d differ
	o, n := Defaults(), Defaults()
	var oName, nName string
	if old != nil {
		o, oName = old.Spec, old.Name
	}
	if new != nil {
		n, nName = new.Spec, new.Name
	}
	d.change("name", oName, nName)
	d.change("mode", string(o.Mode), string(n.Mode))
	d.change("defaultAction", string(o.DefaultAction), string(n.DefaultAction))
	d.change("tcpFlagSanity", strconv.FormatBool(o.TCPFlagSanity), strconv.FormatBool(n.TCPFlagSanity))
	d.change("clientKey", o.ClientKey.String(), n.ClientKey.String())
	d.change("prefixKey", o.PrefixKey.String(), n.PrefixKey.String())
	if o.SynProxyAnswers != n.SynProxyAnswers {
		d.add("~ synProxyAnswers %s -> %s", answersString(o.SynProxyAnswers), answersString(n.SynProxyAnswers))
	}
	d.prefixes("allow", o.Allow, n.Allow)
	d.prefixes("deny", o.Deny, n.Deny)
	d.services(o.Services, n.Services)
	d.connections(o.Connections, n.Connections)
	d.detection(&o.Detection, &n.Detection)
	d.change("access logs", accessLogsString(o.AccessLogs), accessLogsString(n.AccessLogs))
	d.change("bans ttl", durationString(o.Bans.TTL), durationString(n.Bans.TTL))
	d.change("bans maxTTL", durationString(o.Bans.MaxTTL), durationString(n.Bans.MaxTTL))
	d.change("bans growth", floatString(o.Bans.Growth), floatString(n.Bans.Growth))
	d.change("bans forgetAfter", durationString(o.Bans.ForgetAfter), durationString(n.Bans.ForgetAfter))
	d.change("bans proofTTL", durationString(o.Bans.ProofTTL), durationString(n.Bans.ProofTTL))
	d.change("bans maxPerMinute", strconv.FormatUint(o.Bans.MaxPerMinute, 10), strconv.FormatUint(n.Bans.MaxPerMinute, 10))
	d.prefixes("neverBan", o.NeverBan, n.NeverBan)
	d.change("crowdsec", o.CrowdSec.summary(), n.CrowdSec.summary())
	return d.lines
}

type differ struct{ lines []string }

func (d *differ) add(format string, args ...any) {
	d.lines = append(d.lines, fmt.Sprintf(format, args...))
}

func (d *differ) change(what, old, new string) {
	if old != new {
		d.add("~ %s: %s -> %s", what, orNone(old), orNone(new))
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func (k KeyLengths) String() string {
	if k == (KeyLengths{}) {
		return ""
	}
	return fmt.Sprintf("ipv4 /%d, ipv6 /%d", k.IPv4, k.IPv6)
}

// prefixes lists entries only in one of the two lists, removals first, each
// group in address order. Duplicates and order within a list do not matter:
// the datapath holds a set.
func (d *differ) prefixes(list string, old, new []netip.Prefix) {
	o, n := sortedSet(old), sortedSet(new)
	var added, removed []netip.Prefix
	i, j := 0, 0
	for i < len(o) || j < len(n) {
		switch {
		case j == len(n) || i < len(o) && comparePrefix(o[i], n[j]) < 0:
			removed = append(removed, o[i])
			i++
		case i == len(o) || comparePrefix(n[j], o[i]) < 0:
			added = append(added, n[j])
			j++
		default:
			i++
			j++
		}
	}
	for _, p := range removed {
		d.add("- %s %s", list, p)
	}
	for _, p := range added {
		d.add("+ %s %s", list, p)
	}
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func sortedSet(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func (d *differ) services(old, new []Service) {
	byName := func(ss []Service) map[string]*Service {
		m := make(map[string]*Service, len(ss))
		for i := range ss {
			m[ss[i].Name] = &ss[i]
		}
		return m
	}
	o, n := byName(old), byName(new)
	for i := range old {
		if _, ok := n[old[i].Name]; !ok {
			d.add("- service %s", old[i].summary())
		}
	}
	for i := range new {
		s := &new[i]
		prev, ok := o[s.Name]
		if !ok {
			d.add("+ service %s", s.summary())
			continue
		}
		what := "service " + s.Name
		d.change(what+" protocol", string(prev.Protocol), string(s.Protocol))
		d.change(what+" ports", portsString(prev.Ports), portsString(s.Ports))
		d.change(what+" mode", string(prev.Mode), string(s.Mode))
		d.change(what+" synProxy", string(prev.SynProxy), string(s.SynProxy))
		d.serviceConns(what, prev, s)
		if prev.Fragments != s.Fragments {
			d.add("~ %s: fragments %s -> %s", what, formatRate(prev.Fragments, unitPackets), formatRate(s.Fragments, unitPackets))
		}
		for _, lvl := range []struct {
			name string
			a, b Limits
		}{{"client", prev.Client, s.Client}, {"prefix", prev.Prefix, s.Prefix}, {"total", prev.Total, s.Total}} {
			for _, k := range limitKinds {
				ra, rb := lvl.a.rate(k.kind), lvl.b.rate(k.kind)
				if ra != rb {
					d.add("~ %s: %s %s %s -> %s", what, lvl.name, k.key, formatRate(ra, k.kind), formatRate(rb, k.kind))
				}
			}
		}
	}
}

// String describes the limits the way a policy writes them, such as
// "packets 200/s burst 400, connections 20/s", or "none".
func (l Limits) String() string {
	var parts []string
	for _, k := range limitKinds {
		if r := l.rate(k.kind); r.Limited() {
			parts = append(parts, k.key+" "+formatRate(r, k.kind))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func (l Limits) rate(k unitKind) Rate {
	switch k {
	case unitPackets:
		return l.Packets
	case unitBytes:
		return l.Bytes
	}
	return l.Connections
}

// summary is a service in one line: name, protocol, ports, mode when not enforce.
func (s *Service) summary() string {
	out := fmt.Sprintf("%s (%s %s", s.Name, s.Protocol, portsString(s.Ports))
	if s.Mode == Monitor {
		out += ", monitor"
	}
	return out + ")"
}

func portsString(rs []PortRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

func (d *differ) detection(o, n *Detection) {
	det := func(name string, a, b Detector) {
		d.change("detection "+name+" enabled", strconv.FormatBool(a.Enabled), strconv.FormatBool(b.Enabled))
		d.change("detection "+name+" action", string(a.Action), string(b.Action))
		d.change("detection "+name+" window", durationString(a.Window), durationString(b.Window))
		d.change("detection "+name+" banUnproven", strconv.FormatBool(a.BanUnproven), strconv.FormatBool(b.BanUnproven))
	}
	num := func(name string, a, b uint64) {
		d.change("detection "+name, strconv.FormatUint(a, 10), strconv.FormatUint(b, 10))
	}
	det("flood", o.Flood.Detector, n.Flood.Detector)
	d.change("detection flood limitedFor", durationString(o.Flood.LimitedFor), durationString(n.Flood.LimitedFor))
	det("syn-flood", o.SYNFlood.Detector, n.SYNFlood.Detector)
	num("syn-flood syns", o.SYNFlood.SYNs, n.SYNFlood.SYNs)
	det("scan", o.Scan.Detector, n.Scan.Detector)
	num("scan ports", o.Scan.Ports, n.Scan.Ports)
	det("deny-probe", o.DenyProbe.Detector, n.DenyProbe.Detector)
	num("deny-probe hits", o.DenyProbe.Hits, n.DenyProbe.Hits)
	det("bad-flags", o.BadFlags.Detector, n.BadFlags.Detector)
	num("bad-flags packets", o.BadFlags.Packets, n.BadFlags.Packets)
	det("aggregate", o.Aggregate.Detector, n.Aggregate.Detector)
	d.change("detection aggregate share", floatString(o.Aggregate.Share), floatString(n.Aggregate.Share))
	num("aggregate minClients", o.Aggregate.MinClients, n.Aggregate.MinClients)
	num("aggregate minEvents", o.Aggregate.MinEvents, n.Aggregate.MinEvents)
	det("auth-failures", o.AuthFailures.Detector, n.AuthFailures.Detector)
	num("auth-failures failures", o.AuthFailures.Failures, n.AuthFailures.Failures)
	d.change("detection auth-failures loginPaths", strings.Join(o.AuthFailures.LoginPaths, ","), strings.Join(n.AuthFailures.LoginPaths, ","))
	det("enumeration", o.Enumeration.Detector, n.Enumeration.Detector)
	num("enumeration objects", o.Enumeration.Objects, n.Enumeration.Objects)
	d.change("detection enumeration templates", strings.Join(o.Enumeration.Templates, ","), strings.Join(n.Enumeration.Templates, ","))
	d.change("detection enumeration learn", strconv.FormatBool(o.Enumeration.Learn), strconv.FormatBool(n.Enumeration.Learn))
	det("app-throttled", o.AppThrottled.Detector, n.AppThrottled.Detector)
	num("app-throttled responses", o.AppThrottled.Responses, n.AppThrottled.Responses)
	det("error-burst", o.ErrorBurst.Detector, n.ErrorBurst.Detector)
	num("error-burst responses", o.ErrorBurst.Responses, n.ErrorBurst.Responses)
	det("injection-probe", o.InjectionProbe.Detector, n.InjectionProbe.Detector)
	num("injection-probe requests", o.InjectionProbe.Requests, n.InjectionProbe.Requests)
	det("sensitive-files", o.SensitiveFiles.Detector, n.SensitiveFiles.Detector)
	num("sensitive-files requests", o.SensitiveFiles.Requests, n.SensitiveFiles.Requests)
	d.change("detection sensitive-files paths", strings.Join(o.SensitiveFiles.Paths, ","), strings.Join(n.SensitiveFiles.Paths, ","))
	d.change("detection sensitive-files defaults", strconv.FormatBool(o.SensitiveFiles.Defaults), strconv.FormatBool(n.SensitiveFiles.Defaults))
	det("scanner-agent", o.ScannerAgent.Detector, n.ScannerAgent.Detector)
	num("scanner-agent requests", o.ScannerAgent.Requests, n.ScannerAgent.Requests)
	d.change("detection scanner-agent agents", strings.Join(o.ScannerAgent.Agents, ","), strings.Join(n.ScannerAgent.Agents, ","))
	d.change("detection scanner-agent defaults", strconv.FormatBool(o.ScannerAgent.Defaults), strconv.FormatBool(n.ScannerAgent.Defaults))
}

// durationString prints 10m rather than 10m0s.
func durationString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	if d >= 48*time.Hour && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func floatString(f float64) string {
	if f == 0 {
		return ""
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func accessLogsString(ls []AccessLog) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.Path + " (" + l.Format + ")"
	}
	return strings.Join(parts, ", ")
}

// answersString is spec.synProxyAnswers as written, or the default it stands for.
func answersString(r Rate) string {
	if r == (Rate{}) {
		return "default " + formatRate(Rate(loader.DefaultSynProxyAnswers), unitConns)
	}
	return formatRate(r, unitConns)
}
