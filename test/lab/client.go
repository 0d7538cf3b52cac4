package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/apiguard/apiguard/test/netns"
)

// ClientConfig shapes the legitimate client.
type ClientConfig struct {
	// From is the index of the client namespace it runs in (default 0).
	From int
	// Target is the server's address (default the server's IPv4 address).
	Target netip.Addr
	// Port is the API's port (default 80).
	Port int
	// Rate is requests per second, sent on schedule whether or not earlier
	// ones have been answered, as independent users would (default 50).
	Rate float64
	// Timeout bounds one request, connection included (default 1s).
	Timeout time.Duration
	// NewConnEvery closes the connection after every Nth request, so that
	// the client keeps opening connections like a stream of short sessions;
	// 0 keeps connections alive as long as the server does.
	NewConnEvery int
}

// Result is one request's outcome.
type Result struct {
	Done    time.Time // when it completed or failed
	Latency time.Duration
	OK      bool
	Err     string // why it failed, in a few words
}

// Client is the legitimate client: it sends a mix of GET /items/{id} and
// POST /login at a steady rate from the client namespace and records every
// outcome.
type Client struct {
	cfg    ClientConfig
	hc     *http.Client
	tr     *http.Transport
	dialer *netns.Dialer
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{}

	mu      sync.Mutex
	results []Result
}

// StartClient starts the client; Stop ends it. The lab stops it when it closes.
func (l *Lab) StartClient(cfg ClientConfig) (*Client, error) {
	if cfg.From < 0 || cfg.From >= len(l.Clients) {
		return nil, fmt.Errorf("client %d: the lab has %d", cfg.From, len(l.Clients))
	}
	if !cfg.Target.IsValid() {
		cfg.Target = l.Server.Addr4
	}
	if cfg.Port == 0 {
		cfg.Port = 80
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 50
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	d, err := l.Clients[cfg.From].Dialer(4)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, tr: tr, hc: &http.Client{Transport: tr, Timeout: cfg.Timeout},
		dialer: d, cancel: cancel, done: make(chan struct{})}
	go c.run(ctx)
	l.onClose(func() error { c.Stop(); return nil })
	return c, nil
}

func (c *Client) run(ctx context.Context) {
	defer close(c.done)
	base := "http://" + netip.AddrPortFrom(c.cfg.Target, uint16(c.cfg.Port)).String()
	interval := time.Duration(float64(time.Second) / c.cfg.Rate)
	next := time.Now()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		next = next.Add(interval)
		if late := time.Since(next); late > time.Second {
			next = time.Now() // the process was stalled: do not burst to catch up
		}
		closeAfter := c.cfg.NewConnEvery > 0 && i%c.cfg.NewConnEvery == c.cfg.NewConnEvery-1
		login := i%10 == 9
		item := 1 + rng.IntN(MaxItemID)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.record(c.request(ctx, base, login, item, closeAfter))
		}()
	}
}

func (c *Client) request(ctx context.Context, base string, login bool, item int, closeAfter bool) Result {
	start := time.Now()
	var (
		req *http.Request
		err error
	)
	if login {
		body, _ := json.Marshal(LoginRequest{User: "alice", Password: "wonderland"})
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/login", bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+"/items/"+strconv.Itoa(item), nil)
	}
	if err != nil {
		return Result{Done: time.Now(), Err: err.Error()}
	}
	req.Close = closeAfter
	resp, err := c.hc.Do(req)
	if err != nil {
		return Result{Done: time.Now(), Latency: time.Since(start), Err: shortError(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	r := Result{Done: time.Now(), Latency: time.Since(start)}
	switch {
	case err != nil:
		r.Err = shortError(err)
	case resp.StatusCode != http.StatusOK:
		r.Err = "HTTP " + strconv.Itoa(resp.StatusCode)
	case !json.Valid(data):
		r.Err = "invalid JSON"
	default:
		r.OK = true
	}
	return r
}

// shortError names a failure the way a person reading the demo would.
func shortError(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection reset"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return err.Error()
}

func (c *Client) record(r Result) {
	if r.Err == "canceled" {
		return // stopped by Stop, not a failure of the server
	}
	c.mu.Lock()
	c.results = append(c.results, r)
	c.mu.Unlock()
}

// Stop ends the client and waits for requests in flight.
func (c *Client) Stop() {
	c.cancel()
	<-c.done
	c.wg.Wait()
	c.tr.CloseIdleConnections()
	c.dialer.Close()
}

// ClientStats summarise the requests that completed in a time window.
type ClientStats struct {
	Requests int
	OK       int
	// P50 and P99 count a failed request at the client's timeout: a request
	// that never came back is as slow as the client lets it be.
	P50, P99 time.Duration
	Errors   map[string]int
}

// SuccessRate is OK/Requests, 1 for an empty window.
func (s ClientStats) SuccessRate() float64 {
	if s.Requests == 0 {
		return 1
	}
	return float64(s.OK) / float64(s.Requests)
}

func (s ClientStats) String() string {
	return fmt.Sprintf("%d/%d ok (%.1f%%), p50 %v, p99 %v, errors %v",
		s.OK, s.Requests, 100*s.SuccessRate(), s.P50.Round(100*time.Microsecond), s.P99.Round(100*time.Microsecond), s.Errors)
}

// Stats summarises the requests that completed in [from, to): what the
// client saw in that time, for a live view.
func (c *Client) Stats(from, to time.Time) ClientStats {
	return c.stats(from, to, func(r Result) time.Time { return r.Done })
}

// StatsStarted summarises the requests sent in [from, to), wherever they
// ended: call it once the client's timeout has passed after to, and every
// request sent during an attack is counted, the slow ones included.
func (c *Client) StatsStarted(from, to time.Time) ClientStats {
	return c.stats(from, to, func(r Result) time.Time { return r.Done.Add(-r.Latency) })
}

func (c *Client) stats(from, to time.Time, at func(Result) time.Time) ClientStats {
	c.mu.Lock()
	var lat []time.Duration
	st := ClientStats{Errors: map[string]int{}}
	for _, r := range c.results {
		if t := at(r); t.Before(from) || !t.Before(to) {
			continue
		}
		st.Requests++
		l := r.Latency
		if r.OK {
			st.OK++
		} else {
			st.Errors[r.Err]++
			l = max(l, c.cfg.Timeout)
		}
		lat = append(lat, l)
	}
	c.mu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		st.P50 = lat[(len(lat)-1)*50/100]
		st.P99 = lat[(len(lat)-1)*99/100]
	}
	return st
}
