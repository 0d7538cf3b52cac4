package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apiguard/apiguard/test/netns"
)

// topology is the generator namespace and the guarded (DUT) namespace, joined
// by one veth pair. The DUT's receive work runs in threaded NAPI kthreads
// pinned to dutCPU; the generator runs on genCPU.
type topology struct {
	gen, dut *netns.Namespace
	lg, ld   *netns.Link
	napiPIDs []int
	genCPU   int
	dutCPU   int
}

func newTopology(genCPU, dutCPU int) (*topology, error) {
	t := &topology{genCPU: genCPU, dutCPU: dutCPU}
	var err error
	if t.gen, err = netns.New("agbg"); err != nil {
		return nil, err
	}
	if t.dut, err = netns.New("agbd"); err != nil {
		t.close()
		return nil, err
	}
	if t.lg, t.ld, err = netns.Veth(t.gen, t.dut, 99); err != nil {
		t.close()
		return nil, err
	}
	steps := []struct {
		ns   *netns.Namespace
		args []string
	}{
		// GRO gives the DUT veth a NAPI instance even with no XDP program
		// attached: without it, frames redirected into its peer are lost.
		{t.dut, []string{"ethtool", "-K", t.ld.Name, "gro", "on"}},
		// keep receive work off the generator's CPU
		{t.gen, []string{"ethtool", "-K", t.lg.Name, "tso", "off"}},
	}
	for _, s := range steps {
		if _, err := s.ns.Exec(s.args[0], s.args[1:]...); err != nil {
			t.close()
			return nil, err
		}
	}
	return t, nil
}

// pinNAPI moves the DUT veth's receive work to its NAPI threads on dutCPU.
// Attaching or detaching XDP re-creates them, so it is called after every
// configuration change.
func (t *topology) pinNAPI() error {
	pids, err := t.ld.ThreadedNAPI(t.dutCPU)
	if err != nil {
		return err
	}
	t.napiPIDs = pids
	return nil
}

// napiTime is the CPU time the DUT's NAPI threads have run.
func (t *topology) napiTime() time.Duration {
	var sum time.Duration
	for _, pid := range t.napiPIDs {
		d, err := netns.ThreadCPU(pid)
		if err != nil {
			continue // a thread that went away with its NAPI instance
		}
		sum += d
	}
	return sum
}

// rxPackets reads the DUT veth's receive counter.
func (t *topology) rxPackets() (uint64, error) {
	out, err := t.dut.Exec("cat", fmt.Sprintf("/sys/class/net/%s/statistics/rx_packets", t.ld.Name))
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(out), 10, 64)
}

func (t *topology) close() {
	if t.gen != nil {
		t.gen.Close()
	}
	if t.dut != nil {
		t.dut.Close()
	}
}
