package crowdsec

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/policy"
	"github.com/cilium/ebpf"
)

// reasonCrowdSec marks the bouncer's bans in the kernel, as the daemon does.
const reasonCrowdSec = 3

// dpKernel writes the bouncer's bans straight to a loaded datapath.
type dpKernel struct{ d *loader.Datapath }

func (k dpKernel) ApplyCrowdSec(add []Ban, remove []netip.Prefix) error {
	for _, p := range remove {
		if err := k.d.Unban(p); err != nil && !errors.Is(err, loader.ErrNotBanned) {
			return err
		}
	}
	for _, b := range add {
		if err := k.d.Ban(loader.Ban{Prefix: b.Prefix, Expires: b.Expires, Reason: reasonCrowdSec}); err != nil {
			return err
		}
	}
	return nil
}

func (k dpKernel) CrowdSecBans() ([]netip.Prefix, error) {
	bans, err := k.d.Bans()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, b := range bans {
		if b.Reason == reasonCrowdSec {
			out = append(out, b.Prefix)
		}
	}
	return out, nil
}

// loadDatapath loads the datapath unpinned with a policy that passes
// everything not banned.
func loadDatapath(tb testing.TB) *loader.Datapath {
	tb.Helper()
	testenv.RequireRoot(tb)
	d, err := loader.Load(loader.Options{})
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	src := "apiVersion: apiguard.io/v1\nkind: Policy\nmetadata:\n  name: t\nspec:\n  defaultAction: pass\n"
	p, err := policy.Parse("t.yaml", []byte(src), nil)
	if err != nil {
		tb.Fatal(err)
	}
	lp, err := p.Compile(nil)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := d.Apply(lp); err != nil {
		tb.Fatal(err)
	}
	return d
}

const (
	xdpDrop = 1
	xdpPass = 2
)

// verdict runs one TCP SYN from src through the XDP program.
func verdict(tb testing.TB, d *loader.Datapath, src string) uint32 {
	tb.Helper()
	a := netip.MustParseAddr(src)
	dst := netip.MustParseAddr("10.9.9.9")
	if a.Is6() {
		dst = netip.MustParseAddr("fd00::9")
	}
	frame := packet.Build(packet.Spec{Src: a, Dst: dst, Proto: packet.TCP, SrcPort: 40000, DstPort: 443, TCPFlags: packet.SYN})
	ret, err := d.XDP().Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		tb.Fatalf("prog.Run: %v", err)
	}
	return ret
}
