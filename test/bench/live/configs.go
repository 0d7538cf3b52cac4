package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/bench/trafgen"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// The policy under test, identical for apiguard and nftables.
const (
	floodPort    = 9000 // service with per-client and total limits
	legitPort    = 9001 // service without limits
	clientRate   = 1000 // packets/s per client
	clientBurst  = 100
	serviceRate  = 100_000 // packets/s for the whole service
	serviceBurst = 1000
	denyPrefixes = 1000
)

func denyList() []netip.Prefix {
	rng := rand.New(rand.NewPCG(7, 7))
	out := make([]netip.Prefix, 0, denyPrefixes)
	for len(out) < denyPrefixes {
		a := [4]byte{byte(150 + rng.IntN(50)), byte(rng.IntN(256)), byte(rng.IntN(256)), 0}
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(a), 16+rng.IntN(9)).Masked())
	}
	return out
}

func benchPolicy() *loader.Policy {
	return &loader.Policy{
		Deny: denyList(),
		Services: []loader.Service{
			{ID: 1, Name: "flood", Proto: loader.ProtoUDP, Ports: []loader.PortRange{{First: floodPort, Last: floodPort}},
				Client: loader.Limits{Packets: loader.Rate{PerSecond: clientRate, Burst: clientBurst}},
				Total:  loader.Limits{Packets: loader.Rate{PerSecond: serviceRate, Burst: serviceBurst}}},
			{ID: 2, Name: "legit", Proto: loader.ProtoUDP, Ports: []loader.PortRange{{First: legitPort, Last: legitPort}}},
		},
	}
}

// config is one way of guarding the DUT veth.
type config struct {
	name  string
	setup func(t *topology) (teardown func(), counted func() (uint64, error), err error)
}

func configs() []config {
	return []config{
		{"no filter", func(t *topology) (func(), func() (uint64, error), error) {
			return func() {}, nil, nil
		}},
		{"trivial XDP_PASS", func(t *topology) (func(), func() (uint64, error), error) {
			return setupTrivial(t, "XDP_PASS", trafgen.PassProgram)
		}},
		{"trivial XDP_DROP", func(t *topology) (func(), func() (uint64, error), error) {
			return setupTrivial(t, "XDP_DROP", trafgen.DropProgram)
		}},
		{"nftables", setupNft},
		{"apiguard XDP", func(t *topology) (func(), func() (uint64, error), error) {
			return setupApiguard(t, loader.AttachNative)
		}},
		{"apiguard TCX", func(t *topology) (func(), func() (uint64, error), error) {
			return setupApiguard(t, loader.AttachTCX)
		}},
	}
}

// setupTrivial attaches a one-instruction program in native mode.
func setupTrivial(t *topology, what string, load func() (*ebpf.Program, error)) (func(), func() (uint64, error), error) {
	prog, err := load()
	if err != nil {
		return nil, nil, err
	}
	var l link.Link
	err = t.dut.Do(func() error {
		ifc, err := net.InterfaceByName(t.ld.Name)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		prog.Close()
		return nil, nil, fmt.Errorf("attach %s: %w", what, err)
	}
	return func() { l.Close(); prog.Close() }, nil, nil
}

func setupApiguard(t *topology, mode loader.AttachMode) (func(), func() (uint64, error), error) {
	d, err := loader.Load(loader.Options{})
	if err != nil {
		return nil, nil, err
	}
	if _, err := d.Apply(benchPolicy()); err != nil {
		d.Close()
		return nil, nil, err
	}
	if err := t.dut.Do(func() error { _, err := d.Attach(t.ld.Name, mode); return err }); err != nil {
		d.Close()
		return nil, nil, err
	}
	counted := func() (uint64, error) {
		cs, err := d.Counters()
		if err != nil {
			return 0, err
		}
		var n uint64
		for _, c := range cs {
			n += c.Packets
		}
		return n, nil
	}
	return func() { d.Close() }, counted, nil
}

// setupNft writes the same policy as nftables rules on the DUT's ingress hook:
// an interval set for the deny list, a dynamic set with a per-source limit, and
// a global limit for the service total.
func setupNft(t *topology) (func(), func() (uint64, error), error) {
	var elems []string
	for _, p := range denyList() {
		elems = append(elems, p.String())
	}
	rules := fmt.Sprintf(`table netdev agbench {
	set deny4 { type ipv4_addr; flags interval; auto-merge; elements = { %s } }
	set rl4 { type ipv4_addr; size 262144; flags dynamic,timeout; timeout 60s; }
	chain ingress {
		type filter hook ingress device "%s" priority -500; policy accept;
		counter
		ip saddr @deny4 drop
		udp dport %d update @rl4 { ip saddr limit rate over %d/second burst %d packets } drop
		udp dport %d limit rate over %d/second burst %d packets drop
	}
}
`, strings.Join(elems, ", "), t.ld.Name, floodPort, clientRate, clientBurst, floodPort, serviceRate, serviceBurst)
	cmd := exec.Command("ip", "netns", "exec", t.dut.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("nft -f: %w: %s", err, out)
	}
	teardown := func() { t.dut.Exec("nft", "delete", "table", "netdev", "agbench") }
	counted := func() (uint64, error) {
		out, err := t.dut.Exec("nft", "list", "chain", "netdev", "agbench", "ingress")
		if err != nil {
			return 0, err
		}
		var pk, by uint64
		for _, line := range strings.Split(out, "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "counter packets") {
				fmt.Sscanf(line, "counter packets %d bytes %d", &pk, &by)
				return pk, nil
			}
		}
		return 0, fmt.Errorf("no counter in nft output")
	}
	return teardown, counted, nil
}
