package applog

import (
	"bytes"
	"net/netip"
)

// Proxies are the addresses whose X-Forwarded-For-style field is trusted.
type Proxies []netip.Prefix

func (ps Proxies) contains(a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Client is who made the request. The forwarded field is believed only when
// the peer is a listed proxy: then the client is the rightmost address in it
// that is not itself a listed proxy (the left part is whatever the client
// chose to send). ok is false when a trusted proxy forwarded a value that
// does not parse: nobody can be blamed.
func (ps Proxies) Client(e *Entry) (netip.Addr, bool) {
	if len(e.Forwarded) == 0 || !ps.contains(e.Remote) {
		return e.Remote, true
	}
	rest := e.Forwarded
	var last netip.Addr
	for len(rest) > 0 {
		var hop []byte
		if k := bytes.LastIndexByte(rest, ','); k >= 0 {
			hop, rest = rest[k+1:], rest[:k]
		} else {
			hop, rest = rest, nil
		}
		a, ok := parseAddr(bytes.TrimSpace(hop))
		if !ok {
			return netip.Addr{}, false
		}
		last = a
		if !ps.contains(a) {
			return a, true
		}
	}
	// every hop is a proxy: the first one is the client
	return last, last.IsValid()
}
