package trafgen

import (
	"net"
	"net/netip"
	"testing"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
)

// The generator's frames arrive on the peer with the sources it promised and
// checksums the receiving stack accepts.
func TestGeneratorReachesPeer(t *testing.T) {
	testenv.RequireRoot(t)
	gen, err := netns.New("aggen")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gen.Close() })
	dut, err := netns.New("agdut")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dut.Close() })
	lg, ld, err := netns.Veth(gen, dut, 91)
	if err != nil {
		t.Fatal(err)
	}

	d, err := loader.Load(loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Apply(&loader.Policy{Services: []loader.Service{{ID: 1, Name: "udp", Proto: loader.ProtoUDP, Ports: []loader.PortRange{{First: 9000, Last: 9000}}}}}); err != nil {
		t.Fatal(err)
	}
	if err := dut.Do(func() error { _, err := d.Attach(ld.Name, loader.AttachNative); return err }); err != nil {
		t.Fatal(err)
	}

	for _, fam := range []struct{ src, dst netip.Addr }{{lg.Addr4, ld.Addr4}, {lg.Addr6, ld.Addr6}} {
		before := clients(t, d)
		frame := packet.Build(packet.Spec{Src: fam.src, Dst: fam.dst, Proto: packet.UDP, SrcPort: 1, DstPort: 9000, Payload: 18})
		g, err := New(Config{Frame: frame, Sources: 500})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		err = gen.Do(func() error {
			ifc, err := net.InterfaceByName(lg.Name)
			if err != nil {
				return err
			}
			return g.Send(ifc.Index, 5000)
		})
		if err != nil {
			t.Fatal(err)
		}
		want := 500
		if got := clients(t, d) - before; got != want {
			t.Errorf("%v: %d new clients seen at the peer, want %d", fam.src, got, want)
		}
	}
}

func clients(t *testing.T, d *loader.Datapath) int {
	n := 0
	if err := d.Clients(func(loader.Client) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}
