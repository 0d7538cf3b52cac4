package loader

import (
	"testing"
	"time"
)

// A client's sightings are 32 bits of the monotonic clock in 2^AG_SEEN_SHIFT
// ns units (bpf/include/clients.h): they wrap after about 9 years of uptime.
// seen() reads one as the latest such time not after now, so a sighting
// written just before the wrap and read just after it is minutes old, not 9
// years in the future or the past, and one written a unit after the clock
// was read is now.
func TestSightingAcrossTheWrap(t *testing.T) {
	unit := int64(1) << seenShift
	wall := time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		now  int64 // the monotonic clock, in units
		v    uint32
		age  int64 // units before now
	}{
		{"one unit ago", 1000, 999, 1},
		{"this unit", 1000, 1000, 0},
		{"a unit ahead of the reading", 1000, 1001, 0},
		{"before the wrap, read after it", 1<<32 + 5, 1<<32 - 2, 7},
		{"the wrap's first unit", 1 << 32, 0, 0},
		{"just under half the range", 1<<32 + 1<<31, 1, 1<<31 - 1},
		// the limit clients.h states: past 4.5 years a sighting reads as now
		{"half the range", 1<<32 + 1<<31, 0, 0},
	} {
		clock := monoClock{wallNow: wall, monoNow: c.now * unit}
		want := wall.Add(-time.Duration(c.age * unit))
		if got := clock.seen(c.v); !got.Equal(want) {
			t.Errorf("%s: %v, want %v (%d units ago)", c.name, got, want, c.age)
		}
	}
}
