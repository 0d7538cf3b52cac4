package events

import (
	"testing"

	"github.com/apiguard/apiguard/loader"
)

func ev(n uint64) loader.Event {
	return loader.Event{Ts: n, Type: 1, Family: 4}
}

func TestHubFastAndSlowSubscribers(t *testing.T) {
	h := NewHub()
	fast, err := h.Subscribe(100)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := h.Subscribe(3)
	if err != nil {
		t.Fatal(err)
	}
	if h.Subscribers() != 2 {
		t.Fatalf("subscribers = %d", h.Subscribers())
	}
	for i := uint64(1); i <= 10; i++ {
		h.Publish(ev(i))
	}
	// the slow one kept the first three and missed seven; the fast one missed none
	if slow.Dropped() != 7 || fast.Dropped() != 0 || h.Dropped() != 7 {
		t.Fatalf("dropped: slow %d fast %d hub %d", slow.Dropped(), fast.Dropped(), h.Dropped())
	}
	for i := uint64(1); i <= 3; i++ {
		if got := <-slow.Events(); got.Ts != i {
			t.Fatalf("slow got ts %d, want %d", got.Ts, i)
		}
	}
	for i := uint64(1); i <= 10; i++ {
		if got := <-fast.Events(); got.Ts != i {
			t.Fatalf("fast got ts %d, want %d", got.Ts, i)
		}
	}

	slow.Close()
	slow.Close() // idempotent
	if _, ok := <-slow.Events(); ok {
		t.Fatal("closed subscription still delivers")
	}
	h.Publish(ev(11))
	if got := <-fast.Events(); got.Ts != 11 || h.Subscribers() != 1 {
		t.Fatalf("after unsubscribe: ts %d, subscribers %d", got.Ts, h.Subscribers())
	}

	h.Close()
	if _, ok := <-fast.Events(); ok {
		t.Fatal("hub Close left a subscription open")
	}
	fast.Close() // after the hub closed it: no panic
	late, err := h.Subscribe(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := <-late.Events(); ok {
		t.Fatal("subscription to a closed hub is open")
	}
}

func TestHubRejectsBadBuffer(t *testing.T) {
	h := NewHub()
	for _, n := range []int{-1, maxSubscriberBuffer + 1} {
		if _, err := h.Subscribe(n); err == nil {
			t.Errorf("buffer %d accepted", n)
		}
	}
	s, err := h.Subscribe(0)
	if err != nil || cap(s.ch) != DefaultSubscriberBuffer {
		t.Fatalf("default buffer: %v cap %d", err, cap(s.ch))
	}
}

// Publishing while subscribers come and go must neither race nor panic on a
// closed channel (run with -race).
func TestHubConcurrentChurn(t *testing.T) {
	h := NewHub()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			s, err := h.Subscribe(1)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		}
	}()
	for i := uint64(0); i < 20000; i++ {
		h.Publish(ev(i))
	}
	<-done
	if h.Subscribers() != 0 {
		t.Fatalf("subscribers left: %d", h.Subscribers())
	}
}
