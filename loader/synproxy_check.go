package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"syscall"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// What a host needs for the SYN proxy, checked when a policy that turns it on
// is applied (the daemon refuses the policy otherwise, and the one in force
// stays): the kfunc that hands a handshake to a listener, SYN cookies
// allowed by the kernel, and no MPTCP listener on a proxied port.

// synProxyKfunc is the kernel function the hand-over calls (Linux 6.9+).
const synProxyKfunc = "bpf_sk_assign_tcp_reqsk"

// CheckSynProxy reads the host settings for the guarded interfaces (as
// HostTCP, in the calling thread's network namespace, which must be theirs:
// the smallest MSS of them all) and checks that the kernel can complete
// proxied handshakes on ports. The error says what is missing.
func CheckSynProxy(ifaces []string, ports []PortRange) (SynProxyHost, error) {
	if err := kernelHasKfunc(synProxyKfunc); err != nil {
		return SynProxyHost{}, err
	}
	host, err := HostTCPAll(ifaces)
	if err != nil {
		return host, err
	}
	mptcp, err := MPTCPListeners()
	if err != nil {
		return host, err
	}
	for _, p := range mptcp {
		for _, r := range ports {
			if p >= r.First && p <= r.Last {
				return host, fmt.Errorf("synproxy: the listener on port %d is an MPTCP socket, which the kernel refuses to hand a cookie's connection to: listen with plain TCP (Go: net.ListenConfig.SetMultipathTCP(false), or GODEBUG=multipathtcp=0)", p)
			}
		}
	}
	return host, nil
}

// HostTCPAll is HostTCP for several interfaces: the one set of settings the
// datapath holds must suit each, so the MSS is the smallest.
func HostTCPAll(ifaces []string) (SynProxyHost, error) {
	if len(ifaces) == 0 {
		return SynProxyHost{}, errors.New("synproxy: no interface to read the MTU of")
	}
	var out SynProxyHost
	for i, ifc := range ifaces {
		h, err := HostTCP(ifc)
		if err != nil {
			return h, err
		}
		if i == 0 {
			out = h
			continue
		}
		out.MSS4, out.MSS6 = min(out.MSS4, h.MSS4), min(out.MSS6, h.MSS6)
	}
	return out, nil
}

func kernelHasKfunc(name string) error {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("synproxy: read the kernel's BTF to look for %s: %w", name, err)
	}
	var fn *btf.Func
	if err := spec.TypeByName(name, &fn); err != nil {
		if errors.Is(err, btf.ErrNotFound) {
			return fmt.Errorf("synproxy: the kernel has no %s (Linux 6.9+ with CONFIG_SYN_COOKIES): it cannot take a handshake from the datapath", name)
		}
		return fmt.Errorf("synproxy: look for %s in the kernel's BTF: %w", name, err)
	}
	return nil
}

// inet_diag (linux/inet_diag.h, linux/sock_diag.h)
const (
	sockDiagByFamily = 20
	ipprotoMPTCP     = 262
	tcpListenState   = 10
	inetDiagReqLen   = 56 // struct inet_diag_req_v2
	inetDiagMsgMin   = 72 // struct inet_diag_msg
	// enum inet_diag_req_attrs: NONE, BYTECODE, SK_BPF_STORAGES, PROTOCOL
	inetDiagReqProtocol = 3
)

// MPTCPListeners lists the ports of the MPTCP listening sockets of the
// calling thread's network namespace (sock_diag, as `ss -Ml`). A kernel
// without MPTCP (or its diag module) has none to list.
func MPTCPListeners() ([]uint16, error) {
	var ports []uint16
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		p, err := mptcpListeners(family)
		if err != nil {
			return nil, err
		}
		ports = append(ports, p...)
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}

func mptcpListeners(family uint8) ([]uint16, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("synproxy: sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	// the protocol does not fit the request's byte: it goes in the
	// INET_DIAG_REQ_PROTOCOL attribute, and the byte stays 0, which no
	// handler serves (a kernel that ignored the attribute answers ENOENT
	// rather than list TCP listeners: 262 & 0xff is TCP)
	req := make([]byte, unix.NLMSG_HDRLEN+inetDiagReqLen+unix.SizeofNlAttr+4)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // sequence
	body := req[unix.NLMSG_HDRLEN:]
	body[0] = family
	ne.PutUint32(body[4:], 1<<tcpListenState)
	attr := body[inetDiagReqLen:]
	ne.PutUint16(attr[0:], unix.SizeofNlAttr+4)
	ne.PutUint16(attr[2:], inetDiagReqProtocol)
	ne.PutUint32(attr[4:], ipprotoMPTCP)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("synproxy: sock_diag request: %w", err)
	}
	var ports []uint16
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("synproxy: sock_diag answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("synproxy: sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return ports, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := unix.Errno(-int32(ne.Uint32(m.Data))); errno != 0 {
						if errno == unix.ENOENT || errno == unix.EINVAL {
							return nil, nil // no MPTCP diag: no MPTCP listener to find
						}
						return nil, fmt.Errorf("synproxy: sock_diag: %w", errno)
					}
				}
				return ports, nil
			}
			if len(m.Data) < inetDiagMsgMin {
				continue
			}
			if m.Data[1] == tcpListenState {
				ports = append(ports, binary.BigEndian.Uint16(m.Data[4:6]))
			}
		}
	}
}
