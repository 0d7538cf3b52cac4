package loader

import (
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
)

func TestSmoke(t *testing.T) {
	testenv.RequireRoot(t)
	d, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	frame := packet.Build(packet.Spec{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: packet.UDP, SrcPort: 1, DstPort: 53})
	ret, err := d.XDP().Run(&ebpf.RunOptions{Data: frame})
	t.Log(ret, err)
}
