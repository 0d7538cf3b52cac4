package events

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
)

// handle is the loop's body: it must count bad records and a full queue.
func TestReaderCountsUndecodableAndDropped(t *testing.T) {
	r := &Reader{out: make(chan loader.Event, 2), byType: make([]atomic.Uint64, numTypes+1)}
	good := loader.Event{Ts: 1, Type: uint8(loader.GuardAgEventTypeAG_EV_BAN_HIT), Family: 6}
	var ev loader.Event
	r.handle(Encode(&good), &ev)
	r.handle([]byte{1, 2, 3}, &ev)
	bad := good
	bad.Type = 0
	r.handle(Encode(&bad), &ev)
	r.handle(Encode(&good), &ev)
	r.handle(Encode(&good), &ev) // queue of 2 is full now
	s := r.Stats()
	if s.Received != 5 || s.Undecodable != 2 || s.Dropped != 1 || s.ByType[loader.EventType(good.Type)] != 3 {
		t.Fatalf("stats %+v", s)
	}
	if got := <-r.out; got != good {
		t.Fatalf("queued %+v", got)
	}
}

var (
	lab      = netip.MustParseAddr("192.0.2.1")
	lab6     = netip.MustParseAddr("2001:db8::1")
	denied   = netip.MustParseAddr("198.51.100.5")
	banned   = netip.MustParseAddr("203.0.113.9")
	badFlags = netip.MustParseAddr("192.0.2.20")
	scanner  = netip.MustParseAddr("192.0.2.30")
	flooder  = netip.MustParseAddr("192.0.2.40")
	synner   = netip.MustParseAddr("192.0.2.50")
	scanner6 = netip.MustParseAddr("2001:db8:1::30")
)

func tcp(src netip.Addr, port uint16, flags uint8) []byte {
	dst := lab
	if src.Is6() {
		dst = lab6
	}
	return packet.Build(packet.Spec{Src: src, Dst: dst, Proto: packet.TCP, SrcPort: 40000, DstPort: port, TCPFlags: flags})
}

type want struct {
	typ    string
	reason string
	action string
	addr   netip.Addr
	port   uint16
	count  uint64
}

// Real records: the datapath runs crafted packets and the Reader decodes what
// the kernel wrote.
func TestReaderDecodesKernelEvents(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.OnOneCPU(t) // the kernel's event throttle is per CPU: a migration changes the counts
	d, err := loader.Load(loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	_, err = d.Apply(&loader.Policy{
		TCPFlagSanity: true,
		Deny:          []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		Services: []loader.Service{
			{ID: 1, Name: "api", Proto: loader.ProtoTCP, Ports: []loader.PortRange{{First: 8080, Last: 8080}},
				Client: loader.Limits{Packets: loader.Rate{PerSecond: 1, Burst: 1}}},
			{ID: 2, Name: "conn", Proto: loader.ProtoTCP, Ports: []loader.PortRange{{First: 9090, Last: 9090}},
				Client: loader.Limits{Conns: loader.Rate{PerSecond: 1, Burst: 1}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Ban(loader.Ban{Prefix: netip.PrefixFrom(banned, 32), Expires: time.Now().Add(time.Hour), Reason: 7}); err != nil {
		t.Fatal(err)
	}
	r, err := Open(d.EventsMap(), Options{QueueSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })

	frames := [][]byte{
		tcp(denied, 8080, packet.SYN),
		tcp(banned, 8080, packet.SYN),
		tcp(badFlags, 8080, packet.FIN|packet.PSH|packet.URG),
		tcp(scanner, 22, packet.SYN),
		tcp(scanner, 23, packet.SYN),
		tcp(scanner6, 25, packet.SYN),
	}
	for i := 0; i < 3; i++ { // 1 pps, burst 1: the 2nd and 3rd are dropped, one event
		frames = append(frames, tcp(flooder, 8080, packet.ACK))
	}
	for i := 0; i < 3; i++ { // 1 conn/s, burst 1
		frames = append(frames, tcp(synner, 9090, packet.SYN))
	}
	for _, f := range frames {
		if _, err := d.XDP().Run(&ebpf.RunOptions{Data: f}); err != nil {
			t.Fatal(err)
		}
	}
	wants := []want{
		{"deny_hit", "deny", "drop", denied, 8080, 1},
		{"ban_hit", "ban", "drop", banned, 8080, 1},
		{"bad_flags", "tcp_flags", "drop", badFlags, 8080, 1},
		{"no_service", "no_service", "pass", scanner, 22, 1},
		{"no_service", "no_service", "pass", scanner, 23, 1},
		{"no_service", "no_service", "pass", scanner6, 25, 1},
		{"limited", "client_pps", "drop", flooder, 8080, 1},
		{"syn_limited", "client_cps", "drop", synner, 9090, 1},
	}
	got := collect(t, r, len(wants))
	for i, w := range wants {
		in := got[i]
		g := want{in.Type, in.Reason, in.Action, netip.MustParseAddr(in.Client), in.Port, in.Count}
		if g != w {
			t.Errorf("event %d: got %+v, want %+v", i, g, w)
		}
	}
	if s := r.Stats(); s.Received != uint64(len(wants)) || s.Undecodable != 0 || s.Dropped != 0 {
		t.Errorf("reader stats %+v", s)
	}
	ks, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// the third SYN was throttled in the kernel; the third flood packet never got
	// that far: the datapath's refusal memory dropped it right after parsing
	if ks.EventsSent != uint64(len(wants)) || ks.EventsSuppressed != 1 || ks.EventsLost != 0 {
		t.Errorf("kernel event stats %+v", ks)
	}

	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, ok := <-r.Events(); ok {
		t.Fatal("events channel open after Close")
	}
	if r.Err() != nil {
		t.Fatalf("Err after clean close: %v", r.Err())
	}
}

// collect reads n events, in the order the kernel wrote them, within a bound.
func collect(t *testing.T, r *Reader, n int) []Info {
	t.Helper()
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	var out []Info
	now := time.Now()
	for len(out) < n {
		select {
		case ev, ok := <-r.Events():
			if !ok {
				t.Fatalf("reader stopped after %d events: %v", len(out), r.Err())
			}
			if ev.Family != 4 && ev.Family != 6 {
				t.Fatalf("family %d", ev.Family)
			}
			in := Describe(&ev, loader.MonoToWall)
			if d := in.Time.Sub(now); d > time.Minute || d < -time.Minute {
				t.Fatalf("event time %v is not around now (%v)", in.Time, now)
			}
			out = append(out, in)
		case <-deadline:
			t.Fatalf("only %d of %d events arrived: %v", len(out), n, fmt.Sprint(out))
		}
	}
	return out
}
