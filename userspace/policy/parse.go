package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/safefile"
	"go.yaml.in/yaml/v3"
)

// parser collects everything wrong with one policy and the list files it names.
type parser struct {
	file     string
	readFile func(path string) ([]byte, error)
	errs     Errors
	warns    Errors
	sources  []listSource
	entries  []entry
	listLine [2]int // line of spec.allow / spec.deny, for errors about a whole list
	// listBytes is what the list files read so far hold, against MaxListBytes.
	listBytes int64
	// listed counts the lines of list files, against maxListEntries.
	listed int
	// moreErrs counts problems past maxErrors, reported as one summary.
	moreErrs int
}

// Parse reads a policy from data; name is used in error messages and readFile
// resolves the list files the policy names. Validation errors come back as
// Errors, all of them, in file and line order.
func Parse(name string, data []byte, readFile func(path string) ([]byte, error)) (*Policy, error) {
	p := &parser{file: name, readFile: readFile}
	pol := p.parse(data)
	if len(p.errs) > 0 {
		p.sort(p.errs)
		if p.moreErrs > 0 {
			p.errs = append(p.errs, Error{File: p.file, Line: 1, Field: "document", Msg: fmt.Sprintf("%d more problems not shown", p.moreErrs)})
		}
		return nil, p.errs
	}
	p.sort(p.warns)
	pol.Warnings = p.warns
	return pol, nil
}

// sort orders problems by file (the policy first, then list files in the order
// they are named) and line, keeping discovery order within a line.
func (p *parser) sort(es Errors) {
	rank := map[string]int{p.file: 0}
	for _, s := range p.sources {
		if _, ok := rank[s.file]; !ok {
			rank[s.file] = len(rank)
		}
	}
	slices.SortStableFunc(es, func(a, b Error) int {
		if ra, rb := rank[a.File], rank[b.File]; ra != rb {
			return ra - rb
		}
		return a.Line - b.Line
	})
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntax reports a YAML syntax error with the line yaml gives.
func (p *parser) syntax(err error) {
	line, msg := 1, strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	p.addErr(Error{File: p.file, Line: line, Field: "yaml", Msg: msg})
}

// addErr records a problem, or only counts it past maxErrors: a policy with
// a million mistakes costs no more memory than one with maxErrors.
func (p *parser) addErr(e Error) {
	if len(p.errs) >= maxErrors {
		p.moreErrs++
		return
	}
	p.errs = append(p.errs, e.clipped())
}

func (p *parser) parse(data []byte) *Policy {
	pol := &Policy{Source: p.file, Spec: Defaults()}
	if len(data) > MaxPolicyBytes {
		p.addErr(Error{File: p.file, Line: 1, Field: "document", Msg: fmt.Sprintf("the file holds %s; a policy holds at most %s (put long lists in list files: allowFiles, denyFiles, allowFromFiles)",
			safefile.Size(int64(len(data))), safefile.Size(MaxPolicyBytes))})
		return pol
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		p.addErr(Error{File: p.file, Line: 1, Field: "yaml", Msg: "the file holds no policy"})
		return pol
	} else if err != nil {
		p.syntax(err)
		return pol
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		p.errAt(&next, "yaml", "a policy file holds one YAML document; found a second one (after ---)")
	} else if !errors.Is(err, io.EOF) {
		p.syntax(err)
	}
	if len(doc.Content) == 0 {
		p.errAt(&doc, "yaml", "the file holds no policy")
		return pol
	}
	// before any value is looked at: aliases multiply the work of every
	// check that follows
	if b := (nodeBudget{limit: MaxPolicyNodes}); !b.spend(&doc) {
		at, what := &doc, "the document"
		if b.over != nil {
			at, what = b.over, fmt.Sprintf("with alias *%s (line %d)", b.over.Value, b.over.Line)
		}
		p.errAt(at, "yaml", "the policy expands to more than %d values, %s; aliases count in full each time they are used (put long lists in list files)", MaxPolicyNodes, what)
		return pol
	}
	top, ok := p.mapping(doc.Content[0], "", "apiVersion", "kind", "metadata", "spec")
	if !ok {
		return pol
	}
	p.header(top, "apiVersion", APIVersion)
	p.header(top, "kind", Kind)
	if n := top.get("metadata"); n == nil {
		p.errAt(top.node, "metadata", "missing; a policy needs metadata.name")
	} else {
		pol.Name = p.metadata(n)
	}
	if n := top.get("spec"); n == nil {
		p.errAt(top.node, "spec", "missing; write spec: {} for a policy that uses every default")
	} else {
		p.spec(n, &pol.Spec)
	}
	return pol
}

func (p *parser) header(top object, key, want string) {
	n := top.get(key)
	if n == nil {
		p.errAt(top.node, key, "missing; it must be %s", want)
		return
	}
	if s, ok := p.str(n, key); ok && s != want {
		p.errAt(resolve(n), key, "%q is not supported; it must be %s", s, want)
	}
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// checkName validates names that show up in logs, metrics and the CLI.
func (p *parser) checkName(n *yaml.Node, field string) (string, bool) {
	s, ok := p.str(n, field)
	if !ok {
		return "", false
	}
	if !namePattern.MatchString(s) {
		p.errAt(resolve(n), field, "%q is not a valid name: use 1–63 letters, digits, '.', '_' or '-', starting with a letter or digit", s)
		return "", false
	}
	return s, true
}

func (p *parser) metadata(n *yaml.Node) string {
	o, ok := p.mapping(n, "metadata", "name", "description")
	if !ok {
		return ""
	}
	if d := o.get("description"); d != nil {
		p.str(d, o.field("description"))
	}
	nameNode := o.get("name")
	if nameNode == nil {
		p.errAt(o.node, "metadata.name", "missing; every policy has a name")
		return ""
	}
	name, _ := p.checkName(nameNode, "metadata.name")
	return name
}

func (p *parser) spec(n *yaml.Node, s *Spec) {
	o, ok := p.mapping(n, "spec", "mode", "defaultAction", "tcpFlagSanity", "clientKey", "prefixKey",
		"allow", "allowFiles", "deny", "denyFiles", "services", "detection", "bans", "connections", "crowdsec", "accessLogs",
		"neverBan", "synProxyAnswers")
	if !ok {
		return
	}
	if v := o.get("mode"); v != nil {
		if m, ok := p.enum(v, o.field("mode"), "enforce", "monitor"); ok {
			s.Mode = Mode(m)
		}
	}
	if v := o.get("defaultAction"); v != nil {
		if a, ok := p.enum(v, o.field("defaultAction"), "pass", "drop"); ok {
			s.DefaultAction = DefaultAction(a)
		}
	}
	if v := o.get("tcpFlagSanity"); v != nil {
		if b, ok := p.boolean(v, o.field("tcpFlagSanity")); ok {
			s.TCPFlagSanity = b
		}
	}
	client4, client6 := p.keyLengths(o, "clientKey", &s.ClientKey)
	prefix4, prefix6 := p.keyLengths(o, "prefixKey", &s.PrefixKey)
	// a prefix bucket groups clients; one narrower than a client groups nothing
	if client4 && prefix4 && s.PrefixKey.IPv4 > s.ClientKey.IPv4 {
		p.errAt(p.keyNode(o, "prefixKey", "ipv4"), "spec.prefixKey.ipv4", "/%d is longer than clientKey.ipv4 /%d; a prefix must hold whole clients", s.PrefixKey.IPv4, s.ClientKey.IPv4)
	}
	if client6 && prefix6 && s.PrefixKey.IPv6 > s.ClientKey.IPv6 {
		p.errAt(p.keyNode(o, "prefixKey", "ipv6"), "spec.prefixKey.ipv6", "/%d is longer than clientKey.ipv6 /%d; a prefix must hold whole clients", s.PrefixKey.IPv6, s.ClientKey.IPv6)
	}

	for _, l := range []struct {
		key, filesKey string
		kind          listKind
		files         *[]string
	}{{"allow", "allowFiles", allowList, &s.AllowFiles}, {"deny", "denyFiles", denyList, &s.DenyFiles}} {
		p.listLine[l.kind] = o.node.Line
		if v := o.get(l.key); v != nil {
			p.listLine[l.kind] = v.Line
			p.inlineList(v, o.field(l.key), l.kind)
		}
		if v := o.get(l.filesKey); v != nil {
			*l.files = p.fileLists(v, o.field(l.filesKey), l.kind)
		}
	}
	p.checkEntries()
	var nAllow int
	for _, e := range p.entries {
		if e.kind == allowList {
			nAllow++
		}
	}
	if nAllow > 0 {
		s.Allow = make([]netip.Prefix, 0, nAllow)
	}
	if nDeny := len(p.entries) - nAllow; nDeny > 0 {
		s.Deny = make([]netip.Prefix, 0, nDeny)
	}
	for _, e := range p.entries {
		if e.kind == allowList {
			s.Allow = append(s.Allow, e.pfx)
		} else {
			s.Deny = append(s.Deny, e.pfx)
		}
	}

	if v := o.get("services"); v != nil {
		s.Services = p.services(v, o.field("services"))
		p.checkACLCapacity(s.Services, v)
	}
	if v := o.get("connections"); v != nil {
		p.connections(v, &s.Connections)
	}
	if v := o.get("detection"); v != nil {
		p.detection(v, &s.Detection)
	}
	if v := o.get("bans"); v != nil {
		p.bans(v, &s.Bans)
	}
	if v := o.get("crowdsec"); v != nil {
		p.crowdsec(v, &s.CrowdSec)
	}
	if v := o.get("accessLogs"); v != nil {
		s.AccessLogs = p.accessLogs(v, o.field("accessLogs"))
	}
	if v := o.get("synProxyAnswers"); v != nil {
		p.synProxyAnswers(v, o.field("synProxyAnswers"), s)
	}
	if v := o.get("neverBan"); v != nil {
		p.cidrs(v, o.field("neverBan"), "a CIDR such as 192.0.2.53/32", func(pfx netip.Prefix, it *yaml.Node, _ int, f string) {
			if len(s.NeverBan) >= maxNeverBan {
				if len(s.NeverBan) == maxNeverBan {
					p.errAt(it, f, "more than %d entries: name networks, not hosts", maxNeverBan)
				}
				return
			}
			s.NeverBan = append(s.NeverBan, pfx)
		})
	}
}

// synProxyAnswers reads spec.synProxyAnswers, a count like connections
// (200/s or {rate, burst}). Unlike a limit it cannot be left out to mean
// none: a zero rate is refused with that said.
func (p *parser) synProxyAnswers(v *yaml.Node, field string, s *Spec) {
	rn := resolve(v)
	if rn.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(rn.Content); i += 2 {
			if rn.Content[i].Value == "rate" {
				rn = resolve(rn.Content[i+1])
			}
		}
	}
	if rn.Kind == yaml.ScalarNode {
		if r, err := parseRate(strings.TrimSpace(rn.Value), unitConns); err == nil && !r.Limited() || err != nil && strings.Contains(err.Error(), "is zero") {
			p.errAt(rn, field, "%q is zero: the bound on SYN-ACKs per source cannot be turned off (leave synProxyAnswers out for the default, %s)",
				rn.Value, formatRate(Rate(loader.DefaultSynProxyAnswers), unitConns))
			return
		}
	}
	s.SynProxyAnswers, _ = p.rate(v, field, unitConns)
}

// maxNeverBan bounds spec.neverBan: every ban decision checks it.
const maxNeverBan = 1024

// keyNode finds spec.<key>.<family> for an error position, or the spec itself.
func (p *parser) keyNode(o object, key, family string) *yaml.Node {
	if k := resolve(o.get(key)); k != nil && k.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(k.Content); i += 2 {
			if k.Content[i].Value == family {
				return k.Content[i+1]
			}
		}
		return k
	}
	return o.node
}

// keyLengths reads {ipv4: N, ipv6: N}; ok4 and ok6 say whether each family's
// value (given or default) is valid.
func (p *parser) keyLengths(spec object, key string, k *KeyLengths) (ok4, ok6 bool) {
	n := spec.get(key)
	if n == nil {
		return true, true
	}
	o, ok := p.mapping(n, spec.field(key), "ipv4", "ipv6")
	if !ok {
		return false, false
	}
	ok4, ok6 = true, true
	if v := o.get("ipv4"); v != nil {
		var b uint64
		if b, ok4 = p.count(v, o.field("ipv4"), 1, 32); ok4 {
			k.IPv4 = uint8(b)
		}
	}
	if v := o.get("ipv6"); v != nil {
		var b uint64
		if b, ok6 = p.count(v, o.field("ipv6"), 1, 128); ok6 {
			k.IPv6 = uint8(b)
		}
	}
	return ok4, ok6
}

func (p *parser) addSource(s listSource) int32 {
	p.sources = append(p.sources, s)
	return int32(len(p.sources) - 1)
}

func (p *parser) inlineList(n *yaml.Node, field string, kind listKind) {
	src := int32(-1)
	p.cidrs(n, field, "a CIDR such as 192.0.2.0/24", func(pfx netip.Prefix, it *yaml.Node, i int, _ string) {
		if src < 0 {
			src = p.addSource(listSource{file: p.file, field: field, inline: true})
		}
		p.entries = append(p.entries, entry{pfx: pfx, kind: kind, src: src, line: int32(it.Line), idx: int32(i)})
	})
}

// cidrs reads a YAML list of CIDRs, reporting each bad item at its line, and
// hands every good one to add with its node, index and field path.
func (p *parser) cidrs(n *yaml.Node, field, example string, add func(pfx netip.Prefix, it *yaml.Node, i int, f string)) {
	items, ok := p.list(n, field)
	if !ok {
		return
	}
	for i, it := range items {
		it = resolve(it)
		f := fmt.Sprintf("%s[%d]", field, i)
		s, ok := p.scalar(it, f, example)
		if !ok {
			continue
		}
		pfx, err := parseCIDR(strings.TrimSpace(s))
		if err != nil {
			p.errAt(it, f, "%v", err)
			continue
		}
		add(pfx, it, i, f)
	}
}

// listPath is how a list file is named in messages: relative to the policy's
// directory, which is where LoadFile reads it from.
func (p *parser) listPath(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(filepath.Dir(p.file), name)
}

func (p *parser) fileLists(n *yaml.Node, field string, kind listKind) []string {
	return p.listFiles(n, field, func(f, name string, data []byte) {
		src := p.addSource(listSource{file: p.listPath(name), field: f})
		p.listEntries(data, kind, src)
	})
}

// listFiles reads the list files named in the field at n: it returns every
// name, as written, and hands each one named once, not empty and readable to
// read with its field and contents. A name twice, an empty one or one that
// cannot be read is an error at its line.
func (p *parser) listFiles(n *yaml.Node, field string, read func(f, name string, data []byte)) []string {
	items, ok := p.list(n, field)
	if !ok {
		return nil
	}
	var names []string
	seen := map[string]int{}
	for i, it := range items {
		it = resolve(it)
		f := fmt.Sprintf("%s[%d]", field, i)
		name, ok := p.str(it, f)
		if !ok {
			continue
		}
		names = append(names, name)
		if line, dup := seen[name]; dup {
			p.errAt(it, f, "%s is named twice (first at line %d)", name, line)
			continue
		}
		seen[name] = it.Line
		if name == "" {
			p.errAt(it, f, "empty file name")
			continue
		}
		if data, ok := p.readList(it, f, name); ok {
			read(f, name, data)
		}
	}
	return names
}

// readList reads the list file name (named at it, field f), within what is
// left of MaxListBytes for this policy.
func (p *parser) readList(it *yaml.Node, f, name string) ([]byte, bool) {
	if p.readFile == nil {
		p.errAt(it, f, "cannot read list file %s: no file access here", name)
		return nil, false
	}
	if p.listBytes > MaxListBytes {
		p.errAt(it, f, "not read: the list files before it already hold more than %s", safefile.Size(MaxListBytes))
		return nil, false
	}
	data, err := p.readFile(name)
	if err != nil {
		p.errAt(it, f, "read list file: %v", err)
		return nil, false
	}
	p.listBytes += int64(len(data))
	if p.listBytes > MaxListBytes {
		p.errAt(it, f, "the list files of a policy hold at most %s together; with %s this one passes that", safefile.Size(MaxListBytes), p.listPath(name))
		return nil, false
	}
	return data, true
}

// rateKeys are the keys of a limit block, in the order they are reported.
var limitKinds = []struct {
	key  string
	kind unitKind
}{{"packets", unitPackets}, {"bytes", unitBytes}, {"connections", unitConns}}

// portClaim is a range of ports a service claims, for finding overlaps.
type portClaim struct {
	proto       Protocol
	first, last uint16
	svc         int
	node        *yaml.Node
	field       string
}

func (p *parser) services(n *yaml.Node, field string) []Service {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errAt(n, field, "expected a list of services, found %s", describe(n))
		return nil
	}
	items := n.Content
	if len(items) > MaxServices {
		// the rest are not even read: each could cost as much as all the others
		p.errAt(n, field, "%d services; the datapath holds at most %d (only the first %d are checked)", len(items), MaxServices, MaxServices)
		items = items[:MaxServices]
	}
	var out []Service
	var claims []portClaim
	names := map[string]int{} // name -> line
	for i, it := range items {
		f := fmt.Sprintf("%s[%d]", field, i)
		svc, nameNode, ok := p.service(it, f, i, &claims)
		if nameNode != nil && svc.Name != "" {
			if line, dup := names[svc.Name]; dup {
				p.errAt(nameNode, f+".name", "service %q is defined twice (first at line %d)", svc.Name, line)
				ok = false
			} else {
				names[svc.Name] = nameNode.Line
			}
		}
		if ok {
			out = append(out, svc)
		}
	}
	p.checkPorts(claims, items)
	return out
}

func (p *parser) service(n *yaml.Node, field string, idx int, claims *[]portClaim) (Service, *yaml.Node, bool) {
	svc := Service{Protocol: TCP, Mode: Enforce, SynProxy: SynProxyOff}
	o, ok := p.mapping(n, field, "name", "protocol", "ports", "mode", "limits",
		"allowFrom", "allowFromFiles", "maxConnections", "fragments", "synProxy")
	if !ok {
		return svc, nil, false
	}
	before := len(p.errs)
	nameNode := o.get("name")
	if nameNode == nil {
		p.errAt(o.node, o.field("name"), "missing; every service has a name")
	} else {
		nameNode = resolve(nameNode)
		svc.Name, _ = p.checkName(nameNode, o.field("name"))
	}
	if v := o.get("protocol"); v != nil {
		if s, ok := p.enum(v, o.field("protocol"), "tcp", "udp"); ok {
			svc.Protocol = Protocol(s)
		}
	}
	if v := o.get("mode"); v != nil {
		if s, ok := p.enum(v, o.field("mode"), "enforce", "monitor"); ok {
			svc.Mode = Mode(s)
		}
	}
	if v := o.get("ports"); v == nil {
		p.errAt(o.node, o.field("ports"), "missing; a service needs at least one port")
	} else {
		svc.Ports = p.ports(v, o.field("ports"), svc.Protocol, idx, claims)
	}
	if v := o.get("limits"); v != nil {
		p.limits(v, o.field("limits"), &svc)
	}
	if v := o.get("fragments"); v != nil {
		// a count of packets, with the syntax and checks of a packets limit
		svc.Fragments, _ = p.rate(v, o.field("fragments"), unitPackets)
	}
	p.serviceConns(o, &svc)
	if v := o.get("synProxy"); v != nil {
		p.synProxy(v, o.field("synProxy"), &svc)
	}
	return svc, nameNode, len(p.errs) == before
}

// synProxy reads a service's synProxy mode: the SYN proxy answers TCP
// handshakes, and auto turns on when the total connection budget runs out,
// so it needs one.
func (p *parser) synProxy(v *yaml.Node, field string, svc *Service) {
	s, ok := p.enum(v, field, "off", "auto", "always")
	if !ok {
		return
	}
	mode := SynProxyMode(s)
	switch {
	case mode == SynProxyOff:
	case svc.Protocol != TCP:
		p.errAt(resolve(v), field, "%s needs a TCP service: the proxy answers TCP handshakes", s)
	case mode == SynProxyAuto && svc.Total.Connections.PerSecond == 0:
		p.errAt(resolve(v), field, "auto turns the proxy on when the service's total connections limit runs out: set limits.total.connections, or use always")
	}
	svc.SynProxy = mode
}

// ports reads a port, a "first-last" range, or a list of them.
func (p *parser) ports(n *yaml.Node, field string, proto Protocol, svc int, claims *[]portClaim) []PortRange {
	items, ok := p.list(n, field)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.errAt(resolve(n), field, "empty; a service needs at least one port")
		return nil
	}
	var out []PortRange
	for i, it := range items {
		it = resolve(it)
		f := fmt.Sprintf("%s[%d]", field, i)
		s, ok := p.scalar(it, f, "a port (443) or a range (\"8000-8100\")")
		if !ok {
			continue
		}
		r, err := parsePortRange(s)
		if err != nil {
			p.errAt(it, f, "%v", err)
			continue
		}
		out = append(out, r)
		*claims = append(*claims, portClaim{proto: proto, first: r.First, last: r.Last, svc: svc, node: it, field: f})
	}
	return out
}

func parsePortRange(s string) (PortRange, error) {
	a, b, isRange := strings.Cut(s, "-")
	first, err := parsePort(strings.TrimSpace(a), s)
	if err != nil {
		return PortRange{}, err
	}
	last := first
	if isRange {
		if last, err = parsePort(strings.TrimSpace(b), s); err != nil {
			return PortRange{}, err
		}
		if first > last {
			return PortRange{}, fmt.Errorf("range %q is reversed; write %d-%d", s, last, first)
		}
	}
	return PortRange{First: first, Last: last}, nil
}

func parsePort(s, whole string) (uint16, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		if s == "" || strings.TrimLeft(s, "0123456789") != "" {
			return 0, fmt.Errorf("%q is not a port or a range like 8000-8100", whole)
		}
		return 0, fmt.Errorf("port %s is outside 1–65535", s)
	}
	if v < 1 || v > 65535 {
		return 0, fmt.Errorf("port %d is outside 1–65535", v)
	}
	return uint16(v), nil
}

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// checkPorts reports ports claimed twice, by one service or by two, with a
// sweep over the claims sorted by first port.
func (p *parser) checkPorts(claims []portClaim, svcNodes []*yaml.Node) {
	slices.SortStableFunc(claims, func(a, b portClaim) int {
		if a.proto != b.proto {
			return strings.Compare(string(a.proto), string(b.proto))
		}
		return int(a.first) - int(b.first)
	})
	holder := -1 // the claim reaching furthest so far in this protocol
	for i, c := range claims {
		if holder >= 0 && claims[holder].proto != c.proto {
			holder = -1
		}
		if holder >= 0 && c.first <= claims[holder].last {
			h := claims[holder]
			overlap := PortRange{First: c.first, Last: min(c.last, h.last)}
			what := "port " + overlap.String()
			if overlap.First != overlap.Last {
				what = "ports " + overlap.String()
			}
			verb := "belongs"
			if overlap.First != overlap.Last {
				verb = "belong"
			}
			if h.svc == c.svc {
				p.errAt(c.node, c.field, "%s/%s is listed twice in this service (also %s, line %d)", what, c.proto, h.field, h.node.Line)
			} else {
				p.errAt(c.node, c.field, "%s/%s already %s to service %s (%s, line %d)", what, c.proto, verb, p.serviceLabel(svcNodes, h.svc), h.field, h.node.Line)
			}
		}
		if holder < 0 || c.last > claims[holder].last {
			holder = i
		}
	}
}

// serviceLabel is a service's name as written, or its position.
func (p *parser) serviceLabel(svcNodes []*yaml.Node, idx int) string {
	n := resolve(svcNodes[idx])
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "name" {
				if v := resolve(n.Content[i+1]); v.Kind == yaml.ScalarNode {
					return strconv.Quote(v.Value)
				}
			}
		}
	}
	return fmt.Sprintf("#%d", idx)
}

func (p *parser) limits(n *yaml.Node, field string, svc *Service) {
	o, ok := p.mapping(n, field, "client", "prefix", "total")
	if !ok {
		return
	}
	for _, lvl := range []struct {
		key string
		l   *Limits
	}{{"client", &svc.Client}, {"prefix", &svc.Prefix}, {"total", &svc.Total}} {
		v := o.get(lvl.key)
		if v == nil {
			continue
		}
		lo, ok := p.mapping(v, o.field(lvl.key), "packets", "bytes", "connections")
		if !ok {
			continue
		}
		for _, k := range limitKinds {
			rn := lo.get(k.key)
			if rn == nil {
				continue
			}
			if k.kind == unitConns && svc.Protocol == UDP {
				p.errAt(resolve(rn), lo.field(k.key), "connections count TCP SYNs; a udp service has none (limit packets instead)")
				continue
			}
			r, ok := p.rate(rn, lo.field(k.key), k.kind)
			if !ok {
				continue
			}
			switch k.kind {
			case unitPackets:
				lvl.l.Packets = r
			case unitBytes:
				lvl.l.Bytes = r
			case unitConns:
				lvl.l.Connections = r
			}
		}
	}
}

// rate reads {rate: 200/s, burst: 400}, or the short form "200/s" with the default burst.
func (p *parser) rate(n *yaml.Node, field string, k unitKind) (Rate, bool) {
	n = resolve(n)
	rateNode, burstNode := n, (*yaml.Node)(nil)
	rateField := field
	if n.Kind != yaml.ScalarNode {
		o, ok := p.mapping(n, field, "rate", "burst")
		if !ok {
			return Rate{}, false
		}
		rateNode, burstNode = o.get("rate"), o.get("burst")
		rateField = o.field("rate")
		if rateNode == nil {
			p.errAt(o.node, rateField, "missing; a limit needs a rate (leave the whole limit out for no limit)")
			return Rate{}, false
		}
	}
	s, ok := p.scalar(rateNode, rateField, "a rate such as 200/s")
	if !ok {
		return Rate{}, false
	}
	r, err := parseRate(strings.TrimSpace(s), k)
	if err != nil {
		p.errAt(resolve(rateNode), rateField, "%v", err)
		return Rate{}, false
	}
	r.Burst = defaultBurst(r, k)
	if burstNode == nil {
		return r, true
	}
	burstField := join(field, "burst")
	bs, ok := p.scalar(burstNode, burstField, "a burst such as 400")
	if !ok {
		return Rate{}, false
	}
	b, err := parseBurst(strings.TrimSpace(bs), k)
	if err != nil {
		p.errAt(resolve(burstNode), burstField, "%v", err)
		return Rate{}, false
	}
	if b < k.minBurst() {
		if k == unitBytes {
			p.errAt(resolve(burstNode), burstField, "%s is below %d bytes, one full Ethernet frame: a smaller bucket could never admit a full-size packet", bs, MinBytesBurst)
		} else {
			p.errAt(resolve(burstNode), burstField, "%s is below 1: the bucket must hold at least one %s", bs, singular(k))
		}
		return Rate{}, false
	}
	r.Burst = b
	return r, true
}

func (p *parser) detection(n *yaml.Node, d *Detection) {
	o, ok := p.mapping(n, "spec.detection", "flood", "syn-flood", "scan", "deny-probe", "bad-flags", "aggregate",
		"auth-failures", "enumeration", "app-throttled", "error-burst", "injection-probe", "sensitive-files", "scanner-agent")
	if !ok {
		return
	}
	p.apiDetection(o, d)
	if v := o.get("flood"); v != nil {
		f := o.field("flood")
		if do, ok := p.packetDetector(v, f, &d.Flood.Detector, "limitedFor"); ok {
			if x := do.get("limitedFor"); x != nil {
				if dur, ok := p.duration(x, do.field("limitedFor")); ok {
					d.Flood.LimitedFor = dur
				}
			}
			if d.Flood.LimitedFor <= 0 || d.Flood.LimitedFor > d.Flood.Window {
				p.errAt(p.nodeOr(do, "limitedFor"), do.field("limitedFor"), "%s must be above zero and at most the window (%s)", durationString(d.Flood.LimitedFor), durationString(d.Flood.Window))
			}
		}
	}
	p.thresholdDetector(o, true, "syn-flood", &d.SYNFlood.Detector, "syns", &d.SYNFlood.SYNs)
	p.thresholdDetector(o, true, "scan", &d.Scan.Detector, "ports", &d.Scan.Ports)
	p.thresholdDetector(o, true, "deny-probe", &d.DenyProbe.Detector, "hits", &d.DenyProbe.Hits)
	p.thresholdDetector(o, true, "bad-flags", &d.BadFlags.Detector, "packets", &d.BadFlags.Packets)
	if v := o.get("aggregate"); v != nil {
		a := &d.Aggregate
		if do, ok := p.packetDetector(v, o.field("aggregate"), &a.Detector, "share", "minClients", "minEvents"); ok {
			if x := do.get("share"); x != nil {
				if f, ok := p.fraction(x, do.field("share")); ok {
					a.Share = f
				}
			}
			if x := do.get("minClients"); x != nil {
				if c, ok := p.count(x, do.field("minClients"), 1, math.MaxUint32); ok {
					a.MinClients = c
				}
			}
			if x := do.get("minEvents"); x != nil {
				if c, ok := p.count(x, do.field("minEvents"), 1, math.MaxUint32); ok {
					a.MinEvents = c
				}
			}
		}
	}
}

// nodeOr is o's value for key, or o itself, for error positions.
func (p *parser) nodeOr(o object, key string) *yaml.Node {
	if v := o.get(key); v != nil {
		return resolve(v)
	}
	return o.node
}

const maxWindow = 24 * time.Hour

// detector reads the settings every detector has, plus the extra keys given.
func (p *parser) detector(n *yaml.Node, field string, d *Detector, extra ...string) (object, bool) {
	o, ok := p.mapping(n, field, append([]string{"enabled", "action", "window"}, extra...)...)
	if !ok {
		return o, false
	}
	if v := o.get("enabled"); v != nil {
		if b, ok := p.boolean(v, o.field("enabled")); ok {
			d.Enabled = b
		}
	}
	if v := o.get("action"); v != nil {
		if a, ok := p.enum(v, o.field("action"), "flag", "ban"); ok {
			d.Action = DetectAction(a)
		}
	}
	if v := o.get("window"); v != nil {
		if w, ok := p.duration(v, o.field("window")); ok {
			if w < time.Second || w > maxWindow {
				p.errAt(resolve(v), o.field("window"), "%s is outside 1s–24h", durationString(w))
			} else {
				d.Window = w
			}
		}
	}
	return o, true
}

// packetDetector reads a packet detector: one whose evidence is packets, and
// which may be told to ban unproven sources.
func (p *parser) packetDetector(n *yaml.Node, field string, d *Detector, extra ...string) (object, bool) {
	o, ok := p.detector(n, field, d, append([]string{"banUnproven"}, extra...)...)
	if !ok {
		return o, false
	}
	if v := o.get("banUnproven"); v != nil {
		if b, ok := p.boolean(v, o.field("banUnproven")); ok {
			d.BanUnproven = b
		}
	}
	return o, true
}

// thresholdDetector reads a detector with one threshold; packet says whether
// its evidence is packets (packetDetector).
func (p *parser) thresholdDetector(parent object, packet bool, key string, d *Detector, threshold string, into *uint64) {
	v := parent.get(key)
	if v == nil {
		return
	}
	read := p.detector
	if packet {
		read = p.packetDetector
	}
	o, ok := read(v, parent.field(key), d, threshold)
	if !ok {
		return
	}
	if x := o.get(threshold); x != nil {
		if c, ok := p.count(x, o.field(threshold), 1, math.MaxUint32); ok {
			*into = c
		}
	}
}

// fraction reads a share in (0, 1].
func (p *parser) fraction(n *yaml.Node, field string) (float64, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && (n.Tag == "!!float" || n.Tag == "!!int") {
		f, err := strconv.ParseFloat(n.Value, 64)
		if err == nil && f > 0 && f <= 1 {
			return f, true
		}
	}
	p.errAt(n, field, "expected a share above 0 and at most 1 (such as 0.5), found %s", describe(n))
	return 0, false
}

func (p *parser) bans(n *yaml.Node, b *Bans) {
	o, ok := p.mapping(n, "spec.bans", "ttl", "maxTTL", "growth", "forgetAfter", "proofTTL", "maxPerMinute")
	if !ok {
		return
	}
	if x := o.get("maxPerMinute"); x != nil {
		if c, ok := p.count(x, o.field("maxPerMinute"), 1, 100000); ok {
			b.MaxPerMinute = c
		}
	}
	for _, d := range []struct {
		key string
		v   *time.Duration
	}{{"ttl", &b.TTL}, {"maxTTL", &b.MaxTTL}, {"forgetAfter", &b.ForgetAfter}, {"proofTTL", &b.ProofTTL}} {
		if x := o.get(d.key); x != nil {
			if dur, ok := p.duration(x, o.field(d.key)); ok {
				switch {
				case dur < time.Second:
					p.errAt(resolve(x), o.field(d.key), "%v is below 1s", dur)
				case dur > loader.MaxBanTTL && (d.key == "ttl" || d.key == "maxTTL"):
					// a ban's expiry lives in the kernel as a 64-bit
					// nanosecond clock; ten years is the longest it takes
					p.errAt(resolve(x), o.field(d.key), "%s is above %s, the longest ban with an expiry", durationString(dur), durationString(loader.MaxBanTTL))
				default:
					*d.v = dur
				}
			}
		}
	}
	if x := o.get("growth"); x != nil {
		x = resolve(x)
		f, err := strconv.ParseFloat(x.Value, 64)
		if x.Kind != yaml.ScalarNode || (x.Tag != "!!float" && x.Tag != "!!int") || err != nil || f < 1 || f > 100 {
			p.errAt(x, o.field("growth"), "expected a factor from 1 (no growth) to 100, found %s", describe(x))
		} else {
			b.Growth = f
		}
	}
	if b.MaxTTL < b.TTL {
		p.errAt(p.nodeOr(o, "maxTTL"), o.field("maxTTL"), "%s is below ttl %s", durationString(b.MaxTTL), durationString(b.TTL))
	}
}
