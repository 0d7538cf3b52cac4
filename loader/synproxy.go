package loader

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// The SYN proxy (bpf/include/synproxy.h, docs/synproxy.md): a service with
// Service.SynProxy set has its SYNs answered by the datapath with SYN cookies,
// and a handshake reaches the server only once the client's ACK proves its
// cookie. It acts once SetSynProxyHost told it the host's TCP settings; in the
// XDP modes Attach also puts on the TC ingress program that hands validated
// handshakes to the listener. CheckSynProxy says whether the host can run it.

// SynProxyHost is what the SYN-ACK must agree on with the host's TCP stack:
// the kernel refuses a handshake with an option its sysctls disable, and
// keeps the window scale the SYN-ACK announced.
type SynProxyHost struct {
	MSS4, MSS6    uint16 // MSS to announce: the interface MTU - 40 and - 60
	WindowScale   uint8  // the window scale the kernel would announce (0-14)
	SACK          bool
	Timestamps    bool
	WindowScaling bool
	ECN           bool
	TTL           uint8
}

const (
	maxWindowScale = 14 // RFC 7323
	ipv4Overhead   = 40 // IPv4 and TCP headers without options
	ipv6Overhead   = 60
	minMTU6        = 1280
)

// HostTCP reads the settings of the network namespace of the calling thread
// for the interface iface. Run it in the namespace of the guarded interface.
func HostTCP(iface string) (SynProxyHost, error) {
	dev, err := net.InterfaceByName(iface)
	if err != nil {
		return SynProxyHost{}, fmt.Errorf("synproxy: %w", err)
	}
	if dev.MTU < minMTU6 {
		return SynProxyHost{}, fmt.Errorf("synproxy: %s has MTU %d, below IPv6's minimum %d", iface, dev.MTU, minMTU6)
	}
	var h SynProxyHost
	h.MSS4 = uint16(min(dev.MTU-ipv4Overhead, 0xffff))
	h.MSS6 = uint16(min(dev.MTU-ipv6Overhead, 0xffff))
	syncookies, err := sysctlInts("net/ipv4/tcp_syncookies")
	if err != nil {
		return h, err
	}
	if syncookies[0] == 0 {
		return h, errors.New("synproxy: net.ipv4.tcp_syncookies is 0: the kernel takes no handshake from a cookie (set it to 1)")
	}
	for _, s := range []struct {
		key string
		out *bool
	}{
		{"net/ipv4/tcp_sack", &h.SACK},
		{"net/ipv4/tcp_timestamps", &h.Timestamps},
		{"net/ipv4/tcp_window_scaling", &h.WindowScaling},
		{"net/ipv4/tcp_ecn", &h.ECN},
	} {
		v, err := sysctlInts(s.key)
		if err != nil {
			return h, err
		}
		*s.out = v[0] != 0
	}
	ttl, err := sysctlInts("net/ipv4/ip_default_ttl")
	if err != nil {
		return h, err
	}
	h.TTL = uint8(ttl[0])
	// as tcp_select_initial_window: the scale that covers the largest
	// receive buffer a socket may grow to
	rmem, err := sysctlInts("net/ipv4/tcp_rmem")
	if err != nil {
		return h, err
	}
	rmemMax, err := sysctlInts("net/core/rmem_max")
	if err != nil {
		return h, err
	}
	if len(rmem) != 3 {
		return h, fmt.Errorf("synproxy: net.ipv4.tcp_rmem has %d values, want 3", len(rmem))
	}
	space := uint32(max(rmem[2], rmemMax[0], 1))
	h.WindowScale = uint8(min(max(bits.Len32(space)-1-15, 0), maxWindowScale))
	return h, nil
}

func sysctlInts(key string) ([]int, error) {
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return nil, fmt.Errorf("synproxy: read %s: %w", key, err)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("synproxy: %s: %w", key, err)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("synproxy: %s is empty", key)
	}
	return out, nil
}

// SetSynProxyHost loads the host settings; the proxy answers nothing before.
// The cookie key stays: handshakes under way survive the update.
func (d *Datapath) SetSynProxyHost(h SynProxyHost) error {
	if h.MSS4 == 0 || h.MSS6 == 0 || h.WindowScale > maxWindowScale || h.TTL == 0 {
		return fmt.Errorf("synproxy: host settings out of range: %+v", h)
	}
	var cur GuardAgSynproxy
	if err := d.objs.Synproxy.Lookup(uint32(0), &cur); err != nil {
		return fmt.Errorf("synproxy: read settings: %w", err)
	}
	b := func(v bool) uint8 {
		if v {
			return 1
		}
		return 0
	}
	next := GuardAgSynproxy{Key: cur.Key, Mss4: h.MSS4, Mss6: h.MSS6, Wscale: h.WindowScale,
		Sack: b(h.SACK), Timestamps: b(h.Timestamps), WindowScaling: b(h.WindowScaling), Ecn: b(h.ECN), Ttl: h.TTL}
	if err := d.objs.Synproxy.Update(uint32(0), &next, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("synproxy: write settings: %w", err)
	}
	return nil
}

// initSynProxyKeys draws the cookie key and the reflection bound's slot key,
// each unless an earlier run's pinned map holds one: cookies issued before a
// restart stay valid, and no source changes bucket. The two are drawn apart:
// the slots' collisions are observable to whoever receives SYN-ACKs, and must
// tell nothing of the cookie key. An install made before the slot key had its
// map gets the map created empty at Load and its key here, before Load
// returns: nothing attached runs the programs that read it until then, and
// they answer no SYN while it is zero.
func (d *Datapath) initSynProxyKeys() error {
	var cur GuardAgSynproxy
	if err := d.objs.Synproxy.Lookup(uint32(0), &cur); err != nil {
		return fmt.Errorf("synproxy: read settings: %w", err)
	}
	if cur.Key == [2]uint64{} {
		k, err := drawKey()
		if err != nil {
			return fmt.Errorf("synproxy: draw the cookie key: %w", err)
		}
		cur.Key = k
		if err := d.objs.Synproxy.Update(uint32(0), &cur, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("synproxy: write the cookie key: %w", err)
		}
	}
	var slot GuardAgSlotKey
	if err := d.objs.SynproxySlotkey.Lookup(uint32(0), &slot); err != nil {
		return fmt.Errorf("synproxy: read the slot key: %w", err)
	}
	if slot.Key != [2]uint64{} {
		return nil
	}
	k, err := drawKey()
	if err != nil {
		return fmt.Errorf("synproxy: draw the slot key: %w", err)
	}
	slot.Key = k
	if err := d.objs.SynproxySlotkey.Update(uint32(0), &slot, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("synproxy: write the slot key: %w", err)
	}
	return nil
}

// drawKey is 128 random bits, refused all zero (zero says "not written"; one
// chance in 2^128, so a zero is a broken source, not bad luck).
func drawKey() ([2]uint64, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return [2]uint64{}, err
	}
	k := [2]uint64{binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])}
	if k == [2]uint64{} {
		return k, errors.New("the random source gave 128 zero bits")
	}
	return k, nil
}

// SynProxyStats are the proxy's counters since load (all CPUs). SYNs
// answered or not answerable, and ACKs dropped for a bad cookie, are verdicts:
// Counters has them (reasons syn_cookie, syn_unproxyable, synack_limited, bad_cookie).
type SynProxyStats struct {
	CookieOK     uint64 // ACKs with a valid cookie let on to the listener
	KernelCookie uint64 // ACKs with a cookie the kernel itself issued, let on
	Accepted     uint64 // handshakes handed to the listener (TC)
	AcceptFailed uint64 // handshakes the kernel refused (sysctl changed, MPTCP listener)
	AutoOn       uint64 // times an auto service's proxy turned on
	Proven       uint64 // valid cookies with timestamps, whose sources were proven
	// handshakes not handed over because the kernel lacks
	// bpf_sk_assign_tcp_reqsk (before 6.9; the datapath loads without it)
	Unavailable uint64
}

// SynProxyStats reads the proxy's counters.
func (d *Datapath) SynProxyStats() (SynProxyStats, error) {
	var vals [GuardAgSynproxyStatSP_STAT_MAX]uint64
	var per []uint64
	for i := range vals {
		if err := d.objs.SynproxyStats.Lookup(uint32(i), &per); err != nil {
			return SynProxyStats{}, fmt.Errorf("read synproxy stat %d: %w", i, err)
		}
		for _, v := range per {
			vals[i] += v
		}
	}
	return SynProxyStats{
		CookieOK:     vals[GuardAgSynproxyStatSP_STAT_COOKIE_OK],
		KernelCookie: vals[GuardAgSynproxyStatSP_STAT_KERNEL_COOKIE],
		Accepted:     vals[GuardAgSynproxyStatSP_STAT_ACCEPTED],
		AcceptFailed: vals[GuardAgSynproxyStatSP_STAT_ACCEPT_FAILED],
		AutoOn:       vals[GuardAgSynproxyStatSP_STAT_AUTO_ON],
		Proven:       vals[GuardAgSynproxyStatSP_STAT_PROVEN],
		Unavailable:  vals[GuardAgSynproxyStatSP_STAT_UNAVAILABLE],
	}, nil
}

// SynProxyOn says, for each service id given, until when its auto proxy is
// on (wall time; the zero Time when it is off). Services with synProxy
// always are on whenever a policy is applied and are not listed here.
func (d *Datapath) SynProxyOn(ids []uint32) (map[uint32]time.Time, error) {
	clock := newMonoClock()
	now := uint64(clock.monoNow)
	out := make(map[uint32]time.Time, len(ids))
	for _, id := range ids {
		if id == 0 || int(id) > MaxServices {
			return nil, fmt.Errorf("synproxy: service id %d outside 1..%d", id, MaxServices)
		}
		var until uint64
		if err := d.objs.SynproxyUntil.Lookup(id, &until); err != nil {
			return nil, fmt.Errorf("synproxy: read service %d: %w", id, err)
		}
		if until > now {
			out[id] = clock.wall(until)
		} else {
			out[id] = time.Time{}
		}
	}
	return out, nil
}

// The TC ingress program that hands proxied handshakes to the listener in
// the XDP modes (the kfunc is TC only; in the TC modes the guard does it). Its
// pins live in links/synproxy/tcx_<iface>. It goes on whatever the policy
// says: it costs another service's segment about 8 ns (docs/synproxy.md), and
// a policy swap then needs no attach.
const synProxyDir = "synproxy"

func (d *Datapath) attachSynProxy(iface string, mode AttachMode) error {
	if mode != AttachNative && mode != AttachGeneric {
		// the guard hands over itself: an earlier run's program in an XDP
		// mode would do it twice
		return errors.Join(detachSynProxyIface(d, iface)...)
	}
	dev, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("synproxy: %w", err)
	}
	err = d.attachSideTCX(dev, d.objs.ApiguardSynproxy, ebpf.AttachTCXIngress, synProxyDir)
	if errors.Is(err, ebpf.ErrNotSupported) {
		// no TCX (before 6.6): no bpf_sk_assign_tcp_reqsk either (6.9),
		// and a policy with the proxy is refused (CheckSynProxy)
		return nil
	}
	return err
}

// detachSynProxyIface removes the hand-over from iface.
func detachSynProxyIface(d *Datapath, iface string) []error {
	d.mu.Lock()
	name := synProxyDir + "/" + linkPinName(AttachTCX, iface)
	if l, ok := d.links[name]; ok {
		l.Close()
		delete(d.links, name)
	}
	d.mu.Unlock()
	if d.opts.PinDir == "" {
		return nil
	}
	path := filepath.Join(d.opts.PinDir, linksDir, synProxyDir, linkPinName(AttachTCX, iface))
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	if err := removeHook(path, AttachTCX, iface, netlink.HANDLE_MIN_INGRESS); err != nil {
		return []error{err}
	}
	return nil
}
