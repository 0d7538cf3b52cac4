package events

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/apiguard/apiguard/loader"
)

// DefaultSubscriberBuffer is a subscriber's queue when it asks for none: a
// terminal following events can fall a second or two behind before it loses any.
const DefaultSubscriberBuffer = 4096

// maxSubscriberBuffer bounds what one subscriber may pin in memory (~3 MiB).
const maxSubscriberBuffer = 1 << 16

// Hub fans events out to subscribers. Publish never blocks: a subscriber whose
// buffer is full misses the event, and the miss is counted for it and in total.
type Hub struct {
	mu     sync.RWMutex
	subs   map[*Subscription]struct{}
	closed bool
	n      atomic.Int32 // len(subs), read without the lock on the hot path

	dropped atomic.Uint64
}

// NewHub returns a Hub without subscribers.
func NewHub() *Hub {
	return &Hub{subs: map[*Subscription]struct{}{}}
}

// Subscription is one subscriber's bounded queue.
type Subscription struct {
	hub     *Hub
	ch      chan loader.Event
	dropped atomic.Uint64
	once    sync.Once
}

// Subscribe adds a subscriber with room for buffer events (0: the default).
func (h *Hub) Subscribe(buffer int) (*Subscription, error) {
	if buffer < 0 || buffer > maxSubscriberBuffer {
		return nil, fmt.Errorf("subscriber buffer %d outside 0..%d", buffer, maxSubscriberBuffer)
	}
	if buffer == 0 {
		buffer = DefaultSubscriberBuffer
	}
	s := &Subscription{hub: h, ch: make(chan loader.Event, buffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(s.ch)
		return s, nil
	}
	h.subs[s] = struct{}{}
	h.n.Store(int32(len(h.subs)))
	return s, nil
}

// Publish offers ev to every subscriber.
func (h *Hub) Publish(ev loader.Event) {
	if h.n.Load() == 0 {
		return
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
			h.dropped.Add(1)
		}
	}
}

// Subscribers is how many subscriptions are open.
func (h *Hub) Subscribers() int { return int(h.n.Load()) }

// Dropped is how many events all subscribers together have missed.
func (h *Hub) Dropped() uint64 { return h.dropped.Load() }

// Close ends every subscription; later subscriptions start closed.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		s.once.Do(func() { close(s.ch) })
		delete(h.subs, s)
	}
	h.n.Store(0)
}

// Events is the subscriber's queue; it is closed by Close on either side.
func (s *Subscription) Events() <-chan loader.Event { return s.ch }

// Dropped is how many events this subscriber missed because it was behind.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close unsubscribes. Events still queued can be drained afterwards.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
	h.n.Store(int32(len(h.subs)))
	s.once.Do(func() { close(s.ch) })
}
