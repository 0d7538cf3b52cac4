package detect

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The ring must agree with a brute-force window over the same additions,
// including late arrivals and long gaps.
func TestRingMatchesBruteForce(t *testing.T) {
	for _, sp := range []span{
		newSpan(time.Minute, time.Second),    // 60 buckets of 1 s
		newSpan(10*time.Minute, time.Second), // 64 buckets of 9.375 s
		newSpan(3*time.Second, time.Second),  // 3 buckets
	} {
		rng := rand.New(rand.NewPCG(7, uint64(sp.n)))
		type add struct {
			bucket int64
			w      uint64
		}
		var adds []add
		var r ring
		now := int64(1000 * time.Second)
		for i := 0; i < 20000; i++ {
			switch x := rng.IntN(100); {
			case x < 70:
				now += rng.Int64N(sp.bucket)
			case x < 95:
				now += rng.Int64N(4 * sp.bucket)
			default:
				now += rng.Int64N(int64(sp.n+3) * sp.bucket) // sometimes a gap longer than the window
			}
			at := now
			if rng.IntN(10) == 0 {
				at -= rng.Int64N(int64(sp.n+2) * sp.bucket) // late
			}
			w := uint64(rng.IntN(5))
			r.add(sp, at, w)
			head := r.head
			if sp.index(at) > head-sp.n {
				adds = append(adds, add{sp.index(at), w})
			}
			// what left the window never comes back
			adds = slices.DeleteFunc(adds, func(a add) bool { return a.bucket <= head-sp.n })
			var sum uint64
			active := map[int64]bool{}
			for _, a := range adds {
				if a.bucket > head-sp.n && a.bucket <= head {
					sum += a.w
					active[a.bucket] = true
				}
			}
			if r.sum != sum || r.activeFor(sp) != time.Duration(int64(len(active))*sp.bucket) {
				t.Fatalf("span %+v step %d: ring sum %d active %v, want %d %d buckets", sp, i, r.sum, r.activeFor(sp), sum, len(active))
			}
		}
	}
}

func TestSpan(t *testing.T) {
	for _, c := range []struct {
		window, res time.Duration
		bucket      time.Duration
		n           int64
	}{
		{time.Minute, time.Second, time.Second, 60},
		{64 * time.Second, time.Second, time.Second, 64},
		{65 * time.Second, time.Second, 1015625 * time.Microsecond, 64},
		{time.Second, time.Second, time.Second, 1},
		{time.Minute, 5 * time.Second, 5 * time.Second, 12},
	} {
		s := newSpan(c.window, c.res)
		if time.Duration(s.bucket) != c.bucket || s.n != c.n {
			t.Errorf("window %v res %v: bucket %v n %d, want %v %d", c.window, c.res, time.Duration(s.bucket), s.n, c.bucket, c.n)
		}
	}
}
