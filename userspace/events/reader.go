package events

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/apiguard/apiguard/loader"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// DefaultQueueSize holds more than a second of the kernel's default event
// budgets (5000/s for each of its ten event types) all spent at once: the
// queue only fills if the detector stalls.
const DefaultQueueSize = 1 << 16

// Options tune a Reader. Zero values take the defaults.
type Options struct {
	// QueueSize is how many decoded events wait for the consumer before new
	// ones are dropped (and counted).
	QueueSize int
}

// Stats are a Reader's counters since it opened.
type Stats struct {
	// Received is every record read from the ring buffer.
	Received uint64
	// ByType counts decoded events per type; index with loader.EventType.
	ByType map[loader.EventType]uint64
	// Undecodable records had the wrong size or impossible field values.
	Undecodable uint64
	// Dropped events were decoded but the queue was full.
	Dropped uint64
}

// Reader decodes ring-buffer records into a bounded queue. It never blocks on
// a slow consumer: what does not fit is dropped and counted, so the kernel's
// ring buffer keeps draining.
type Reader struct {
	rb   *ringbuf.Reader
	out  chan loader.Event
	done chan struct{}
	err  error // the loop's terminal error; read after done is closed

	closeOnce sync.Once

	received    atomic.Uint64
	undecodable atomic.Uint64
	dropped     atomic.Uint64
	byType      []atomic.Uint64 // index: event type
}

// Open starts reading the ring buffer m (loader.Datapath.EventsMap()).
func Open(m *ebpf.Map, opts Options) (*Reader, error) {
	if opts.QueueSize < 0 {
		return nil, fmt.Errorf("event queue size %d is negative", opts.QueueSize)
	}
	if opts.QueueSize == 0 {
		opts.QueueSize = DefaultQueueSize
	}
	rb, err := ringbuf.NewReader(m)
	if err != nil {
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	r := &Reader{
		rb:     rb,
		out:    make(chan loader.Event, opts.QueueSize),
		done:   make(chan struct{}),
		byType: make([]atomic.Uint64, numTypes+1),
	}
	go r.loop()
	return r, nil
}

// Events is the queue. It is closed when the Reader stops (Close, or a read
// error reported by Err).
func (r *Reader) Events() <-chan loader.Event { return r.out }

func (r *Reader) loop() {
	defer close(r.done)
	defer close(r.out)
	var rec ringbuf.Record
	var ev loader.Event
	for {
		err := r.rb.ReadInto(&rec)
		if err != nil {
			switch {
			case errors.Is(err, ringbuf.ErrClosed):
				return
			case errors.Is(err, ringbuf.ErrFlushed), errors.Is(err, os.ErrDeadlineExceeded):
				// Flush and deadlines only wake the reader; records keep coming.
				continue
			}
			r.err = fmt.Errorf("read event ring buffer: %w", err)
			return
		}
		r.handle(rec.RawSample, &ev)
	}
}

// handle decodes one record and queues it, counting what goes wrong.
func (r *Reader) handle(raw []byte, ev *loader.Event) {
	r.received.Add(1)
	if err := Decode(raw, ev); err != nil {
		r.undecodable.Add(1)
		return
	}
	r.byType[ev.Type].Add(1)
	select {
	case r.out <- *ev:
	default:
		r.dropped.Add(1)
	}
}

// Flush makes the Reader pass on everything the kernel has written so far
// without waiting for the ring buffer's wake-up threshold. Tests use it.
func (r *Reader) Flush() error {
	if err := r.rb.Flush(); err != nil {
		return fmt.Errorf("flush event ring buffer: %w", err)
	}
	return nil
}

// Close stops the Reader and waits for it; the Events channel is then closed.
// It returns the error that stopped the loop earlier, if any.
func (r *Reader) Close() error {
	var cerr error
	r.closeOnce.Do(func() {
		if err := r.rb.Close(); err != nil {
			cerr = fmt.Errorf("close event ring buffer: %w", err)
		}
	})
	<-r.done
	return errors.Join(cerr, r.err)
}

// Err is the read error that stopped the Reader, or nil while it runs or after
// a clean Close.
func (r *Reader) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Alive reports whether the reader still reads the ring buffer: false once it
// was closed or failed (Err says how).
func (r *Reader) Alive() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// Stats reads the counters. Safe to call at any time, from any goroutine.
func (r *Reader) Stats() Stats {
	s := Stats{
		Received:    r.received.Load(),
		Undecodable: r.undecodable.Load(),
		Dropped:     r.dropped.Load(),
		ByType:      make(map[loader.EventType]uint64, numTypes),
	}
	for _, t := range loader.EventTypes() {
		s.ByType[t] = r.byType[t].Load()
	}
	return s
}
