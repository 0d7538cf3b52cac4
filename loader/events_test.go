package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf/ringbuf"
)

// readEvents drains the ring buffer (at most max records).
func readEvents(t *testing.T, d *Datapath, max int) []Event {
	t.Helper()
	rd, err := ringbuf.NewReader(d.EventsMap())
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out []Event
	for i := 0; i < max; i++ {
		rd.SetDeadline(time.Now().Add(100 * time.Millisecond))
		rec, err := rd.Read()
		if errors.Is(err, ringbuf.ErrFlushed) || errors.Is(err, ringbuf.ErrClosed) || isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var e Event
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &e); err != nil {
			t.Fatalf("decode event: %v", err)
		}
		out = append(out, e)
	}
	return out
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// Events are state changes, throttled per client and type: a flood from one
// denied source yields one event and counts the rest as suppressed.
func TestEventsThrottled(t *testing.T) {
	d := newDatapath(t, Options{EventInterval: time.Hour})
	mustApply(t, d, basePolicy())
	// the throttle is per CPU by design: a migration would allow a second event
	testenv.OnOneCPU(t)

	for i := 0; i < 50; i++ {
		runXDP(t, d, packet.Build(udp("198.51.100.5", 53, 0))) // deny hit
	}
	for i := 0; i < 7; i++ {
		runXDP(t, d, packet.Build(tcp("10.6.0.1", 80, packet.ACK))) // 5 pass, 2 limited
	}
	for port := uint16(1000); port < 1005; port++ {
		runXDP(t, d, packet.Build(tcp("10.6.0.2", port, packet.SYN))) // scan: one per port
	}
	runXDP(t, d, packet.Build(tcp("10.6.0.3", 80, 0))) // NULL flags

	evs := readEvents(t, d, 1000)
	count := map[EventType]int{}
	for _, e := range evs {
		count[EventType(e.Type)]++
		switch EventType(e.Type).String() {
		case "deny_hit":
			if got := SourceAddr(&e).String(); got != "198.51.100.5" || Reason(e.Reason).String() != "deny" || e.Family != 4 {
				t.Errorf("deny event: src %s reason %v family %d", got, Reason(e.Reason), e.Family)
			}
		case "limited":
			if Reason(e.Reason).String() != "client_pps" || e.Service != svcHTTP || e.Count != 1 || Action(e.Action) != ActionDrop {
				t.Errorf("limit event: %+v", e)
			}
		}
	}
	want := map[string]int{"deny_hit": 1, "limited": 1, "no_service": 5, "bad_flags": 1}
	for name, n := range want {
		var got int
		for typ, c := range count {
			if typ.String() == name {
				got = c
			}
		}
		if got != n {
			t.Errorf("%s events: got %d, want %d (all: %v)", name, got, n, count)
		}
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// the second limited packet never reaches the limiter: the refusal memory
	// drops it, so it makes no event to suppress
	if st.EventsSent != 8 || st.EventsSuppressed != 49 {
		t.Errorf("events sent %d suppressed %d, want 8 and 49", st.EventsSent, st.EventsSuppressed)
	}
}

// Each event type has its own budget: a random-source flood of SYNs to
// closed ports, one no_service event per source, spends the no_service
// budget, and the events of other kinds still get through. With the one
// global budget of before, the flood left nothing for them. The budget is
// time-based (GCRA): the flood is sent as fast as prog.Run goes, and the
// events that get through are bounded by the burst plus what the elapsed time
// refilled.
func TestEventBudgetsPerType(t *testing.T) {
	// a small budget: the flood outruns its refill however slow the machine
	const perSecond = 10
	d := newDatapath(t, Options{EventsPerSecond: perSecond, EventInterval: time.Hour})
	mustApply(t, d, basePolicy())
	start := time.Now()
	const flood = 1000
	for i := 0; i < flood; i++ {
		src := netip.AddrFrom4([4]byte{10, 7, byte(i >> 8), byte(i)})
		runXDP(t, d, packet.Build(tcp(src.String(), 1234, packet.SYN)))
	}
	// after the flood: a single source over its own limit, a deny hit, and
	// invalid flags, one each
	for i := 0; i < 7; i++ {
		runXDP(t, d, packet.Build(tcp("10.6.0.1", 80, packet.ACK))) // 5 pass, then limited
	}
	runXDP(t, d, packet.Build(udp("198.51.100.5", 53, 0)))
	runXDP(t, d, packet.Build(tcp("10.6.0.3", 80, 0)))
	elapsed := time.Since(start)

	count := map[string]int{}
	for _, e := range readEvents(t, d, 5*flood) {
		count[EventType(e.Type).String()]++
	}
	// the burst (one second's worth), what the elapsed time refilled, and
	// one for the rounding of a partly refilled token
	most := perSecond + int(elapsed.Seconds()*perSecond) + 1
	if n := count["no_service"]; n < perSecond || n > most {
		t.Errorf("%d no_service events for %d sources in %v, want %d to %d", n, flood, elapsed, perSecond, most)
	}
	for _, typ := range []string{"limited", "deny_hit", "bad_flags"} {
		if count[typ] != 1 {
			t.Errorf("%s events: %d, want 1 (all: %v)", typ, count[typ], count)
		}
	}
	if st := stats(t, d); st.EventsSuppressed < uint64(flood-most) {
		t.Errorf("%d events suppressed, want at least %d", st.EventsSuppressed, flood-most)
	}
}
