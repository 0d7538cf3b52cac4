package loader

import (
	"math"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel stamps with CLOCK_MONOTONIC (bpf_ktime_get_ns); users think in wall
// time. These convert at the moment of the call.

func monoNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("CLOCK_MONOTONIC unavailable: " + err.Error())
	}
	return uint64(ts.Nano())
}

// MonoToWall converts a kernel timestamp to wall time.
func MonoToWall(mono uint64) time.Time {
	return newMonoClock().wall(mono)
}

// monoClock converts many timestamps with one reading of both clocks, so that
// equal kernel stamps convert to equal wall times.
type monoClock struct {
	wallNow time.Time
	monoNow int64
}

func newMonoClock() monoClock {
	return monoClock{wallNow: time.Now(), monoNow: int64(monoNow())}
}

func (c monoClock) wall(mono uint64) time.Time {
	return c.wallNow.Add(-time.Duration(c.monoNow - int64(mono)))
}

// seen converts a client's sighting, 32 bits of the monotonic clock in
// 2^AG_SEEN_SHIFT ns units (bpf/include/clients.h), to wall time: the latest
// such time not after now. A sighting written after the clock was read (a
// unit or so ahead) is now.
func (c monoClock) seen(v uint32) time.Time {
	now := uint64(c.monoNow) >> seenShift
	age := int32(uint32(now) - v)
	if age < 0 {
		age = 0
	}
	return c.wall((now - uint64(age)) << seenShift)
}

// wallToMono converts a wall time to a kernel timestamp. It saturates: a time
// too far ahead for the 64-bit clock becomes the clock's last instant, never
// a wrapped-around value in the past (Ban refuses such times before this).
func wallToMono(t time.Time) uint64 {
	d := time.Until(t) // saturates at ±292 years itself
	now := int64(monoNow())
	if d > 0 && now > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	m := now + int64(d)
	if m <= 0 {
		return 1 // already expired; 0 would mean "never"
	}
	return uint64(m)
}
