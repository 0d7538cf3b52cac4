package detect_test

import (
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/bench/guardbench"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/apiguard/apiguard/userspace/events"
	"github.com/cilium/ebpf"
)

// During a 200k/s random-source SYN flood to closed ports, which spends the
// kernel's no_service event budget (one event per spoofed source), a single
// source flooding a UDP service over its own limit is still flagged within
// its window, and so is a source probing the deny list: their events have
// budgets of their own (bpf/include/events.h). This is the property end to
// end; loader's TestEventBudgetsPerType takes the budgets apart (and fails
// with one budget for all types; this test's batches, paced per 50 ms, leave
// a single budget's refills to whichever batch runs right after a tick of the
// coarse clock, so it would not).
// The datapath runs for real through prog.Run, the events go through the
// ring buffer and the reader to the detector; the budgets are time-based, so
// the flood is paced in real time, 10,000 SYNs every 50 ms.
//
// The packets run through the benchmark object's guard (test/bench/guardbench:
// the datapath's own code, beside it on its maps), which redraws the low 24
// bits of every packet's source: 16M
// IPv4 sources from one frame, while the UDP flooder and the deny prober, IPv6 /64 clients, stay one client each whatever
// their low bits.
func TestFlaggedThroughARandomSourceFlood(t *testing.T) {
	testenv.RequireRoot(t)
	const (
		interval = 100 * time.Millisecond // the kernel's event interval and the detector's resolution
		tick     = 50 * time.Millisecond
		synsTick = 10000 // 200k/s
		udpTick  = 100   // 2000/s from one client, twenty times its limit
		window   = 2 * time.Second
	)
	dp, err := loader.Load(loader.Options{EventInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	progs, err := guardbench.Open(dp, 1<<24)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { progs.Close() })
	prober := netip.MustParsePrefix("2001:db8:dead::/64")
	if _, err := dp.Apply(&loader.Policy{Deny: []netip.Prefix{netip.MustParsePrefix("2001:db8:dead::/48")},
		Services: []loader.Service{{ID: 1, Name: "udp", Proto: loader.ProtoUDP,
			Ports: []loader.PortRange{{First: 9000, Last: 9000}}, Client: loader.Limits{Packets: loader.Rate{PerSecond: 100, Burst: 100}}}}}); err != nil {
		t.Fatal(err)
	}
	cfg := detect.DefaultConfig()
	cfg.EventInterval = interval
	cfg.Flood.Window, cfg.Flood.LimitedFor = window, 500*time.Millisecond
	det, err := detect.New(cfg, detect.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := events.Open(dp.EventsMap(), events.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		byType  = map[string]int{}
		readAll = make(chan struct{})
	)
	go func() {
		defer close(readAll)
		for ev := range r.Events() {
			det.Observe(&ev)
			mu.Lock()
			byType[loader.EventType(ev.Type).String()]++
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { r.Close(); <-readAll })

	syn := packet.Build(packet.Spec{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.1"),
		Proto: packet.TCP, SrcPort: 40000, DstPort: 81, TCPFlags: packet.SYN})
	flooder := netip.MustParsePrefix("2001:db8:f::/64")
	udp := packet.Build(packet.Spec{Src: netip.MustParseAddr("2001:db8:f::1"), Dst: netip.MustParseAddr("2001:db8::1"),
		Proto: packet.UDP, SrcPort: 40000, DstPort: 9000, Payload: 64})
	probe := packet.Build(packet.Spec{Src: netip.MustParseAddr("2001:db8:dead::7"), Dst: netip.MustParseAddr("2001:db8::1"),
		Proto: packet.TCP, SrcPort: 40000, DstPort: 22, TCPFlags: packet.SYN})
	run := func(frame []byte, n int) {
		t.Helper()
		if _, err := progs.Guard.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(n)}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for i := 1; i <= int(window/tick); i++ {
		run(syn, synsTick) // first in each tick: whatever the budgets refilled goes to the flood
		run(udp, udpTick)
		run(probe, 5)
		time.Sleep(time.Until(start.Add(time.Duration(i) * tick)))
	}
	elapsed := time.Since(start)
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	var flag, probing *detect.Flag
	for deadline := time.Now().Add(5 * time.Second); (flag == nil || probing == nil) && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, f := range det.Flags() {
			switch {
			case f.Prefix == flooder && f.Reason == detect.Flood:
				flag = &f
			case f.Prefix == prober && f.Reason == detect.DenyProbe:
				probing = &f
			}
		}
	}
	mu.Lock()
	counts := map[string]int{"no_service": byType["no_service"], "limited": byType["limited"], "deny_hit": byType["deny_hit"]}
	mu.Unlock()
	t.Logf("%d SYNs in %v (%.0fk/s), events: %v", int(window/tick)*synsTick, elapsed.Round(time.Millisecond),
		float64(int(window/tick)*synsTick)/elapsed.Seconds()/1000, counts)
	if flag == nil {
		t.Fatalf("the UDP flooder was not flagged; events %v, flags %+v", counts, det.Flags())
	}
	if flag.Evidence.LimitedFor <= cfg.Flood.LimitedFor {
		t.Errorf("flag evidence %+v", flag.Evidence)
	}
	if probing == nil {
		t.Errorf("the deny prober was not flagged; events %v", counts)
	}
	// the SYN flood did spend its budget: far fewer no_service events than
	// spoofed sources, about the default 5000/s
	st, err := dp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if most := 5000 + int(elapsed.Seconds()*5000) + 1; counts["no_service"] > most || st.EventsSuppressed < uint64(int(window/tick)*synsTick-most) {
		t.Errorf("the flood did not hit its budget: %d no_service events, %d suppressed", counts["no_service"], st.EventsSuppressed)
	}
}
