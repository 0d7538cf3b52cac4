// Package privs gives up what the daemon needs only to start. Loading the BPF
// programs takes CAP_PERFMON (and CAP_SYS_ADMIN on its behalf without
// CAP_BPF), attaching them CAP_NET_ADMIN, and raising RLIMIT_MEMLOCK on
// kernels before 5.11 CAP_SYS_RESOURCE; once the programs run and are
// attached, only CAP_BPF is used (every map read and write, bans and policy
// swaps included). Dropping the rest means a compromised daemon can no longer
// load programs, reconfigure the network or lift its limits.
//
// Capabilities belong to threads on Linux; the drop is made on every thread of
// the process at once (syscall.AllThreadsSyscall), which Go allows only in a
// binary built without cgo (CGO_ENABLED=0, as `make build` does).
package privs

import (
	"errors"
	"fmt"
	"math/bits"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrCgo says the binary was built with cgo: Go cannot change the
// capabilities of all its threads then.
var ErrCgo = errors.New("this binary was built with cgo, where Go cannot change the capabilities of every thread (build with CGO_ENABLED=0)")

// AfterStart are the capabilities the daemon needs only to start.
var AfterStart = []int{unix.CAP_PERFMON, unix.CAP_NET_ADMIN, unix.CAP_SYS_RESOURCE}

type capSets [2]unix.CapUserData

func get() (capSets, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var c capSets
	if err := unix.Capget(&hdr, &c[0]); err != nil {
		return c, fmt.Errorf("capget: %w", err)
	}
	return c, nil
}

func (c *capSets) has(cp int) bool { return c[cp/32].Permitted&(1<<(cp%32)) != 0 }

func (c *capSets) clear(cp int) {
	m := ^uint32(1 << (cp % 32))
	c[cp/32].Effective &= m
	c[cp/32].Permitted &= m
	c[cp/32].Inheritable &= m
}

// Drop removes caps from the effective, permitted and inheritable sets (and so
// the ambient set) of every thread, and returns the names of those it held.
// CAP_SYS_ADMIN goes too when CAP_BPF stays: the kernel takes either for BPF,
// and nothing else of CAP_SYS_ADMIN's is needed once started.
//
// Every thread gets no_new_privs first: uid 0 is given its whole bounding set
// again by any execve, so without it a daemon run as root outside systemd's
// NoNewPrivileges= (from a shell, a container runtime that allows privilege
// escalation) would have dropped nothing that running a program does not give
// back. The daemon runs no program.
func Drop(caps ...int) ([]string, error) {
	if _, _, errno := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); errno != 0 {
		if errno == syscall.ENOTSUP {
			return nil, ErrCgo
		}
		return nil, fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", errno)
	}
	c, err := get()
	if err != nil {
		return nil, err
	}
	if c.has(unix.CAP_BPF) {
		caps = append(caps, unix.CAP_SYS_ADMIN)
	}
	var dropped []string
	for _, cp := range caps {
		if c.has(cp) {
			c.clear(cp)
			dropped = append(dropped, Name(cp))
		}
	}
	if len(dropped) == 0 {
		return nil, nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&c[0])), 0)
	switch {
	case errno == syscall.ENOTSUP:
		return nil, ErrCgo
	case errno != 0:
		return nil, fmt.Errorf("capset: %w", errno)
	}
	return dropped, nil
}

// Held names the capabilities the calling thread holds (permitted).
func Held() ([]string, error) {
	c, err := get()
	if err != nil {
		return nil, err
	}
	var out []string
	for i, d := range c {
		for p := d.Permitted; p != 0; p &= p - 1 {
			out = append(out, Name(32*i+bits.TrailingZeros32(p)))
		}
	}
	return out, nil
}

// Name is a capability's name as capabilities(7) writes it.
func Name(cp int) string {
	if cp >= 0 && cp < len(names) && names[cp] != "" {
		return "CAP_" + names[cp]
	}
	return fmt.Sprintf("CAP_%d", cp)
}

var names = [...]string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// RaiseMemlock lifts RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF
// maps and programs to. It takes CAP_SYS_RESOURCE unless the limit is
// already infinite (systemd's LimitMEMLOCK=infinity); without either, later
// kernels need nothing, and earlier ones refuse the load with a clear error.
func RaiseMemlock() error {
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &cur); err != nil {
		return fmt.Errorf("read RLIMIT_MEMLOCK: %w", err)
	}
	if cur.Cur == unix.RLIM_INFINITY {
		return nil
	}
	inf := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &inf); err != nil {
		return fmt.Errorf("raise RLIMIT_MEMLOCK from %d bytes: %w", cur.Cur, err)
	}
	return nil
}
