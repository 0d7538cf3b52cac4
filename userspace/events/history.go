package events

import (
	"fmt"
	"sync"

	"github.com/apiguard/apiguard/loader"
)

// History keeps the latest events for `apiguard events` without --follow:
// a fixed ring, so it costs the same memory under any flood.
type History struct {
	mu   sync.Mutex
	buf  []loader.Event
	next int
	full bool
}

// NewHistory keeps the last size events.
func NewHistory(size int) (*History, error) {
	if size < 1 || size > maxSubscriberBuffer {
		return nil, fmt.Errorf("event history size %d outside 1..%d", size, maxSubscriberBuffer)
	}
	return &History{buf: make([]loader.Event, size)}, nil
}

// Add records ev, forgetting the oldest when full.
func (h *History) Add(ev loader.Event) {
	h.mu.Lock()
	h.buf[h.next] = ev
	h.next++
	if h.next == len(h.buf) {
		h.next, h.full = 0, true
	}
	h.mu.Unlock()
}

// Last returns up to n of the latest events, oldest first.
func (h *History) Last(n int) []loader.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	have := h.next
	if h.full {
		have = len(h.buf)
	}
	n = max(0, min(n, have))
	out := make([]loader.Event, n)
	start := h.next - n
	if start < 0 {
		start += len(h.buf)
	}
	for i := range out {
		out[i] = h.buf[(start+i)%len(h.buf)]
	}
	return out
}
