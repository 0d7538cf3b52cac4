package loader

import (
	"bufio"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/packet"
	"golang.org/x/sys/unix"
)

// rawIPv4 opens a raw socket in ns that sends IPv4 packets as they are
// written (header included): spoofed sources, fragments.
func rawIPv4(t *testing.T, ns *netns.Namespace) func(ip []byte, dst netip.Addr) {
	t.Helper()
	var fd int
	if err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return func(ip []byte, dst netip.Addr) {
		t.Helper()
		if err := unix.Sendto(fd, ip, 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
			t.Fatalf("send a raw packet: %v", err)
		}
	}
}

// reassemblies reads the namespace's IPv4 ReasmReqds: fragments the kernel
// received for reassembly.
func reassemblies(t *testing.T, ns *netns.Namespace) uint64 {
	t.Helper()
	var n uint64
	err := ns.Do(func() error {
		// /proc/net follows the reading thread's namespace
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		var names []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != "Ip:" {
				continue
			}
			if names == nil {
				names = fields
				continue
			}
			for i, name := range names {
				if name == "ReasmReqds" && i < len(fields) {
					n, err = strconv.ParseUint(fields[i], 10, 64)
					return err
				}
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
		return errors.New("no Ip: ReasmReqds in /proc/net/snmp")
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// countDatagrams reads c until the test ends; the function returned says how
// many datagrams arrived so far.
func countDatagrams(t *testing.T, c *net.UDPConn) func() int64 {
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			if _, err := c.Read(buf); err != nil {
				return // closed by the cleanup below
			}
			n.Add(1)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return n.Load
}

// Fragment floods over a real veth pair, into the kernel's reassembly:
//   - tiny first fragments, each followed by full-size later ones, to a
//     service with a bytes limit: the datagrams that reach the socket stay
//     within the limit (the first fragments alone would be a thousandth of it);
//   - later fragments from random sources, with no first fragment, under
//     defaultAction: drop: none reaches reassembly, where without the guard
//     each one does.
func TestFragmentFloodVeth(t *testing.T) {
	lab := newVethLab(t)
	const port = 9100
	dst := lab.lb.Addr4
	srv := listenUDP(t, lab.b, netip.AddrPortFrom(dst, port))
	arrived := countDatagrams(t, srv)
	send := rawIPv4(t, lab.a)

	// a datagram of 2952 bytes of UDP payload: a first fragment with just the
	// UDP header, then 1480 and 1472 bytes
	datagram := func(id uint32) [][]byte {
		ip := packet.Build(packet.Spec{Src: lab.la.Addr4, Dst: dst, Proto: packet.UDP, SrcPort: 40000, DstPort: port,
			Payload: 2952, FragID: id})[14:]
		return packet.FragmentIPv4(ip, 8, 1480)
	}
	frameBytes := 0
	for _, f := range datagram(1) {
		frameBytes += 14 + len(f)
	}
	orphans := func(n int, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 9))
		for i := 0; i < n; i++ {
			src := netip.AddrFrom4([4]byte{10, 200, byte(rng.IntN(256)), byte(1 + rng.IntN(254))})
			ip := packet.Build(packet.Spec{Src: src, Dst: dst, Proto: packet.UDP, Payload: 1000,
				FragID: rng.Uint32(), FragOffset: uint16(1 + rng.IntN(1000)), MoreFragments: rng.IntN(2) == 0})[14:]
			send(ip, dst)
		}
	}

	// without the guard every datagram arrives and every orphan reaches reassembly
	for id := uint32(1); id <= 5; id++ {
		for _, f := range datagram(id) {
			send(f, dst)
		}
	}
	waitUntil(t, "unguarded datagrams arrive", 2*time.Second, func() bool { return arrived() == 5 })
	// (not many: orphans hold the kernel's reassembly memory for 30 s, and
	// past 4 MB it refuses every fragment, the real datagrams' too)
	before := reassemblies(t, lab.b)
	const unguarded = 200
	orphans(unguarded, 1)
	waitUntil(t, "unguarded orphans reach reassembly", 2*time.Second, func() bool {
		return reassemblies(t, lab.b)-before == unguarded
	})

	d := newDatapath(t, Options{})
	const rate, burst = 20_000, 20_000
	mustApply(t, d, &Policy{DefaultDrop: true, Services: []Service{{ID: 1, Name: "udp", Proto: ProtoUDP,
		Ports: []PortRange{{port, port}}, Client: Limits{Bytes: Rate{PerSecond: rate, Burst: burst}}}}})
	if err := lab.b.Do(func() error { _, err := d.Attach(lab.lb.Name, AttachNative); return err }); err != nil {
		t.Fatal(err)
	}

	t.Run("tiny first fragments", func(t *testing.T) {
		base := arrived()
		start := time.Now()
		const datagrams = 300
		for id := uint32(100); id < 100+datagrams; id++ {
			for _, f := range datagram(id) {
				send(f, dst)
			}
		}
		// what arrives after the flood: at most a refill's worth
		time.Sleep(300 * time.Millisecond)
		got := arrived() - base
		elapsed := time.Since(start)
		allowed := (burst + int64(elapsed.Seconds()*rate)) / int64(frameBytes)
		if got < 1 || got > allowed {
			t.Fatalf("%d of %d datagrams (%d bytes each) arrived in %v; the limit admits %d (first fragments alone would admit all); counters %v",
				got, datagrams, frameBytes, elapsed.Round(time.Millisecond), allowed, counterMap(t, d))
		}
		if n := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_CLIENT_BPS); n < uint64(datagrams-got) {
			t.Errorf("%d fragments dropped as over the client's bytes, want at least one per refused datagram (%d)", n, datagrams-got)
		}
		t.Logf("%d of %d datagrams arrived in %v", got, datagrams, elapsed.Round(time.Millisecond))
	})

	t.Run("random-source orphans", func(t *testing.T) {
		before := reassemblies(t, lab.b)
		dropped := reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_FRAGMENT)
		const spoofed = 5000
		orphans(spoofed, 2)
		waitUntil(t, "the orphans are counted", 2*time.Second, func() bool {
			return reasonCount(t, d, ActionDrop, GuardAgReasonAG_R_FRAGMENT)-dropped == spoofed
		})
		if n := reassemblies(t, lab.b) - before; n != 0 {
			t.Fatalf("%d orphan fragments reached reassembly under defaultAction: drop", n)
		}
	})
}
