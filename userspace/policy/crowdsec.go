package policy

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// CrowdSec joins the host to a CrowdSec Local API (LAPI): as a bouncer it
// enforces the LAPI's ban decisions, as a signal source it reports the bans
// apiguard's detector makes. Credentials never appear in the policy text:
// the policy names a file or an environment variable that holds them.
type CrowdSec struct {
	// Enabled is true when the policy has a crowdsec section.
	Enabled bool
	LAPI    string // http:// or https:// URL of the LAPI
	TLS     CrowdSecTLS
	Bouncer CrowdSecBouncer
	Report  CrowdSecReport
}

// CrowdSecTLS names the files of an HTTPS connection to the LAPI (absolute,
// or relative to the policy's directory as written). They are read when the
// policy is applied, like the credentials.
type CrowdSecTLS struct {
	// CAFile holds the certificates trusted for the LAPI's (empty: the
	// system's roots).
	CAFile string
	// CertFile and KeyFile are a client certificate and its key, both or
	// neither. With them the bouncer needs no API key: CrowdSec can know a
	// bouncer by its certificate.
	CertFile, KeyFile string
}

// Secret names where a credential is read from: a file (its first line,
// surrounding space trimmed) or an environment variable. Exactly one is set.
type Secret struct {
	File string // absolute, or relative to the policy's directory as written
	Env  string
}

func (s Secret) String() string {
	if s.File != "" {
		return "file " + s.File
	}
	if s.Env != "" {
		return "env " + s.Env
	}
	return "none"
}

// CrowdSecBouncer configures the pull of decisions.
type CrowdSecBouncer struct {
	Enabled      bool
	APIKey       Secret
	PollInterval time.Duration
	// Scopes are the LAPI scopes enforced: "Ip" and/or "Range".
	Scopes []string
	// Origins limits the decisions to these origins (empty: all).
	Origins []string
	// MinPrefix is the broadest range enforced per family; a broader
	// decision is refused and counted.
	MinPrefix KeyLengths
}

// CrowdSecReport configures the reports of the detector's bans.
type CrowdSecReport struct {
	Enabled bool
	// CredentialsFile is a file as `cscli machines add -f` writes it (login
	// and password); otherwise MachineID and Password name where those are.
	CredentialsFile string
	MachineID       Secret
	Password        Secret
	// BanDuration is the duration of the decision sent; zero sends each
	// local ban's own duration.
	BanDuration time.Duration
}

// Defaults of the crowdsec section.
const (
	DefaultCrowdSecPoll = 10 * time.Second
	// A decision broader than these is refused (crowdsec.DefaultMinPrefix4/6).
	DefaultCrowdSecMinPrefix4 = 16
	DefaultCrowdSecMinPrefix6 = 32
	minCrowdSecPoll           = time.Second
	maxCrowdSecPoll           = time.Hour
	minReportBan              = time.Minute
	maxReportBan              = 30 * 24 * time.Hour
)

var (
	envName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	originName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)
)

// secretKeys reads <base>File / <base>Env from o into s; inline is the key a
// user might write the secret under, refused with a pointer to the others.
func (p *parser) secret(o object, base, inline string, s *Secret, required bool) {
	if v := o.get(inline); v != nil {
		p.errAt(resolve(v), o.field(inline), "credentials never go in the policy text (policies are shown, diffed and copied): use %sFile or %sEnv", base, base)
	}
	fileN, envN := o.get(base+"File"), o.get(base+"Env")
	if fileN != nil {
		if f, ok := p.str(fileN, o.field(base+"File")); ok {
			if strings.TrimSpace(f) == "" {
				p.errAt(resolve(fileN), o.field(base+"File"), "empty file name")
			} else {
				s.File = p.listPath(f)
			}
		}
	}
	if envN != nil {
		if e, ok := p.str(envN, o.field(base+"Env")); ok {
			if !envName.MatchString(e) {
				p.errAt(resolve(envN), o.field(base+"Env"), "%q is not an environment variable name (letters, digits, _; not starting with a digit)", e)
			} else {
				s.Env = e
			}
		}
	}
	switch {
	case fileN != nil && envN != nil:
		p.errAt(resolve(envN), o.field(base+"Env"), "set either %sFile or %sEnv, not both", base, base)
	case fileN == nil && envN == nil && required:
		p.errAt(o.node, o.path, "missing %sFile or %sEnv: where to read the %s from", base, base, base)
	}
}

func (p *parser) crowdsec(n *yaml.Node, c *CrowdSec) {
	o, ok := p.mapping(n, "spec.crowdsec", "lapi", "tls", "bouncer", "report")
	if !ok {
		return
	}
	c.Enabled = true
	var lapi *url.URL
	if v := o.get("lapi"); v != nil {
		if s, ok := p.str(v, o.field("lapi")); ok {
			u, err := url.Parse(s)
			switch {
			case err != nil:
				p.errAt(resolve(v), o.field("lapi"), "%v", err)
			case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
				p.errAt(resolve(v), o.field("lapi"), "%q: want an http:// or https:// URL with a host, such as http://127.0.0.1:8080", s)
			case u.User != nil:
				p.errAt(resolve(v), o.field("lapi"), "credentials never go in the policy text: drop the user part of the URL")
			default:
				c.LAPI, lapi = s, u
			}
		}
	} else {
		p.errAt(o.node, o.field("lapi"), "missing; the URL of the CrowdSec Local API, such as http://127.0.0.1:8080")
	}
	if v := o.get("tls"); v != nil {
		p.crowdsecTLS(v, &c.TLS)
		if lapi != nil && lapi.Scheme != "https" {
			p.errAt(resolve(v), o.field("tls"), "set, but lapi %s is not https://", c.LAPI)
		}
	}
	if lapi != nil && lapi.Scheme == "http" && !crowdsecLoopback(lapi.Hostname()) {
		p.warnAt(resolve(o.get("lapi")), o.field("lapi"), "plain HTTP to %s, which is not this host: anyone on the path can read the bouncer's API key and the machine's password, and inject decisions that ban any address; use https:// (with tls.caFile)", lapi.Host)
	}
	bouncerSet, reportSet := false, false
	if v := o.get("bouncer"); v != nil {
		bouncerSet = true
		p.crowdsecBouncer(v, &c.Bouncer, c.TLS.CertFile != "")
	}
	if v := o.get("report"); v != nil {
		reportSet = true
		p.crowdsecReport(v, &c.Report)
	}
	if !bouncerSet && !reportSet {
		p.errAt(o.node, "spec.crowdsec", "neither bouncer nor report is set: nothing to do with the LAPI")
	}
}

// crowdsecLoopback: localhost or a loopback address. Any other name may
// resolve anywhere (crowdsec.IsLoopback says the same at run time).
func crowdsecLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func (p *parser) crowdsecTLS(n *yaml.Node, t *CrowdSecTLS) {
	o, ok := p.mapping(n, "spec.crowdsec.tls", "caFile", "certFile", "keyFile")
	if !ok {
		return
	}
	for _, f := range []struct {
		key string
		to  *string
	}{{"caFile", &t.CAFile}, {"certFile", &t.CertFile}, {"keyFile", &t.KeyFile}} {
		if v := o.get(f.key); v != nil {
			if s, ok := p.str(v, o.field(f.key)); ok {
				if strings.TrimSpace(s) == "" {
					p.errAt(resolve(v), o.field(f.key), "empty file name")
				} else {
					*f.to = p.listPath(s)
				}
			}
		}
	}
	if (o.get("certFile") == nil) != (o.get("keyFile") == nil) {
		p.errAt(o.node, o.path, "certFile and keyFile go together: a client certificate and its key")
	}
}

func (p *parser) crowdsecBouncer(n *yaml.Node, b *CrowdSecBouncer, certAuth bool) {
	o, ok := p.mapping(n, "spec.crowdsec.bouncer", "enabled", "apiKey", "apiKeyFile", "apiKeyEnv", "pollInterval", "scopes", "origins", "minPrefix")
	if !ok {
		return
	}
	b.Enabled = true
	b.PollInterval = DefaultCrowdSecPoll
	b.Scopes = []string{"Ip", "Range"}
	b.MinPrefix = KeyLengths{IPv4: DefaultCrowdSecMinPrefix4, IPv6: DefaultCrowdSecMinPrefix6}
	if v := o.get("enabled"); v != nil {
		if e, ok := p.boolean(v, o.field("enabled")); ok {
			b.Enabled = e
		}
	}
	// a client certificate can stand for the key
	p.secret(o, "apiKey", "apiKey", &b.APIKey, b.Enabled && !certAuth)
	p.keyLengths(o, "minPrefix", &b.MinPrefix)
	if v := o.get("pollInterval"); v != nil {
		if d, ok := p.duration(v, o.field("pollInterval")); ok {
			if d < minCrowdSecPoll || d > maxCrowdSecPoll {
				p.errAt(resolve(v), o.field("pollInterval"), "%s is outside 1s–1h", durationString(d))
			} else {
				b.PollInterval = d
			}
		}
	}
	if v := o.get("scopes"); v != nil {
		if items, ok := p.list(v, o.field("scopes")); ok {
			var scopes []string
			seen := map[string]bool{}
			for i, it := range items {
				f := fmt.Sprintf("%s[%d]", o.field("scopes"), i)
				s, ok := p.enum(it, f, "ip", "range")
				if !ok {
					continue
				}
				if seen[s] {
					p.errAt(resolve(it), f, "%q is listed twice", s)
					continue
				}
				seen[s] = true
				scopes = append(scopes, map[string]string{"ip": "Ip", "range": "Range"}[s])
			}
			if len(items) == 0 {
				p.errAt(resolve(v), o.field("scopes"), "empty: list ip, range or both")
			}
			b.Scopes = scopes
		}
	}
	if v := o.get("origins"); v != nil {
		if items, ok := p.list(v, o.field("origins")); ok {
			seen := map[string]bool{}
			for i, it := range items {
				f := fmt.Sprintf("%s[%d]", o.field("origins"), i)
				s, ok := p.str(it, f)
				if !ok {
					continue
				}
				if !originName.MatchString(s) {
					p.errAt(resolve(it), f, "%q is not an origin name (such as crowdsec, cscli, CAPI, lists)", s)
					continue
				}
				if seen[s] {
					p.errAt(resolve(it), f, "%q is listed twice", s)
					continue
				}
				seen[s] = true
				b.Origins = append(b.Origins, s)
			}
		}
	}
}

func (p *parser) crowdsecReport(n *yaml.Node, r *CrowdSecReport) {
	o, ok := p.mapping(n, "spec.crowdsec.report", "enabled", "credentialsFile", "machineID", "machineIDFile", "machineIDEnv",
		"password", "passwordFile", "passwordEnv", "banDuration")
	if !ok {
		return
	}
	r.Enabled = true
	if v := o.get("enabled"); v != nil {
		if e, ok := p.boolean(v, o.field("enabled")); ok {
			r.Enabled = e
		}
	}
	credN := o.get("credentialsFile")
	if credN != nil {
		if f, ok := p.str(credN, o.field("credentialsFile")); ok && strings.TrimSpace(f) != "" {
			r.CredentialsFile = p.listPath(f)
		} else if ok {
			p.errAt(resolve(credN), o.field("credentialsFile"), "empty file name")
		}
	}
	// with a credentials file, the id and password come from it
	need := r.Enabled && credN == nil
	p.secret(o, "machineID", "machineID", &r.MachineID, need)
	p.secret(o, "password", "password", &r.Password, need)
	if credN != nil && (r.MachineID != Secret{} || r.Password != Secret{}) {
		p.errAt(resolve(credN), o.field("credentialsFile"), "set either credentialsFile or machineID and password, not both")
	}
	if v := o.get("banDuration"); v != nil {
		if d, ok := p.duration(v, o.field("banDuration")); ok {
			if d < minReportBan || d > maxReportBan {
				p.errAt(resolve(v), o.field("banDuration"), "%s is outside 1m–720h", durationString(d))
			} else {
				r.BanDuration = d
			}
		}
	}
}

// summary is one line for Diff; it names where credentials come from, never
// the credentials.
func (c CrowdSec) summary() string {
	if !c.Enabled {
		return ""
	}
	s := "lapi " + c.LAPI
	if c.TLS.CAFile != "" {
		s += ", CA " + c.TLS.CAFile
	}
	if c.TLS.CertFile != "" {
		s += ", client certificate " + c.TLS.CertFile
	}
	if c.Bouncer.Enabled {
		s += fmt.Sprintf("; bouncer key from %v every %s, scopes %s, ranges up to /%d and /%d", c.Bouncer.APIKey, durationString(c.Bouncer.PollInterval),
			strings.Join(c.Bouncer.Scopes, ","), c.Bouncer.MinPrefix.IPv4, c.Bouncer.MinPrefix.IPv6)
		if len(c.Bouncer.Origins) > 0 {
			s += ", origins " + strings.Join(c.Bouncer.Origins, ",")
		}
	}
	if c.Report.Enabled {
		s += "; report"
		if c.Report.CredentialsFile != "" {
			s += " as in " + c.Report.CredentialsFile
		} else {
			s += fmt.Sprintf(" as machine from %v, password from %v", c.Report.MachineID, c.Report.Password)
		}
		if c.Report.BanDuration > 0 {
			s += ", bans " + durationString(c.Report.BanDuration)
		}
	}
	return s
}
