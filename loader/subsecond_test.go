package loader

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
)

// Rates below one per second (30/m) keep their interval exactly in the
// kernel's 48.16 fixed point.
func TestGCRARate(t *testing.T) {
	for _, tc := range []struct {
		r                   Rate
		interval, tolerance uint64
	}{
		{Rate{PerSecond: 1, Burst: 5}, uint64(time.Second) << 16, 5 * uint64(time.Second)},
		{Rate{PerMinute: 30, Burst: 1}, uint64(2*time.Second) << 16, uint64(2 * time.Second)},
		{Rate{PerMinute: 1, Burst: 3}, uint64(time.Minute) << 16, uint64(3 * time.Minute)},
		// 7/m is not whole nanoseconds: the fraction is kept to 1/65536 ns
		{Rate{PerMinute: 7, Burst: 1}, (uint64(time.Minute) << 16) / 7, uint64(time.Minute) / 7},
		{Rate{PerMinute: 90, Burst: 2}, (uint64(time.Minute) << 16) / 90, 2 * uint64(time.Minute) / 90},
		{Rate{}, 0, 0},
		{Rate{PerMinute: 1, Burst: math.MaxUint64}, uint64(time.Minute) << 16, math.MaxUint64 / 2},
	} {
		i, tol := gcraRate(tc.r)
		if i != tc.interval || tol != tc.tolerance {
			t.Errorf("gcraRate(%+v) = %d, %d; want %d, %d", tc.r, i, tol, tc.interval, tc.tolerance)
		}
	}
}

// TestPerMinuteRateInKernel: a client of a 30/m service may send one packet
// (burst 1); the kernel then holds its next token two seconds after the
// first packet, which its state says exactly (the theoretical arrival time
// lies two seconds past a clock reading taken during that packet's run: the
// client's sightings are too coarse to say it, clients.h), and drops what
// comes before.
func TestPerMinuteRateInKernel(t *testing.T) {
	testenv.RequireRoot(t)
	d := newDatapath(t, Options{})
	mustApply(t, d, &Policy{Services: []Service{{ID: 1, Name: "slow", Proto: ProtoTCP, Ports: []PortRange{{7000, 7000}},
		Client: Limits{Packets: Rate{PerMinute: 30, Burst: 1}}}}})
	s := tcp("10.9.0.1", 7000, packet.ACK)
	var before, after uint64
	for i, want := range []uint32{xdpPass, xdpDrop, xdpDrop} {
		if i == 0 {
			before = monoNow()
		}
		if got := runXDP(t, d, packet.Build(s)); got != want {
			t.Fatalf("packet %d: verdict %d, want %d", i, got, want)
		}
		if i == 0 {
			after = monoNow()
		}
	}
	var key GuardAgClientKey
	var st GuardAgClientState
	found := false
	it := d.objs.Clients.Iterate()
	for it.Next(&key, &st) {
		if addrFrom16(key.Addr) == netip.MustParseAddr("::ffff:10.9.0.1") || addrFrom16(key.Addr) == netip.MustParseAddr("10.9.0.1") {
			found = true
			break
		}
	}
	if err := it.Err(); err != nil || !found {
		t.Fatalf("no state for the client: %v", err)
	}
	if first := st.Tat[0] - uint64(2*time.Second); first < before || first > after {
		t.Errorf("next token %v after the first packet's run began (which took %v), want 2s",
			time.Duration(st.Tat[0]-before), time.Duration(after-before))
	}
	if seen := uint64(st.FirstSeen) << seenShift; seen > after || after-seen >= 2<<seenShift {
		t.Errorf("first seen at %d, the packet ran at %d..%d", seen, before, after)
	}
	// drops as Clients reports them (the refusal memory holds some)
	if c := findClient(t, d, addr("10.9.0.1"), 1); c.Drops != 2 {
		t.Errorf("drops %d, want 2", c.Drops)
	}
}
