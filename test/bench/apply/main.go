// Command apply measures what applying a large policy costs a running daemon:
// the built apiguard binary guards a veth in a throwaway namespace while the
// CLI applies a policy with 100,000 deny CIDRs (from a list file), re-applies
// it unchanged, and applies a one-line change. It reports the median wall time
// of each (CLI round trip included) and the daemon's peak RSS (VmHWM).
//
// Needs root. Run: make bench-apply.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/netns"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-apply:", err)
		os.Exit(1)
	}
}

const basePolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata:
  name: %s
spec:
  denyFiles: [%s]
  services:
    - name: https
      protocol: tcp
      ports: [443]
      limits:
        client:
          packets: {rate: 1000/s, burst: 2000}
`

func run() error {
	entries := flag.Int("entries", 100_000, "deny CIDRs in the large policy")
	runs := flag.Int("runs", 3, "repetitions (medians are reported)")
	flag.Parse()
	if *entries < 1 || *entries > 262_144 || *runs < 1 || *runs > 10 {
		return errors.New("--entries must be 1..262144 and --runs 1..10")
	}
	dir, err := os.MkdirTemp("", "apiguard-bench-apply-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	bin := filepath.Join(dir, "apiguard")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/apiguard").CombinedOutput(); err != nil {
		return fmt.Errorf("build: %w\n%s", err, out)
	}
	big, changed, err := writeLists(dir, *entries)
	if err != nil {
		return err
	}
	small := filepath.Join(dir, "small.txt")
	if err := os.WriteFile(small, []byte("192.0.2.0/24\n"), 0o600); err != nil {
		return err
	}
	pol := func(name, list string) (string, error) {
		p := filepath.Join(dir, name+".yaml")
		return p, os.WriteFile(p, []byte(fmt.Sprintf(basePolicy, name, list)), 0o600)
	}
	smallPol, err := pol("small", small)
	if err != nil {
		return err
	}
	bigPol, err := pol("big", big)
	if err != nil {
		return err
	}
	changedPol, err := pol("changed", changed)
	if err != nil {
		return err
	}

	a, err := netns.New("agapa")
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := netns.New("agapb")
	if err != nil {
		return err
	}
	defer b.Close()
	_, lb, err := netns.Veth(a, b, 93)
	if err != nil {
		return err
	}
	pinDir := fmt.Sprintf("/sys/fs/bpf/apiguard-bench-apply-%d", os.Getpid())
	if _, err := loader.EnsureBPFFS(pinDir); err != nil {
		return err
	}
	defer loader.Detach(pinDir)
	socket := filepath.Join(dir, "ctl.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// nsenter keeps the root mount namespace, where the pins live
	daemon := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+b.Name, bin, "daemon",
		"--iface", lb.Name, "--policy", smallPol, "--bpffs", pinDir, "--socket", socket,
		"--state-dir", filepath.Join(dir, "state"), "--metrics-addr", "127.0.0.1:0")
	logf, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return err
	}
	daemon.Stdout, daemon.Stderr = logf, logf
	if err := daemon.Start(); err != nil {
		return err
	}
	defer func() {
		daemon.Process.Kill()
		daemon.Wait()
	}()
	cli := func(args ...string) error {
		out, err := exec.CommandContext(ctx, bin, append([]string{"--socket", socket}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("apiguard %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	ready := false
	for i := 0; i < 300 && !ready; i++ {
		ready = cli("status") == nil
		if !ready {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !ready {
		log, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("daemon did not start:\n%s", log)
	}
	timed := func(args ...string) (time.Duration, error) {
		start := time.Now()
		err := cli(args...)
		return time.Since(start), err
	}

	var full, same, oneLine []time.Duration
	for r := 0; r < *runs; r++ {
		if err := cli("policy", "apply", smallPol); err != nil {
			return err
		}
		d, err := timed("policy", "apply", bigPol)
		if err != nil {
			return err
		}
		full = append(full, d)
		if d, err = timed("policy", "apply", bigPol); err != nil {
			return err
		}
		same = append(same, d)
		if d, err = timed("policy", "apply", changedPol); err != nil {
			return err
		}
		oneLine = append(oneLine, d)
	}
	hwm, err := peakRSS(daemon.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("Applying a policy with %d deny CIDRs to a running daemon (CLI round trip included), median of %d:\n\n", *entries, *runs)
	fmt.Printf("| operation | time | target |\n|---|---|---|\n")
	fmt.Printf("| full apply | %v | ≤ 2 s |\n", median(full).Round(time.Millisecond))
	fmt.Printf("| re-apply unchanged | %v | ≤ 200 ms |\n", median(same).Round(time.Millisecond))
	fmt.Printf("| one-line change | %v | |\n", median(oneLine).Round(time.Millisecond))
	fmt.Printf("| daemon peak RSS (VmHWM) | %.1f MiB | ≤ 100 MiB |\n", float64(hwm)/1024)
	return nil
}

// writeLists writes n distinct deny CIDRs (mixed /32, /24, IPv6 /64) and the
// same list with its last line changed.
func writeLists(dir string, n int) (string, string, error) {
	rng := rand.New(rand.NewPCG(3, 4))
	seen := map[netip.Prefix]bool{}
	var lines []string
	for len(lines) < n {
		var p netip.Prefix
		switch rng.IntN(4) {
		case 0:
			a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
			p = netip.PrefixFrom(netip.AddrFrom16(a), 64)
		case 1:
			a := [4]byte{byte(100 + rng.IntN(100)), byte(rng.IntN(256)), byte(rng.IntN(256)), 0}
			p = netip.PrefixFrom(netip.AddrFrom4(a), 24)
		default:
			a := [4]byte{byte(100 + rng.IntN(100)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
			p = netip.PrefixFrom(netip.AddrFrom4(a), 32)
		}
		// keep the list free of entries inside other entries: the policy
		// refuses nothing for that, but the count should be what was asked
		if seen[p] || covered(p, seen) {
			continue
		}
		seen[p] = true
		lines = append(lines, p.String())
	}
	big := filepath.Join(dir, "big.txt")
	if err := writeLines(big, lines); err != nil {
		return "", "", err
	}
	lines[len(lines)-1] = "198.18.0.1/32"
	changed := filepath.Join(dir, "changed.txt")
	return big, changed, writeLines(changed, lines)
}

func covered(p netip.Prefix, set map[netip.Prefix]bool) bool {
	for bits := p.Bits() - 1; bits >= 0; bits-- {
		if set[netip.PrefixFrom(p.Addr(), bits).Masked()] {
			return true
		}
	}
	if p.Bits() == 32 {
		return set[netip.PrefixFrom(p.Addr(), 24).Masked()]
	}
	return false
}

func writeLines(path string, lines []string) error {
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

// peakRSS reads VmHWM (KiB) of pid.
func peakRSS(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int
		if _, err := fmt.Sscanf(sc.Text(), "VmHWM: %d kB", &kb); err == nil {
			return kb, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
