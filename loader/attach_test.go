package loader

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/testenv"
)

type vethLab struct {
	a, b   *netns.Namespace
	la, lb *netns.Link
}

func newVethLab(t testing.TB) *vethLab {
	t.Helper()
	testenv.RequireRoot(t)
	a, err := netns.New("agta")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := netns.New("agtb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	la, lb, err := netns.Veth(a, b, 77)
	if err != nil {
		t.Fatal(err)
	}
	return &vethLab{a: a, b: b, la: la, lb: lb}
}

func listenUDP(t *testing.T, ns *netns.Namespace, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialUDP(t *testing.T, ns *netns.Namespace, to netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := ns.Do(func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends n datagrams and returns how many arrived within a second of
// the last one.
func exchange(t *testing.T, from, to *net.UDPConn, n int) int {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := from.Write([]byte("apiguard test payload")); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2048)
	got := 0
	for got < n+1 {
		to.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := to.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			t.Fatal(err)
		}
		got++
	}
	return got
}

func reasonCount(t *testing.T, d *Datapath, a Action, r GuardAgReason) uint64 {
	return counterMap(t, d)[[2]uint8{uint8(a), uint8(r)}]
}

// Real UDP and TCP over a veth pair between two namespaces, with the guard
// attached in each mode: counters match what was sent, limits and bans bite.
func TestAttachVeth(t *testing.T) {
	for _, mode := range []AttachMode{AttachNative, AttachTCX, AttachTC, AttachGeneric} {
		t.Run(string(mode), func(t *testing.T) {
			lab := newVethLab(t)
			d := newDatapath(t, Options{})
			mustApply(t, d, &Policy{TCPFlagSanity: true, Services: []Service{
				{ID: 1, Name: "udp", Proto: ProtoUDP, Ports: []PortRange{{9999, 9999}},
					Client: Limits{Packets: Rate{PerSecond: 1, Burst: 50}}},
				{ID: 2, Name: "tcp", Proto: ProtoTCP, Ports: []PortRange{{8080, 8080}}},
			}})
			if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}

			for _, fam := range []struct {
				name     string
				src, dst netip.Addr
			}{{"ipv4", lab.la.Addr4, lab.lb.Addr4}, {"ipv6", lab.la.Addr6, lab.lb.Addr6}} {
				t.Run(fam.name, func(t *testing.T) {
					dst := netip.AddrPortFrom(fam.dst, 9999)
					rx := listenUDP(t, lab.b, dst)
					tx := dialUDP(t, lab.a, dst)
					okBefore := reasonCount(t, d, ActionPass, GuardAgReasonAG_R_OK)
					limBefore := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_CLIENT_PPS)
					if got := exchange(t, tx, rx, 30); got != 30 {
						t.Fatalf("under the limit: %d of 30 datagrams arrived", got)
					}
					// the global counter also sees stray TCP segments of the other
					// family's connections; the client's own counter sees only these
					if got := reasonCount(t, d, ActionPass, GuardAgReasonAG_R_OK) - okBefore; got < 30 {
						t.Fatalf("pass/ok counter moved by %d for 30 datagrams", got)
					}
					if c := findClient(t, d, fam.src, 1); c.Packets != 30 || c.Drops != 0 {
						t.Fatalf("client counters %d packets %d drops for 30 datagrams", c.Packets, c.Drops)
					}
					// 20 more fit in the burst of 50 (plus at most a refill or two at 1/s)
					got := exchange(t, tx, rx, 40)
					limited := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_CLIENT_PPS) - limBefore
					if got < 20 || got > 22 || uint64(got)+limited != 40 {
						t.Fatalf("over the limit: %d of 40 arrived, %d counted as limited", got, limited)
					}
					client := findClient(t, d, fam.src, 1)
					if client.Packets != 70 || client.Drops != limited {
						t.Fatalf("client state: %d packets %d drops, want 70 and %d", client.Packets, client.Drops, limited)
					}

					// a ban stops the client's TCP connections too
					srv := netip.AddrPortFrom(fam.dst, 8080)
					var ln net.Listener
					if err := lab.b.Do(func() (err error) { ln, err = net.Listen("tcp", srv.String()); return err }); err != nil {
						t.Fatal(err)
					}
					defer ln.Close()
					go func() {
						for {
							c, err := ln.Accept()
							if err != nil {
								return
							}
							c.Close()
						}
					}()
					dial := func() error {
						return lab.a.Do(func() error {
							c, err := net.DialTimeout("tcp", srv.String(), 500*time.Millisecond)
							if err == nil {
								c.Close()
							}
							return err
						})
					}
					if err := dial(); err != nil {
						t.Fatalf("tcp before the ban: %v", err)
					}
					banBefore := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_BAN)
					if err := d.Ban(Ban{Prefix: netip.PrefixFrom(fam.src, fam.src.BitLen())}); err != nil {
						t.Fatal(err)
					}
					if err := dial(); err == nil {
						t.Fatal("tcp connect from a banned client succeeded")
					}
					if got := exchange(t, tx, rx, 10); got != 0 {
						t.Fatalf("%d datagrams from a banned client arrived", got)
					}
					if n := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_BAN) - banBefore; n < 11 {
						t.Fatalf("ban counter moved by %d, want at least 10 datagrams and a SYN", n)
					}
					if err := d.Unban(netip.PrefixFrom(fam.src, fam.src.BitLen())); err != nil {
						t.Fatal(err)
					}
					if err := dial(); err != nil {
						t.Fatalf("tcp after unban: %v", err)
					}
				})
			}
		})
	}
}

// A pinned attachment keeps enforcing after its owner closes, is taken over by
// the next Load without detaching, and goes away with Detach.
func TestPinnedAttachSurvivesOwner(t *testing.T) {
	for _, mode := range []AttachMode{AttachNative, AttachTCX, AttachTC} {
		t.Run(string(mode), func(t *testing.T) {
			lab := newVethLab(t)
			dir := tempPinDir(t)
			dst := netip.AddrPortFrom(lab.lb.Addr4, 9999)
			rx := listenUDP(t, lab.b, dst)
			tx := dialUDP(t, lab.a, dst)
			banned := netip.PrefixFrom(lab.la.Addr4, 32)

			d, err := Load(Options{PinDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			mustApply(t, d, &Policy{})
			if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			if err := d.Ban(Ban{Prefix: banned}); err != nil {
				t.Fatal(err)
			}
			d.Close()
			if got := exchange(t, tx, rx, 10); got != 0 {
				t.Fatalf("%d datagrams from a banned client arrived after the owner closed", got)
			}

			d2, err := Load(Options{PinDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer d2.Close()
			var att Attachment
			if err := lab.b.Do(func() (err error) { att, err = d2.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			if !att.Adopted {
				t.Fatal("second Load attached afresh instead of adopting")
			}
			atts, err := Attachments(dir)
			if err != nil || len(atts) != 1 || atts[0].Iface != lab.lb.Name || atts[0].Mode != mode {
				t.Fatalf("attachments: %+v %v", atts, err)
			}
			if got := exchange(t, tx, rx, 10); got != 0 {
				t.Fatalf("%d datagrams from a banned client arrived after adoption", got)
			}
			if err := lab.b.Do(func() error { return Detach(dir) }); err != nil {
				t.Fatal(err)
			}
			if got := exchange(t, tx, rx, 10); got != 10 {
				t.Fatalf("after Detach %d of 10 datagrams arrived", got)
			}
		})
	}
}

// Attaching in another mode replaces the earlier hooks on the interface
// (pinned ones too): one guard, not two counting every packet. Without pins
// the Datapath replaces the links it holds (clsact filters need pins to be
// known as ours, so tc is left out there).
func TestAttachSwitchesMode(t *testing.T) {
	for _, pinned := range []bool{true, false} {
		t.Run(map[bool]string{true: "pinned", false: "unpinned"}[pinned], func(t *testing.T) {
			lab := newVethLab(t)
			opts, modes := Options{}, []AttachMode{AttachNative, AttachTCX, AttachGeneric, AttachNative}
			if pinned {
				opts.PinDir = tempPinDir(t)
				modes = []AttachMode{AttachNative, AttachTCX, AttachTC, AttachGeneric, AttachNative}
			}
			d := newDatapath(t, opts)
			mustApply(t, d, &Policy{})
			dst := netip.AddrPortFrom(lab.lb.Addr4, 9999)
			rx := listenUDP(t, lab.b, dst)
			tx := dialUDP(t, lab.a, dst)
			for _, mode := range modes {
				if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, mode); return err }); err != nil {
					t.Fatal(err)
				}
				if pinned {
					atts, err := Attachments(opts.PinDir)
					if err != nil {
						t.Fatal(err)
					}
					if len(atts) != 1 || atts[0].Mode != mode {
						t.Fatalf("after attaching %s: pinned attachments %+v, want that one only", mode, atts)
					}
					egress, err := os.ReadDir(filepath.Join(opts.PinDir, linksDir, egressDir))
					if err != nil || len(egress) != 1 {
						t.Fatalf("after attaching %s: egress pins %v (%v), want one", mode, egress, err)
					}
				}
				// every datagram is counted once: one guard on the path
				before := reasonCount(t, d, ActionPass, GuardAgReasonAG_R_NO_SERVICE)
				if got := exchange(t, tx, rx, 20); got != 20 {
					t.Fatalf("%s: %d of 20 datagrams arrived", mode, got)
				}
				if n := reasonCount(t, d, ActionPass, GuardAgReasonAG_R_NO_SERVICE) - before; n != 20 {
					t.Fatalf("%s: 20 datagrams counted %d times", mode, n)
				}
			}
		})
	}
}
