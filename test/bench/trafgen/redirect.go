package trafgen

import (
	"errors"
	"fmt"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// maxFanout is the size of the devmap (bpf/trafgen.c fanout).
const maxFanout = 64

// redirect sends the template from an AF_PACKET socket into an intermediate
// veth pair inside the generator's namespace. The far end's XDP program
// broadcasts each frame through the fanout devmap, whose entries all name the
// target link: the target transmits each copy as an xdp_frame to its peer,
// which receives it the way a NIC's driver hands frames to XDP. A devmap
// program gives each copy its own source. One skb sent becomes Fanout frames.
type redirect struct {
	ns     *netns.Namespace
	in, xt string // the intermediate pair: the socket sends on in, XDP runs on xt
	objs   struct {
		Frames *ebpf.Program `ebpf:"fanout_frames"`
		Source *ebpf.Program `ebpf:"fanout_source"`
		Fanout *ebpf.Map     `ebpf:"fanout"`
		Seq    *ebpf.Map     `ebpf:"gen_seq"`
	}
	xdp    link.Link
	sock   *packetSocket
	fanout int
}

// devmapVal mirrors struct bpf_devmap_val.
type devmapVal struct {
	Ifindex uint32
	ProgFD  int32
}

func newRedirect(ns *netns.Namespace, target string, cfg Config, t template) (_ *redirect, err error) {
	fan := cfg.Fanout
	if fan == 0 {
		fan = 8
	}
	if fan < 1 || fan > maxFanout {
		return nil, fmt.Errorf("fanout %d out of 1..%d", fan, maxFanout)
	}
	r := &redirect{ns: ns, in: netns.Unique("tgi"), xt: netns.Unique("tgx"), fanout: fan}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	spec, err := loadGen()
	if err != nil {
		return nil, fmt.Errorf("read generator object: %w", err)
	}
	if err := spec.Variables["gen"].Set(t.consts(cfg)); err != nil {
		return nil, fmt.Errorf("set generator constants: %w", err)
	}
	if err := spec.LoadAndAssign(&r.objs, nil); err != nil {
		return nil, fmt.Errorf("load fanout programs: %w", err)
	}
	if err := ns.IP("link", "add", r.in, "type", "veth", "peer", "name", r.xt); err != nil {
		return nil, err
	}
	for _, l := range []string{r.in, r.xt} {
		if err := ns.IP("link", "set", l, "up"); err != nil {
			return nil, err
		}
	}
	targetIdx, err := ifindexIn(ns, target)
	if err != nil {
		return nil, err
	}
	xtIdx, err := ifindexIn(ns, r.xt)
	if err != nil {
		return nil, err
	}
	// the devmap resolves ifindexes, and XDP attaches, in the caller's namespace
	err = ns.Do(func() error {
		v := devmapVal{Ifindex: uint32(targetIdx), ProgFD: int32(r.objs.Source.FD())}
		for i := range uint32(fan) {
			if err := r.objs.Fanout.Put(i, v); err != nil {
				return fmt.Errorf("fanout entry %d -> %s: %w", i, target, err)
			}
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: r.objs.Frames, Interface: xtIdx, Flags: link.XDPDriverMode})
		if err != nil {
			return fmt.Errorf("attach fanout to %s: %w", r.xt, err)
		}
		r.xdp = l
		return nil
	})
	if err != nil {
		return nil, err
	}
	// the socket sends the template as it is: the devmap program varies the copies
	if r.sock, err = openPacketSocket(ns, r.in, cfg, t, false); err != nil {
		return nil, err
	}
	return r, nil
}

// send offers n frames: n/fanout skbs, rounded up, each copied fanout times.
func (r *redirect) send(n uint32) (uint64, error) {
	skbs := (n + uint32(r.fanout) - 1) / uint32(r.fanout)
	sent, err := r.sock.send(skbs)
	return sent * uint64(r.fanout), err
}

func (r *redirect) close() error {
	var errs []error
	if r.sock != nil {
		errs = append(errs, r.sock.close())
	}
	if r.xdp != nil {
		errs = append(errs, r.xdp.Close())
	}
	for _, c := range []interface{ Close() error }{r.objs.Frames, r.objs.Source, r.objs.Fanout, r.objs.Seq} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	// deleting one end deletes the pair; gone already if the namespace is
	if err := r.ns.IP("link", "del", r.in); err != nil && r.xdp != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
