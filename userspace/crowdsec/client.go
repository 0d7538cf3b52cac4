// Package crowdsec joins apiguard to CrowdSec's Local API (LAPI) in two roles:
// a bouncer, which pulls the LAPI's ban decisions and enforces them in the
// kernel's ban maps, and a signal source, which reports the clients apiguard's
// detector bans so that every other bouncer of the LAPI bans them too.
//
// It speaks the LAPI's HTTP API (version 1.4.6 and later) with net/http: the
// two endpoints on each side are small, and CrowdSec's Go libraries target
// newer LAPIs and bring dozens of modules.
package crowdsec

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxBody bounds what is read of one LAPI response. A startup pull of 100k
// decisions is about 15 MB of JSON; this leaves room for several times that.
const maxBody = 256 << 20

// maxDecisions bounds the decisions of one answer: twice what the kernel's
// ban maps hold (262,144 prefixes per family). Decoded, a decision costs a
// hundred bytes or so whatever its size in the answer: `{}`, three bytes, is
// one, so 256 MiB of them would take some 9 GB without a count.
const maxDecisions = 1 << 20

// maxField bounds each text a decision keeps. An address or range, a type, a
// scope, a duration and an origin are short; a longer one is cut short and
// marked, so that it parses as nothing and is refused, rather than kept whole
// (the origin table keeps its names for the bouncer's life).
const maxField = 256

// errTooLarge is an answer past maxBody.
var errTooLarge = fmt.Errorf("answer larger than %d bytes", maxBody)

// capped reads at most maxBody bytes and fails past them.
type capped struct {
	r io.Reader
	n int64
}

func (c *capped) Read(p []byte) (int, error) {
	if c.n > maxBody {
		return 0, errTooLarge
	}
	p = p[:min(int64(len(p)), maxBody+1-c.n)]
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > maxBody {
		return n, errTooLarge
	}
	return n, err
}

// HTTPError is a LAPI answer with a status other than the one expected.
type HTTPError struct {
	Op      string
	Status  int
	Message string
}

func (e *HTTPError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	hint := ""
	switch {
	case e.Status >= 300 && e.Status <= 399:
		hint = " (apiguard follows no redirect: the credentials would go wherever the answer points; set lapi to the LAPI's own URL)"
	case e.Status == http.StatusForbidden:
		hint = " (is the bouncer API key right? `cscli bouncers list` shows the registered bouncers)"
	case e.Status == http.StatusUnauthorized:
		hint = " (are the machine id and password right, and the machine validated? `cscli machines list`)"
	}
	return fmt.Sprintf("%s: LAPI answered %d: %s%s", e.Op, e.Status, msg, hint)
}

// TLS says how the HTTPS connection to the LAPI is made. It holds the PEM
// contents of the files the policy names, read at every apply, so that a
// renewed certificate takes effect with a reload.
type TLS struct {
	// CA is the certificates trusted for the LAPI's own (empty: the
	// system's roots).
	CA []byte
	// Cert and Key are a client certificate and its key, both or neither.
	// CrowdSec can authenticate a bouncer by its certificate instead of an
	// API key (its bouncers_allowed_ou).
	Cert, Key []byte
}

// requestTimeout bounds one request, a startup pull of 100k decisions included.
const requestTimeout = 60 * time.Second

// NewHTTPClient is the HTTP client the bouncer and the reporter share. It
// goes to the LAPI directly (the HTTP_PROXY variables are not used: a proxy
// would see the API key of a plain-HTTP LAPI), follows no redirect (see
// newClient) and, with t, trusts t.CA and presents t's client certificate.
func NewHTTPClient(t *TLS) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if t != nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if len(t.CA) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(t.CA) {
				return nil, errors.New("LAPI TLS: the CA file holds no PEM certificate")
			}
			cfg.RootCAs = pool
		}
		switch {
		case len(t.Cert) > 0 && len(t.Key) > 0:
			pair, err := tls.X509KeyPair(t.Cert, t.Key)
			if err != nil {
				return nil, fmt.Errorf("LAPI TLS: client certificate and key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		case len(t.Cert) > 0 || len(t.Key) > 0:
			return nil, errors.New("LAPI TLS: a client certificate needs its key, and a key its certificate")
		}
		tr.TLSClientConfig = cfg
	}
	return &http.Client{Timeout: requestTimeout, Transport: tr}, nil
}

// refuseRedirect makes a redirect the answer. Go's client would follow it to
// any host and carry X-Api-Key along (it drops only Authorization and Cookie
// when the host changes), and a 307 would carry the machine's password in the
// login body. The LAPI has no reason to redirect: a redirect is a
// misconfiguration or an attempt to collect credentials.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// IsLoopback reports whether the LAPI URL names this host (localhost or a
// loopback address): only then may plain HTTP be quiet. Any other name may
// resolve anywhere.
func IsLoopback(u *url.URL) bool {
	h := u.Hostname()
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// client is the HTTP side shared by the bouncer and the reporter.
type client struct {
	base *url.URL
	hc   *http.Client
	ua   string
}

func newClient(lapi string, hc *http.Client, version string) (*client, error) {
	u, err := url.Parse(lapi)
	if err != nil {
		return nil, fmt.Errorf("LAPI URL %q: %w", lapi, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("LAPI URL %q: want http:// or https:// and a host", lapi)
	}
	if hc == nil {
		if hc, err = NewHTTPClient(nil); err != nil {
			return nil, err
		}
	}
	// a copy: the caller's client keeps its own policy, this one follows
	// no redirect whatever it was given
	own := *hc
	own.CheckRedirect = refuseRedirect
	if version == "" {
		version = "dev"
	}
	return &client{base: u, hc: &own, ua: "apiguard/" + version}, nil
}

func (c *client) url(path string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = q.Encode()
	return u.String()
}

// do sends a request and decodes a 2xx JSON answer into out.
func (c *client) do(ctx context.Context, op, method, u string, hdr http.Header, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s: encode request: %w", op, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.ua)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	answer := &capped{r: resp.Body}
	if sd, ok := out.(streamDecoder); ok && resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		// decoded as it comes: never the whole answer and all its decisions
		if err := sd.decode(answer); err != nil {
			if errors.Is(err, errTooLarge) {
				return fmt.Errorf("%s: %w", op, err)
			}
			return fmt.Errorf("%s: the LAPI's answer is not the expected JSON: %w", op, err)
		}
		return nil
	}
	data, err := io.ReadAll(answer)
	if errors.Is(err, errTooLarge) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err != nil {
		return fmt.Errorf("%s: read answer: %w", op, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var m struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &m) != nil || m.Message == "" {
			m.Message = strings.TrimSpace(string(data[:min(len(data), 200)]))
		}
		if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode <= 399 {
			m.Message = fmt.Sprintf("a redirect to %.200q", loc)
		}
		return &HTTPError{Op: op, Status: resp.StatusCode, Message: m.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: the LAPI's answer is not the expected JSON: %w", op, err)
	}
	return nil
}

// Decision is one LAPI decision as the stream carries it.
type Decision struct {
	ID       int64  `json:"id"`
	Origin   string `json:"origin"`
	Scenario string `json:"scenario"`
	Scope    string `json:"scope"`
	Type     string `json:"type"`
	Value    string `json:"value"`
	Duration string `json:"duration"`
}

// streamAnswer is GET /v1/decisions/stream; either list may be null.
type streamAnswer struct {
	New     []Decision `json:"new"`
	Deleted []Decision `json:"deleted"`
}

// streamDecoder is an answer that do decodes as it reads it.
type streamDecoder interface {
	decode(r io.Reader) error
}

// decode reads {"new": [...], "deleted": [...]} one decision at a time: at
// most maxDecisions of them, each text cut to maxField. Other keys are read
// and dropped.
func (a *streamAnswer) decode(r io.Reader) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	n := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var list *[]Decision
		switch {
		case strings.EqualFold(key, "new"):
			list = &a.New
		case strings.EqualFold(key, "deleted"):
			list = &a.Deleted
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
			continue
		}
		if tok, err = dec.Token(); err != nil {
			return err
		}
		if tok == nil {
			continue // null: no decisions
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return fmt.Errorf("%q is not a list", key)
		}
		for dec.More() {
			if n++; n > maxDecisions {
				return fmt.Errorf("more than %d decisions in one answer", maxDecisions)
			}
			var d Decision
			if err := dec.Decode(&d); err != nil {
				return err
			}
			d.cut()
			*list = append(*list, d)
		}
		if err := expectDelim(dec, ']'); err != nil {
			return err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("more after the answer's object")
	}
	return nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("%v where %q was expected", tok, want)
	}
	return nil
}

// cut shortens each text past maxField to a copy of its start and a mark
// that no address, type, scope or duration contains.
func (d *Decision) cut() {
	for _, f := range []*string{&d.Origin, &d.Scenario, &d.Scope, &d.Type, &d.Value, &d.Duration} {
		if len(*f) > maxField {
			*f = strings.Clone((*f)[:maxField]) + "…"
		}
	}
}

func (c *client) stream(ctx context.Context, key string, startup bool, scopes, origins []string) (*streamAnswer, error) {
	q := url.Values{}
	q.Set("startup", fmt.Sprint(startup))
	if len(scopes) > 0 {
		q.Set("scopes", strings.Join(scopes, ","))
	}
	if len(origins) > 0 {
		q.Set("origins", strings.Join(origins, ","))
	}
	hdr := http.Header{}
	if key != "" { // else the LAPI knows the bouncer by its client certificate
		hdr.Set("X-Api-Key", key)
	}
	var out streamAnswer
	err := c.do(ctx, "pull decisions", http.MethodGet, c.url("/v1/decisions/stream", q), hdr, nil, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

type loginAnswer struct {
	Code   int       `json:"code"`
	Expire time.Time `json:"expire"`
	Token  string    `json:"token"`
}

func (c *client) login(ctx context.Context, machine, password string, scenarios []string) (*loginAnswer, error) {
	body := map[string]any{"machine_id": machine, "password": password, "scenarios": scenarios}
	var out loginAnswer
	if err := c.do(ctx, "machine login", http.MethodPost, c.url("/v1/watchers/login", nil), nil, body, &out); err != nil {
		return nil, err
	}
	if out.Token == "" {
		return nil, errors.New("machine login: the LAPI answered without a token")
	}
	return &out, nil
}

func (c *client) postAlerts(ctx context.Context, token string, alerts []alert) error {
	return c.do(ctx, "post alerts", http.MethodPost, c.url("/v1/alerts", nil),
		http.Header{"Authorization": {"Bearer " + token}}, alerts, nil)
}
