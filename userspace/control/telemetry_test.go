package control

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/detect"
)

type fakeFeed struct {
	ch     chan Event
	missed func() uint64
	closed chan struct{}
	once   sync.Once
}

func (f *fakeFeed) Next(ctx context.Context) (Event, bool) {
	select {
	case ev, ok := <-f.ch:
		return ev, ok
	case <-ctx.Done():
		return Event{}, false
	}
}
func (f *fakeFeed) Missed() uint64 { return f.missed() }
func (f *fakeFeed) Close()         { f.once.Do(func() { close(f.closed) }) }

// telemetryBackend is a Backend with events and a detector.
type telemetryBackend struct {
	fakeBackend
	mu       sync.Mutex
	recent   []Event
	askedN   int
	feed     *fakeFeed
	missed   uint64
	flags    []Flag
	askedAct bool
}

func (b *telemetryBackend) RecentEvents(_ context.Context, n int) ([]Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.askedN = n
	return b.recent[len(b.recent)-min(n, len(b.recent)):], nil
}

func (b *telemetryBackend) FollowEvents(context.Context) (EventFeed, error) {
	return b.feed, nil
}

func (b *telemetryBackend) Flagged(_ context.Context, active bool) ([]Flag, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.askedAct = active
	return b.flags, nil
}

func newTelemetryBackend() *telemetryBackend {
	b := &telemetryBackend{}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 5; i++ {
		b.recent = append(b.recent, Event{Time: base.Add(time.Duration(i) * time.Second), Type: "deny_hit", Client: "192.0.2.1", Count: uint64(i)})
	}
	b.feed = &fakeFeed{ch: make(chan Event), closed: make(chan struct{})}
	b.feed.missed = func() uint64 { b.mu.Lock(); defer b.mu.Unlock(); return b.missed }
	b.flags = []Flag{{Prefix: netip.MustParsePrefix("203.0.113.7/32"), Reason: detect.Scan, Action: detect.ActionBan, Episodes: 1,
		Evidence: detect.Evidence{Window: 10 * time.Second, Ports: 40, Summary: "SYNs to 40 ports"}}}
	return b
}

func TestEventsEndpoint(t *testing.T) {
	b := newTelemetryBackend()
	c := NewClient(serve(t, b, func(s *Server) { s.allow = func(Peer) error { return nil } }))
	defer c.Close()
	ctx := context.Background()

	evs, err := c.Events(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].Count != 2 || b.askedN != 3 {
		t.Fatalf("recent: %+v (asked %d)", evs, b.askedN)
	}

	// follow: the backlog, then live events; a miss shows up as its own line
	var got []Event
	done := make(chan error, 1)
	go func() {
		done <- c.FollowEvents(ctx, 2, func(ev Event) error { got = append(got, ev); return nil })
	}()
	b.feed.ch <- Event{Type: "limited", Client: "198.51.100.9", Count: 7}
	b.mu.Lock()
	b.missed = 4
	b.mu.Unlock()
	b.feed.ch <- Event{Type: "ban_hit", Client: "198.51.100.9"}
	close(b.feed.ch) // the daemon stops: the stream ends cleanly
	if err := <-done; err != nil {
		t.Fatalf("follow: %v", err)
	}
	types := []string{}
	for _, ev := range got {
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "deny_hit,deny_hit,limited,missed,ban_hit" || got[3].Count != 4 || got[2].Count != 7 {
		t.Fatalf("followed %+v", got)
	}
	select {
	case <-b.feed.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the feed was not closed after the stream ended")
	}

	// a follower that hangs up ends its stream on the server
	b.feed = &fakeFeed{ch: make(chan Event), closed: make(chan struct{}), missed: func() uint64 { return 0 }}
	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- c.FollowEvents(cctx, 0, func(Event) error { cancel(); return nil }) }()
	b.feed.ch <- Event{Type: "limited"}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled follow: %v", err)
	}
	select {
	case <-b.feed.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the server kept following after the client hung up")
	}

	// a failing callback stops the follow with its error
	b.feed = &fakeFeed{ch: make(chan Event, 1), closed: make(chan struct{}), missed: func() uint64 { return 0 }}
	stop := errors.New("enough")
	if err := c.FollowEvents(ctx, 1, func(Event) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("callback error: %v", err)
	}
}

func TestFlaggedEndpoint(t *testing.T) {
	b := newTelemetryBackend()
	c := NewClient(serve(t, b, func(s *Server) { s.allow = func(Peer) error { return nil } }))
	defer c.Close()
	fs, err := c.Flagged(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || fs[0].Reason != detect.Scan || fs[0].Evidence.Ports != 40 || fs[0].Evidence.Window != 10*time.Second || !b.askedAct {
		t.Fatalf("flags %+v (active asked %v)", fs, b.askedAct)
	}
	if fs[0].Prefix != netip.MustParsePrefix("203.0.113.7/32") || fs[0].Evidence.Summary != "SYNs to 40 ports" {
		t.Fatalf("flag %+v", fs[0])
	}
}

func TestTelemetryEndpointsRefuse(t *testing.T) {
	plain := serve(t, &fakeBackend{}, func(s *Server) { s.allow = func(Peer) error { return nil } })
	for _, target := range []string{PathEvents, PathClientsFlagged} {
		if code, body := rawDo(t, plain, http.MethodGet, target, nil); code != http.StatusNotFound || body.Error == "" {
			t.Errorf("%s on a backend without it: %d %q", target, code, body.Error)
		}
	}
	path := serve(t, newTelemetryBackend(), func(s *Server) { s.allow = func(Peer) error { return nil } })
	for _, target := range []string{PathEvents + "?n=-1", PathEvents + "?n=10001", PathEvents + "?n=x",
		PathEvents + "?follow=maybe", PathClientsFlagged + "?active=2"} {
		if code, body := rawDo(t, path, http.MethodGet, target, nil); code != http.StatusBadRequest || body.Error == "" {
			t.Errorf("%s: %d %q", target, code, body.Error)
		}
	}
	if code, _ := rawDo(t, path, http.MethodPost, PathEvents, nil); code != http.StatusMethodNotAllowed {
		t.Errorf("POST events: %d", code)
	}
}
