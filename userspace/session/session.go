// Package session finds the remote sessions the caller of the CLI works
// from, so that `apiguard policy apply` can refuse a policy that would cut
// them: the SSH session named by SSH_CONNECTION, and the inbound TCP
// connections held by the caller's nearest ancestor that holds any (an
// sshd session process, whatever sudo or su did to the environment), read
// from the kernel's socket tables under /proc.
package session

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Flow is a remote source reaching a local TCP port.
type Flow struct {
	Src       netip.Addr
	LocalPort uint16
	What      string // how it was found
}

// maxAncestors bounds the walk up the process tree.
const maxAncestors = 64

// Find returns the caller's sessions: SSH_CONNECTION's, then the inbound
// connections of the nearest ancestor of pid that holds one. Loopback
// sources are left out: no guard stands between them and the host.
func Find(environ []string, proc string, pid int) ([]Flow, error) {
	var out []Flow
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "SSH_CONNECTION="); ok {
			if f, ok := parseSSHConnection(v); ok {
				out = append(out, f)
			}
		}
	}
	for i := 0; i < maxAncestors && pid > 1; i++ {
		ppid, err := parentOf(proc, pid)
		if err != nil {
			break // the process went away or /proc hides it: what was found stands
		}
		pid = ppid
		if pid <= 1 {
			break
		}
		flows, err := inbound(proc, pid)
		if err != nil {
			continue
		}
		if len(flows) > 0 {
			return dedup(append(out, flows...)), nil
		}
	}
	return dedup(out), nil
}

func dedup(fs []Flow) []Flow {
	seen := map[[2]string]bool{}
	var out []Flow
	for _, f := range fs {
		k := [2]string{f.Src.String(), strconv.Itoa(int(f.LocalPort))}
		if !seen[k] {
			seen[k] = true
			out = append(out, f)
		}
	}
	return out
}

// parseSSHConnection reads "client_ip client_port server_ip server_port".
func parseSSHConnection(v string) (Flow, bool) {
	f := strings.Fields(v)
	if len(f) != 4 {
		return Flow{}, false
	}
	src, err := netip.ParseAddr(f[0])
	if err != nil {
		return Flow{}, false
	}
	port, err := strconv.ParseUint(f[3], 10, 16)
	if err != nil || port == 0 || src.Unmap().IsLoopback() {
		return Flow{}, false
	}
	// a link-local client comes with its zone (fe80::1%eth0): packets carry none
	return Flow{Src: src.Unmap().WithZone(""), LocalPort: uint16(port), What: "your SSH session (SSH_CONNECTION)"}, true
}

// parentOf reads the parent of pid from /proc/PID/stat.
func parentOf(proc string, pid int) (int, error) {
	data, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// the command name is in parentheses and may hold spaces or ')'
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, fmt.Errorf("%s/%d/stat: no command name", proc, pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 {
		return 0, fmt.Errorf("%s/%d/stat: too short", proc, pid)
	}
	return strconv.Atoi(f[1])
}

// inbound lists the established TCP connections pid holds whose local port
// has a listening socket: connections to a server on this host, as an SSH
// session is. The tables are read from pid's own network namespace.
func inbound(proc string, pid int) ([]Flow, error) {
	inodes, err := socketInodes(proc, pid)
	if err != nil || len(inodes) == 0 {
		return nil, err
	}
	comm, _ := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "comm"))
	name := strings.TrimSpace(string(comm))
	var out []Flow
	for _, table := range []string{"tcp", "tcp6"} {
		rows, err := readTCP(filepath.Join(proc, strconv.Itoa(pid), "net", table))
		if err != nil {
			continue
		}
		listening := map[uint16]bool{}
		for _, r := range rows {
			if r.state == stateListen {
				listening[r.localPort] = true
			}
		}
		for _, r := range rows {
			if r.state != stateEstablished || !inodes[r.inode] || !listening[r.localPort] {
				continue
			}
			src := r.remote.Unmap()
			if src.IsLoopback() {
				continue
			}
			out = append(out, Flow{Src: src, LocalPort: r.localPort,
				What: fmt.Sprintf("your session (process %d %s)", pid, clip(name))})
		}
	}
	return out, nil
}

func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
	if len(s) > 32 {
		return s[:32]
	}
	return s
}

// socketInodes lists the socket inodes among pid's open files.
func socketInodes(proc string, pid int) (map[uint64]bool, error) {
	dir := filepath.Join(proc, strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	const maxFDs = 4096 // a session holds a few; a busy server is not one
	out := map[uint64]bool{}
	for i, e := range ents {
		if i >= maxFDs {
			break
		}
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if v, ok := strings.CutPrefix(l, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(v, "]"), 10, 64); err == nil {
				out[n] = true
			}
		}
	}
	return out, nil
}

// TCP states of /proc/net/tcp (include/net/tcp_states.h).
const (
	stateEstablished = 0x01
	stateListen      = 0x0a
)

type tcpRow struct {
	localPort uint16
	remote    netip.Addr
	state     uint8
	inode     uint64
}

// readTCP reads /proc/PID/net/tcp or tcp6, at most maxRows rows.
func readTCP(path string) ([]tcpRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const maxRows = 1 << 20
	var out []tcpRow
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() && len(out) < maxRows {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 {
			continue
		}
		_, lport, ok1 := hexAddrPort(fs[1])
		raddr, _, ok2 := hexAddrPort(fs[2])
		st, err1 := strconv.ParseUint(fs[3], 16, 8)
		inode, err2 := strconv.ParseUint(fs[9], 10, 64)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			continue
		}
		out = append(out, tcpRow{localPort: lport, remote: raddr, state: uint8(st), inode: inode})
	}
	return out, sc.Err()
}

// hexAddrPort reads the kernel's "0100007F:0016": the address as 32-bit
// words in host (little-endian) order, the port in hex.
func hexAddrPort(s string) (netip.Addr, uint16, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, 0, false
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return addr, uint16(port), true
}
