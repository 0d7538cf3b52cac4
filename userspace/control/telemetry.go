package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/apiguard/apiguard/userspace/events"
)

// Telemetry endpoints. A Backend that keeps events implements EventSource; one
// that runs the detector implements FlagSource. Others answer 404.
const (
	PathEvents         = "/v1/events"          // GET ?n=&follow=
	PathClientsFlagged = "/v1/clients/flagged" // GET ?active=
)

// Bounds of the events endpoint.
const (
	MaxEvents     = 10000
	DefaultEvents = 20
)

// Event is one datapath event as the API shows it (one NDJSON line with follow).
type Event = events.Info

// MissedEvent is the Type of the line a follower gets in place of events it
// missed because it read too slowly; Count says how many.
const MissedEvent = "missed"

// Flag is one flagged client, with its reason, evidence and ban.
type Flag = detect.Flag

// EventFeed is one follower's live events.
type EventFeed interface {
	// Next waits for the next event; ok is false once the feed has ended
	// (the daemon is stopping) or ctx is done.
	Next(ctx context.Context) (ev Event, ok bool)
	// Missed is how many events this follower has missed so far.
	Missed() uint64
	Close()
}

// EventSource is a Backend that keeps the latest events and streams new ones.
type EventSource interface {
	RecentEvents(ctx context.Context, n int) ([]Event, error)
	FollowEvents(ctx context.Context) (EventFeed, error)
}

// FlagSource is a Backend that flags clients.
type FlagSource interface {
	Flagged(ctx context.Context, activeOnly bool) ([]Flag, error)
}

func boolParam(q url.Values, name string) (bool, error) {
	v := q.Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, Invalidf("%s=%q: want true or false", name, v)
	}
	return b, nil
}

// events answers GET /v1/events: the latest n events as a JSON array, or with
// follow=true those and then every new one, one JSON object per line, until
// the caller hangs up or the daemon stops.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	src, ok := s.backend.(EventSource)
	if !ok {
		s.fail(w, NotFoundf("this daemon keeps no events"))
		return
	}
	q := r.URL.Query()
	n := DefaultEvents
	if v := q.Get("n"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 || n > MaxEvents {
			s.fail(w, Invalidf("n=%q: want a whole number from 0 to %d", v, MaxEvents))
			return
		}
	}
	follow, err := boolParam(q, "follow")
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx := r.Context()
	recent, err := src.RecentEvents(ctx, n)
	if !follow || err != nil {
		if recent == nil {
			recent = []Event{}
		}
		s.reply(w, recent, err)
		return
	}
	// subscribe before sending the backlog, so nothing falls in between
	feed, err := src.FollowEvents(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	defer feed.Close()
	rc := http.NewResponseController(w)
	// a follow lasts as long as the follower wants: no write deadline
	if err := rc.SetWriteDeadline(time.Time{}); err != nil {
		s.log.Warn("events: cannot lift the write deadline; the stream ends with it", "err", err)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, ev := range recent {
		if enc.Encode(ev) != nil {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	var missed uint64
	for {
		ev, ok := feed.Next(ctx)
		if !ok {
			return
		}
		if m := feed.Missed(); m > missed {
			if enc.Encode(Event{Time: time.Now(), Type: MissedEvent, Count: m - missed}) != nil {
				return
			}
			missed = m
		}
		// the follower went away if a write fails
		if enc.Encode(ev) != nil || rc.Flush() != nil {
			return
		}
	}
}

// flagged answers GET /v1/clients/flagged.
func (s *Server) flagged(w http.ResponseWriter, r *http.Request) {
	src, ok := s.backend.(FlagSource)
	if !ok {
		s.fail(w, NotFoundf("this daemon runs no detector"))
		return
	}
	active, err := boolParam(r.URL.Query(), "active")
	if err != nil {
		s.fail(w, err)
		return
	}
	flags, err := src.Flagged(r.Context(), active)
	if flags == nil {
		flags = []Flag{}
	}
	s.reply(w, flags, err)
}

// Events returns up to n of the latest events, oldest first.
func (c *Client) Events(ctx context.Context, n int) ([]Event, error) {
	var evs []Event
	return evs, c.do(ctx, http.MethodGet, PathEvents, url.Values{"n": {strconv.Itoa(n)}}, nil, &evs)
}

// FollowEvents calls fn with the latest n events and then with every new one
// until ctx ends (it then returns ctx's error), the daemon stops (nil), or fn
// fails (its error). Lines of type MissedEvent stand for events missed.
func (c *Client) FollowEvents(ctx context.Context, n int, fn func(Event) error) error {
	u := url.URL{Scheme: "http", Host: "apiguard", Path: PathEvents,
		RawQuery: url.Values{"n": {strconv.Itoa(n)}, "follow": {"true"}}.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.connError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev Event
		err := dec.Decode(&ev)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, io.EOF):
			return nil // the daemon ended the stream
		default:
			return fmt.Errorf("read event stream: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// Flagged lists the flagged clients, the latest evidence first; activeOnly
// leaves out those whose behaviour stopped.
func (c *Client) Flagged(ctx context.Context, activeOnly bool) ([]Flag, error) {
	var fs []Flag
	return fs, c.do(ctx, http.MethodGet, PathClientsFlagged, url.Values{"active": {strconv.FormatBool(activeOnly)}}, nil, &fs)
}
