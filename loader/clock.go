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
	now := time.Now()
	return now.Add(-time.Duration(int64(monoNow()) - int64(mono)))
}

func wallToMono(t time.Time) uint64 {
	d := time.Until(t)
	m := int64(monoNow()) + int64(d)
	if m <= 0 {
		return 1 // already expired; 0 would mean "never"
	}
	return uint64(m)
}
