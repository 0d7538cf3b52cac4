package detect

import (
	"math/bits"
	"time"
)

// maxBuckets is a window's resolution: 64 buckets, one bit each for activity.
const maxBuckets = 64

// span is a window cut into buckets: one kernel event interval each, or longer
// when the window holds more than maxBuckets intervals.
type span struct {
	window time.Duration
	bucket int64 // ns
	n      int64 // buckets in the window, 1..maxBuckets
}

func newSpan(window, resolution time.Duration) span {
	b := max(int64(resolution), (int64(window)+maxBuckets-1)/maxBuckets, 1)
	n := (int64(window) + b - 1) / b
	return span{window: window, bucket: b, n: max(1, min(n, maxBuckets))}
}

func (s span) index(ns int64) int64 { return ns / s.bucket }

// ring is a sliding window of per-bucket weights. Bit i of active is bucket
// head-i; weights are indexed by absolute bucket modulo maxBuckets.
type ring struct {
	head   int64
	active uint64
	w      [maxBuckets]uint32
	sum    uint64
}

// advance moves the window's newest bucket to b, forgetting what falls out.
func (r *ring) advance(s span, b int64) {
	if b <= r.head {
		return
	}
	if r.active == 0 {
		r.head = b
		return
	}
	shift := b - r.head
	if shift >= s.n {
		*r = ring{head: b}
		return
	}
	// buckets head-n+1 .. b-n leave the window
	for k := r.head - s.n + 1; k <= b-s.n; k++ {
		i := k & (maxBuckets - 1)
		r.sum -= uint64(r.w[i])
		r.w[i] = 0
	}
	r.active = (r.active << shift) & mask(s.n)
	r.head = b
}

func mask(n int64) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// add counts weight at time ns. Events a little out of order (several CPUs
// share the ring buffer) land in their own bucket; ones older than the window
// are ignored.
func (r *ring) add(s span, ns int64, weight uint64) {
	b := s.index(ns)
	r.advance(s, b)
	age := r.head - b
	if age >= s.n || age < 0 {
		return
	}
	i := b & (maxBuckets - 1)
	weight = min(weight, uint64(^uint32(0)-r.w[i]))
	r.w[i] += uint32(weight)
	r.sum += weight
	r.active |= 1 << age
}

// activeFor is how much of the window saw activity.
func (r *ring) activeFor(s span) time.Duration {
	return time.Duration(int64(bits.OnesCount64(r.active)) * s.bucket)
}

// empty reports whether the window holds nothing at time ns.
func (r *ring) emptyAt(s span, ns int64) bool {
	return r.active == 0 || s.index(ns)-r.head >= s.n
}
