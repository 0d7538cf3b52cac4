package policy

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
)

// shipped lists every policy in policies/.
func shipped(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, pat := range []string{"../../policies/*.yaml", "../../policies/examples/*.yaml"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m...)
	}
	if len(out) < 4 {
		t.Fatalf("found only %v", out)
	}
	return out
}

func TestShippedPoliciesLoadAndCompile(t *testing.T) {
	for _, path := range shipped(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			p, err := LoadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Warnings) > 0 {
				t.Errorf("warnings:\n%v", p.Warnings)
			}
			lp, err := p.Compile(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(lp.Services) == 0 {
				t.Error("a shipped policy without services shows nothing")
			}
			if d := Diff(p, p); len(d) != 0 {
				t.Errorf("diff with itself: %q", d)
			}
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	if _, err := LoadFile(filepath.Join(t.TempDir(), "nope.yaml")); err == nil {
		t.Error("loaded a missing file")
	}
}

// TestShippedPoliciesInTheKernel applies each shipped policy to a real
// datapath and checks a few verdicts that follow from the file, so the
// compiled values mean in the kernel what the file says.
func TestShippedPoliciesInTheKernel(t *testing.T) {
	testenv.RequireRoot(t)
	d, err := loader.Load(loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	const xdpDrop, xdpPass = 1, 2
	type probe struct {
		src     string
		proto   uint8
		port    uint16
		verdict uint32
	}
	cases := map[string][]probe{
		"default.yaml": {
			{"192.0.2.9", packet.TCP, 443, xdpDrop},    // deny list
			{"198.51.100.9", packet.TCP, 443, xdpPass}, // a client of the https service
			{"198.51.100.9", packet.TCP, 22, xdpPass},  // no service, default pass
			{"2001:db8::9", packet.UDP, 8080, xdpPass}, // the udp service: one datagram is well within its limits
		},
		"strict-api.yaml": {
			{"198.51.100.20", packet.TCP, 22, xdpDrop},    // no service, default drop
			{"198.51.100.2", packet.TCP, 22, xdpPass},     // admin-cidrs.txt
			{"203.0.113.10", packet.TCP, 8443, xdpPass},   // admin-cidrs.txt, bare address
			{"203.0.113.200", packet.TCP, 443, xdpDrop},   // blocklist.txt
			{"198.51.100.20", packet.TCP, 443, xdpPass},   // https
			{"198.51.100.20", packet.UDP, 40000, xdpPass}, // replies to this host
		},
		"http3-and-dns.yaml": {
			{"198.51.100.20", packet.UDP, 53, xdpPass},
			{"198.51.100.20", packet.UDP, 443, xdpPass},
		},
		"admin-api.yaml": {
			{"198.51.100.20", packet.TCP, 443, xdpPass},    // the public API
			{"10.1.2.3", packet.TCP, 8443, xdpPass},        // admin: allowFrom
			{"198.51.100.2", packet.TCP, 8443, xdpPass},    // admin: admin-cidrs.txt
			{"2001:db8:100::5", packet.TCP, 8443, xdpPass}, // admin: admin-cidrs.txt, IPv6
			{"198.51.100.20", packet.TCP, 8443, xdpDrop},   // admin: outside its ACL
			{"2001:db8:200::5", packet.TCP, 8443, xdpDrop}, // admin: outside its ACL, IPv6
		},
		"monitor-trial.yaml": {
			{"198.51.100.20", packet.TCP, 8050, xdpPass},
		},
	}
	var prev *loader.Policy
	for _, path := range shipped(t) {
		p, err := LoadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lp, err := p.Compile(prev)
		if err != nil {
			t.Fatal(err)
		}
		res, err := d.Apply(lp)
		if err != nil {
			t.Fatalf("%s: apply: %v", path, err)
		}
		if again, err := d.Apply(lp); err != nil || again.Changed {
			t.Errorf("%s: applying twice changed something: %+v, %v", path, again, err)
		}
		t.Logf("%s: generation %d, %d prefix, %d port, %d service writes", filepath.Base(path), res.Generation, res.PrefixWrites, res.PortWrites, res.ServiceWrites)
		prev = lp
		for _, pr := range cases[filepath.Base(path)] {
			src := netip.MustParseAddr(pr.src)
			dst := netip.MustParseAddr("192.0.2.254")
			if src.Is6() {
				dst = netip.MustParseAddr("2001:db8:ffff::1")
			}
			spec := packet.Spec{Src: src, Dst: dst, Proto: pr.proto, SrcPort: 40001, DstPort: pr.port}
			if pr.proto == packet.TCP {
				spec.TCPFlags = packet.SYN
			}
			ret, err := d.XDP().Run(&ebpf.RunOptions{Data: packet.Build(spec)})
			if err != nil {
				t.Fatal(err)
			}
			if ret != pr.verdict {
				t.Errorf("%s: %s -> %d/%d: verdict %d, want %d", filepath.Base(path), pr.src, pr.proto, pr.port, ret, pr.verdict)
			}
		}
	}
}
