package loader

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// passAll is another tool's TC program that lets every packet through:
// TCX_PASS (TC_ACT_OK) ends the TCX chain, so a program behind it never
// sees the packet.
func passAll(t *testing.T) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "other_pass", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestTCXGuardRunsFirst: on an interface where another tool's TCX program
// already runs (a CNI, a monitoring agent), the guard is attached ahead of
// it: a program before it that passes a packet ends the chain, and a banned
// client would reach the server. A program put ahead of the guard later is
// reported by CheckAttachment (/healthz).
func TestTCXGuardRunsFirst(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachTC} {
		t.Run(string(mode), func(t *testing.T) {
			lab := newVethLab(t)
			dir := tempPinDir(t)
			d := newDatapath(t, Options{PinDir: dir})
			mustApply(t, d, &Policy{Services: []Service{
				{ID: 1, Name: "udp", Proto: ProtoUDP, Ports: []PortRange{{9999, 9999}}},
			}})
			if err := d.Ban(Ban{Prefix: netip.PrefixFrom(lab.la.Addr4, 32)}); err != nil {
				t.Fatal(err)
			}
			attachOther := func(anchor link.Anchor) {
				t.Helper()
				var l link.Link
				if err := lab.b.Do(func() error {
					dev, err := net.InterfaceByName(lab.lb.Name)
					if err != nil {
						return err
					}
					// a program of its own each time: TCX holds a program once
					l, err = link.AttachTCX(link.TCXOptions{Program: passAll(t), Interface: dev.Index, Attach: ebpf.AttachTCXIngress, Anchor: anchor})
					return err
				}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			}
			var att Attachment
			check := func() error {
				var err error
				if derr := lab.b.Do(func() error { err = d.CheckAttachment(att); return nil }); derr != nil {
					t.Fatal(derr)
				}
				return err
			}
			dst := netip.AddrPortFrom(lab.lb.Addr4, 9999)
			rx := listenUDP(t, lab.b, dst)
			tx := dialUDP(t, lab.a, dst)

			if mode == AttachTCX {
				attachOther(nil) // there first
			}
			if err := lab.b.Do(func() (err error) { att, err = d.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			if err := check(); err != nil {
				t.Fatalf("right after attaching: %v", err)
			}
			if got := exchange(t, tx, rx, 10); got != 0 {
				t.Fatalf("%d of 10 datagrams from a banned client arrived past the guard", got)
			}
			attachOther(link.Head()) // put ahead of the guard
			if got := exchange(t, tx, rx, 10); got == 0 {
				t.Fatal("the program ahead of the guard passes nothing: the test shows nothing")
			}
			if err := check(); !errors.Is(err, ErrNotAttached) {
				t.Errorf("with a program ahead of the guard: %v, want ErrNotAttached", err)
			}
			if mode != AttachTCX {
				return // TCX runs before every clsact filter
			}
			// a restart adopts the pinned link, and puts it first again
			d.Close()
			d = newDatapath(t, Options{PinDir: dir})
			if err := lab.b.Do(func() (err error) { att, err = d.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			if err := check(); err != nil {
				t.Errorf("after a restart: %v", err)
			}
			if got := exchange(t, tx, rx, 10); got != 0 {
				t.Errorf("after a restart: %d of 10 datagrams from a banned client arrived past the guard", got)
			}
			if err := lab.b.Do(func() error { return Detach(dir) }); err != nil {
				t.Logf("clean up: %v", err)
			}
		})
	}
}
