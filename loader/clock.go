package loader

import (
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

func wallToMono(t time.Time) uint64 {
	d := time.Until(t)
	m := int64(monoNow()) + int64(d)
	if m <= 0 {
		return 1 // already expired; 0 would mean "never"
	}
	return uint64(m)
}
