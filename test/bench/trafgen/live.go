package trafgen

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

const liveFramesFlag = 2 // BPF_F_TEST_XDP_LIVE_FRAMES

// ErrLiveFramesRefused is what ProbeLiveFrames returns where the kernel
// refuses BPF_PROG_TEST_RUN in live-frames mode (EPERM, seen on kernels that
// have the mode): the Redirect method takes over.
var ErrLiveFramesRefused = errors.New("the kernel refuses BPF_PROG_TEST_RUN in live-frames mode")

var probe struct {
	once sync.Once
	err  error
}

// ProbeLiveFrames runs an XDP_DROP program once in live-frames mode on the
// loopback interface and says whether the kernel allows it: nil, an error
// wrapping ErrLiveFramesRefused for EPERM, or another error. It probes once
// per process.
func ProbeLiveFrames() error {
	probe.once.Do(func() { probe.err = probeLive() })
	return probe.err
}

func probeLive() error {
	prog, err := DropProgram()
	if err != nil {
		return err
	}
	defer prog.Close()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("live-frames probe: %w", err)
	}
	frame := make([]byte, 64)
	_, err = prog.Run(&ebpf.RunOptions{
		Data:    frame,
		Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(lo.Index)},
		Repeat:  1,
		Flags:   liveFramesFlag,
	})
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: %v", ErrLiveFramesRefused, err)
	}
	if err != nil {
		return fmt.Errorf("live-frames probe: %w", err)
	}
	return nil
}

// xdpMD mirrors struct xdp_md, the context BPF_PROG_TEST_RUN takes for XDP.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// live transmits with the trafgen program in live-frames mode.
type live struct {
	objs    genObjects
	frame   []byte
	ifindex int
}

func newLive(ns *netns.Namespace, link string, cfg Config, t template) (*live, error) {
	spec, err := loadGen()
	if err != nil {
		return nil, fmt.Errorf("read generator object: %w", err)
	}
	if err := spec.Variables["gen"].Set(t.consts(cfg)); err != nil {
		return nil, fmt.Errorf("set generator constants: %w", err)
	}
	l := &live{frame: t.frame}
	if l.ifindex, err = ifindexIn(ns, link); err != nil {
		return nil, err
	}
	if err := spec.LoadAndAssign(&l.objs, nil); err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	return l, nil
}

func (l *live) send(n uint32) (uint64, error) {
	_, err := l.objs.Trafgen.Run(&ebpf.RunOptions{
		Data:      l.frame,
		Context:   xdpMD{DataEnd: uint32(len(l.frame)), IngressIfindex: uint32(l.ifindex)},
		Repeat:    n,
		Flags:     liveFramesFlag,
		BatchSize: 64,
	})
	if err != nil {
		return 0, fmt.Errorf("live-frames run on ifindex %d: %w", l.ifindex, err)
	}
	return uint64(n), nil
}

func (l *live) close() error { return l.objs.Close() }

func ifindexIn(ns *netns.Namespace, link string) (int, error) {
	var idx int
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(link)
		if err != nil {
			return fmt.Errorf("find %s: %w", link, err)
		}
		idx = ifc.Index
		return nil
	})
	return idx, err
}
