package clientip

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestClient(t *testing.T) {
	trusted := Trusted{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("192.0.2.10/32")}
	long := strings.TrimSuffix(strings.Repeat("10.0.0.1, ", MaxHops+1), ", ")
	for _, c := range []struct {
		name, peer, fwd string
		want            string // "" when res is not Attributed
		res             Result
	}{
		{"untrusted peer: its header is ignored", "203.0.113.1", "198.51.100.1", "203.0.113.1", Attributed},
		{"untrusted peer, no header", "203.0.113.1", "", "203.0.113.1", Attributed},
		{"a trusted peer without a header is never blamed", "10.0.0.2", "", "", AllTrusted},
		{"a trusted peer with an empty header", "10.0.0.2", "  ", "", AllTrusted},
		{"one proxy", "10.0.0.2", "198.51.100.1", "198.51.100.1", Attributed},
		{"the client's own header is left of what the proxy appended", "10.0.0.2", "192.0.2.99, 203.0.113.7", "203.0.113.7", Attributed},
		{"a client naming a proxy to hide behind it", "10.0.0.2", "10.0.0.5, 203.0.113.7", "203.0.113.7", Attributed},
		{"a chain of proxies", "10.0.0.2", "1.1.1.1, 198.51.100.1, 10.0.0.1, 192.0.2.10", "198.51.100.1", Attributed},
		{"all trusted: the leftmost hop is not blamed", "10.0.0.2", "10.0.0.9,10.0.0.1", "", AllTrusted},
		{"ipv6 proxy", "fd00::1", "2001:db8::5", "2001:db8::5", Attributed},
		{"v4-mapped peer", "::ffff:10.0.0.2", "198.51.100.1", "198.51.100.1", Attributed},
		{"v4-mapped hop", "10.0.0.2", "::ffff:198.51.100.1", "198.51.100.1", Attributed},
		{"a port appended", "10.0.0.2", "198.51.100.1:5123", "198.51.100.1", Attributed},
		{"ipv6 with a port", "10.0.0.2", "[2001:db8::5]:443", "2001:db8::5", Attributed},
		{"bracketed ipv6", "10.0.0.2", "[2001:db8::5]", "2001:db8::5", Attributed},
		{"a zone is the server's, not the client's", "10.0.0.2", "fe80::1%eth0", "fe80::1", Attributed},
		{"unknown where it matters", "10.0.0.2", "unknown", "", BadHop},
		{"unknown left of the client does not matter", "10.0.0.2", "unknown, 198.51.100.1", "198.51.100.1", Attributed},
		{"garbage after a trusted hop", "10.0.0.2", "junk, 10.0.0.1", "", BadHop},
		{"an empty hop", "10.0.0.2", "198.51.100.1, , 10.0.0.1", "", BadHop},
		{"a trailing comma", "10.0.0.2", "198.51.100.1,", "", BadHop},
		{"an obfuscated identifier", "10.0.0.2", "_hidden", "", BadHop},
		{"a bad port", "10.0.0.2", "198.51.100.1:http", "", BadHop},
		{"ipv6 without brackets and a port is an address", "10.0.0.2", "2001:db8::5:443", "2001:db8::5:443", Attributed},
		{"more hops than MaxHops", "10.0.0.2", long, "", BadHop},
	} {
		got, res := trusted.Client(netip.MustParseAddr(c.peer), []byte(c.fwd))
		var want netip.Addr
		if c.want != "" {
			want = netip.MustParseAddr(c.want)
		}
		if res != c.res || got != want {
			t.Errorf("%s: peer %s header %q: %v (%v), want %v (%v)", c.name, c.peer, c.fwd, got, res, want, c.res)
		}
		if res == Attributed && trusted.Contains(got) {
			t.Errorf("%s: blamed the trusted %v", c.name, got)
		}
	}
	// nothing trusted: the peer, whatever the header says
	if got, res := (Trusted{}).Client(netip.MustParseAddr("10.0.0.2"), []byte("198.51.100.1")); got != netip.MustParseAddr("10.0.0.2") || res != Attributed {
		t.Fatalf("no trusted proxies: %v %v", got, res)
	}
}

func TestParseAddrAllocations(t *testing.T) {
	b := []byte("198.51.100.7")
	if n := testing.AllocsPerRun(100, func() { ParseAddr(b) }); n != 0 {
		t.Fatalf("%v allocations per IPv4 address", n)
	}
	for in, ok := range map[string]bool{"198.51.100.7": true, "01.1.1.1": false, "256.1.1.1": false, "1.2.3": false,
		"2001:db8::1": true, "::ffff:1.2.3.4": true, "": false, "1.2.3.4.": false} {
		if _, got := ParseAddr([]byte(in)); got != ok {
			t.Errorf("%q: %v, want %v", in, got, ok)
		}
	}
}

func TestTooWide(t *testing.T) {
	var ts Trusted
	for _, s := range []string{"0.0.0.0/0", "8.0.0.0/7", "10.0.0.0/8", "192.0.2.10/32", "::/0", "fd00::/8", "fc00::/7"} {
		ts = append(ts, netip.MustParsePrefix(s))
	}
	var got []string
	for _, p := range ts.TooWide() {
		got = append(got, p.String())
	}
	if want := []string{"0.0.0.0/0", "8.0.0.0/7", "::/0", "fc00::/7"}; !slices.Equal(got, want) {
		t.Fatalf("too wide %v, want %v", got, want)
	}
}

// Whatever the header, Client never panics, never blames a trusted address
// and reads the header only from a trusted peer.
func FuzzClient(f *testing.F) {
	f.Add([]byte("1.1.1.1, 198.51.100.1, 10.0.0.1"), true)
	f.Add([]byte("[2001:db8::5]:443, unknown"), false)
	trusted := Trusted{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	f.Fuzz(func(t *testing.T, fwd []byte, fromProxy bool) {
		peer := netip.MustParseAddr("203.0.113.1")
		if fromProxy {
			peer = netip.MustParseAddr("10.0.0.2")
		}
		got, res := trusted.Client(peer, fwd)
		switch {
		case !fromProxy && (got != peer || res != Attributed):
			t.Fatalf("untrusted peer: %v %v", got, res)
		case res == Attributed && (!got.IsValid() || trusted.Contains(got)):
			t.Fatalf("header %q: blamed %v", fwd, got)
		case res != Attributed && got.IsValid():
			t.Fatalf("header %q: %v with %v", fwd, res, got)
		}
	})
}
