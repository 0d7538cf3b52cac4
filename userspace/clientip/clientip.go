// Package clientip decides whom a request is held against when it may have
// come through proxies: the connection's peer, or, behind proxies the
// operator trusts, the first address of the X-Forwarded-For chain, counted
// from the right, that is not one of them. The access-log reader
// (userspace/applog) and the application's reporter (userspace/apireport)
// share it, so both blame the same address for the same request.
//
// The chain is "client, proxy1, proxy2": each proxy appends the peer it got
// the request from. Only the peer is known for sure; each trusted hop is
// believed for the one address it appended, its own peer, and nothing to the
// left of it, which whoever sent the request to it may have written. A trusted
// address is never blamed: a chain that holds nothing but trusted addresses
// (or a trusted peer that sent no header) has nobody outside to blame, and is
// unattributed rather than held against the leftmost hop, which the client
// wrote.
//
// Residual risk: a host inside a trusted range that reaches the server
// directly is a trusted peer, and its header is believed for the hop it
// "appends": it can blame any address. Trust the proxies' own addresses, not
// the network they sit in, and let only them reach the server (a service's
// allowFrom).
package clientip

import (
	"bytes"
	"net/netip"
)

// Trusted are the proxies whose forwarded header is believed.
type Trusted []netip.Prefix

// Contains reports whether a is a trusted proxy.
func (t Trusted) Contains(a netip.Addr) bool {
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Result says whether a request is held against someone.
type Result uint8

const (
	// Attributed: the address returned is to blame.
	Attributed Result = iota
	// AllTrusted: every hop (the peer included) is a trusted proxy.
	AllTrusted
	// BadHop: a hop that had to be read does not parse (or the chain is
	// longer than MaxHops): whom the proxy meant is unknown.
	BadHop
)

func (r Result) String() string {
	switch r {
	case Attributed:
		return "attributed"
	case AllTrusted:
		return "all trusted"
	case BadHop:
		return "bad hop"
	}
	return "unknown"
}

// MaxHops bounds the hops read from one header: a chain of trusted proxies
// is a handful, and a hostile header must not cost more than a few of them.
const MaxHops = 32

// Client returns whom a request from peer carrying the forwarded header value
// (X-Forwarded-For, comma-separated, possibly empty) is held against. The
// header is read only when peer is trusted, from its right end, skipping
// trusted hops; the first other address is the client.
func (t Trusted) Client(peer netip.Addr, forwarded []byte) (netip.Addr, Result) {
	peer = peer.Unmap()
	if !t.Contains(peer) {
		return peer, Attributed
	}
	rest := forwarded
	for n := 0; len(bytes.TrimSpace(rest)) > 0; n++ {
		if n == MaxHops {
			return netip.Addr{}, BadHop
		}
		var hop []byte
		if k := bytes.LastIndexByte(rest, ','); k >= 0 {
			hop, rest = rest[k+1:], rest[:k]
		} else {
			hop, rest = rest, nil
		}
		a, ok := ParseHop(hop)
		if !ok {
			return netip.Addr{}, BadHop
		}
		if !t.Contains(a) {
			return a, Attributed
		}
	}
	return netip.Addr{}, AllTrusted
}

// ParseHop parses one X-Forwarded-For element: an address, with surrounding
// space, or with a port as some proxies append it ("192.0.2.1:5123",
// "[2001:db8::1]:443", "[2001:db8::1]"). "unknown" and obfuscated
// identifiers (RFC 7239's "_hidden") do not parse.
func ParseHop(b []byte) (netip.Addr, bool) {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 0 || (end+1 < len(b) && !validPort(b[end+1:])) {
			return netip.Addr{}, false
		}
		a, ok := ParseAddr(b[1:end])
		return a, ok && a.Is6()
	}
	// one colon is IPv4 with a port; an IPv6 address has at least two
	if k := bytes.IndexByte(b, ':'); k >= 0 && bytes.IndexByte(b[k+1:], ':') < 0 {
		if !validPort(b[k:]) {
			return netip.Addr{}, false
		}
		a, ok := ParseAddr(b[:k])
		return a, ok && a.Is4()
	}
	return ParseAddr(b)
}

// validPort is ":" and 1 to 5 digits.
func validPort(b []byte) bool {
	if len(b) < 2 || len(b) > 6 || b[0] != ':' {
		return false
	}
	for _, c := range b[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ParseAddr parses an address, an IPv4 one without allocating (the access
// log's hot path); an IPv4-mapped IPv6 address is returned as IPv4.
func ParseAddr(b []byte) (netip.Addr, bool) {
	var v4 [4]byte
	n, dots, digits := 0, 0, 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			if digits > 0 && n == 0 {
				goto slow // a leading zero
			}
			n = n*10 + int(c-'0')
			digits++
			if n > 255 {
				goto slow // IPv6 starts with digits too
			}
		case c == '.' && digits > 0 && dots < 3:
			v4[dots] = byte(n)
			dots++
			n, digits = 0, 0
		default:
			goto slow
		}
	}
	if dots == 3 && digits > 0 {
		v4[3] = byte(n)
		return netip.AddrFrom4(v4), true
	}
	return netip.Addr{}, false
slow:
	a, err := netip.ParseAddr(string(b))
	if err != nil {
		return netip.Addr{}, false
	}
	// a zone names the server's interface, not the client
	return a.WithZone("").Unmap(), true
}

// WidestTrusted is the broadest trusted range that draws no warning: a /8.
// Any host in a trusted range can blame any address (see the package
// comment), so a wider one is nearly always a mistake (0.0.0.0/0 trusts the
// whole Internet to name the client).
const WidestTrusted = 8

// TooWide lists the trusted ranges wider than WidestTrusted bits.
func (t Trusted) TooWide() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range t {
		if p.Bits() < WidestTrusted {
			out = append(out, p)
		}
	}
	return out
}
