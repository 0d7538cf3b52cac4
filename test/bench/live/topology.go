package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/apiguard/apiguard/test/netns"
)

// topology is the generator namespace and the guarded (DUT) namespace, joined
// by one veth pair. The DUT's receive work runs in a threaded NAPI kthread
// pinned to dutCPU; the generator runs on genCPU.
type topology struct {
	gen, dut *netns.Namespace
	lg, ld   *netns.Link
	genIfidx int
	dutIfidx int
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
		// attached: without it, XDP_TX frames are lost silently.
		{t.dut, []string{"ethtool", "-K", t.ld.Name, "gro", "on"}},
		// keep receive work off the generator's CPU
		{t.gen, []string{"ethtool", "-K", t.lg.Name, "tso", "off"}},
		{t.dut, []string{"sh", "-c", fmt.Sprintf("echo 1 > /sys/class/net/%s/threaded", t.ld.Name)}},
	}
	for _, s := range steps {
		if _, err := s.ns.Exec(s.args[0], s.args[1:]...); err != nil {
			t.close()
			return nil, err
		}
	}
	if t.genIfidx, err = ifindex(t.gen, t.lg.Name); err != nil {
		t.close()
		return nil, err
	}
	if t.dutIfidx, err = ifindex(t.dut, t.ld.Name); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func ifindex(ns *netns.Namespace, name string) (int, error) {
	var idx int
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		idx = ifc.Index
		return nil
	})
	return idx, err
}

// pinNAPI finds the DUT veth's NAPI kthreads and pins them to dutCPU. Attaching
// or detaching XDP re-creates the device's NAPI instances (and their threads),
// so it is called after every configuration change.
func (t *topology) pinNAPI() error {
	prefix := "napi/" + t.ld.Name
	deadline := time.Now().Add(2 * time.Second)
	for {
		pids, err := findThreads(prefix)
		if err == nil {
			t.napiPIDs = pids
			for _, pid := range pids {
				out, err := exec.Command("taskset", "-pc", strconv.Itoa(t.dutCPU), strconv.Itoa(pid)).CombinedOutput()
				if err != nil {
					return fmt.Errorf("pin %s: %w: %s", prefix, err, out)
				}
			}
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// findThreads returns the pids of the kernel threads whose names start with
// prefix (names are truncated to 15 characters).
func findThreads(prefix string) ([]int, error) {
	if len(prefix) > 15 {
		prefix = prefix[:15]
	}
	dirs, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(string(b)), prefix) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no thread named %s*", prefix)
	}
	return pids, nil
}

// napiTime is the CPU time all of the DUT's NAPI threads have used.
func (t *topology) napiTime() (time.Duration, error) {
	var sum time.Duration
	for _, pid := range t.napiPIDs {
		d, err := cpuTime(pid)
		if err != nil {
			continue // a thread that went away with its NAPI instance
		}
		sum += d
	}
	return sum, nil
}

// cpuTime is the user+system time a thread has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// fields after the parenthesised command name; utime and stime are 14 and 15
	s := string(b)
	rest := s[strings.LastIndexByte(s, ')')+2:]
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ
	return time.Duration(ut+st) * time.Second / hz, nil
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
