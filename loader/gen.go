// Package loader is the Go side of apiguard's kernel datapath: it loads the
// bpf2go-generated programs with their load-time constants, pins maps and links
// under bpffs, attaches to interfaces (XDP native or generic, TCX, or a netlink
// clsact filter), and owns every map write. It needs Linux 6.6+ for TCX (older
// kernels fall back to clsact) and BTF-less XDP support (5.x+); it knows nothing
// of YAML: userspace/policy compiles policy files into the plain values here.
package loader

// The object is built for little-endian BPF only: apiguard runs on x86_64 and arm64.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" -type ag_event -type ag_config -type ag_service -type ag_limit -type ag_client_key -type ag_client_state -type ag_service_state -type ag_lpm4 -type ag_lpm6 -type ag_ban -type ag_counter -type ev_slot -type ag_refusal -type ag_conn_service -type ag_flow_key -type ag_flow -type ag_acl_key -type ag_sweep -type ag_prefilter -type ag_src_key -type ag_handshake -type ag_frag_key -type ag_frag -type ag_synproxy -type ag_slot_key Guard ../bpf/apiguard.c
