package events_test

import (
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/bench/guardbench"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/apiguard/apiguard/userspace/events"
	"github.com/cilium/ebpf"
)

// BenchmarkRingToDetector measures the whole event pipeline: the datapath writes
// events into the ring buffer (prog.Run, a SYN scan from a million sources, one
// no_service event per packet with the kernel's throttle and budget opened up),
// the Reader decodes them into its queue and the detector consumes them.
//
// The producer never lets more events be outstanding than the ring buffer
// holds, so the figure is the throughput with zero loss; the benchmark fails if
// anything was lost anyway.
func BenchmarkRingToDetector(b *testing.B) {
	testenv.RequireRoot(b)
	// the reader alone, to tell the ring buffer's cost from the detector's
	b.Run("reader", func(b *testing.B) { ringPipeline(b, func(*loader.Event) {}) })
	b.Run("detector", func(b *testing.B) { ringPipeline(b, quietDetector(b).Observe) })
}

// quietDetector is a detector with the default configuration whose bans go
// nowhere and whose log is discarded.
func quietDetector(b *testing.B) *detect.Detector {
	det, err := detect.New(detect.DefaultConfig(), detect.Options{
		Banner: detect.BanFunc(func(netip.Prefix, time.Duration, detect.Reason, string) error { return nil }),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	return det
}

// scanDatapath is a datapath with the kernel's event throttle and budget
// opened up, an empty policy, the guard program over a million sources, and
// the SYN to a closed port that makes it write one no_service event per
// packet.
func scanDatapath(b *testing.B) (*loader.Datapath, *guardbench.Programs, []byte) {
	d, err := loader.Load(loader.Options{
		EventInterval:   time.Nanosecond,
		EventsPerSecond: 1 << 31,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	progs, err := guardbench.Open(d, 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { progs.Close() })
	if _, err := d.Apply(&loader.Policy{}); err != nil {
		b.Fatal(err)
	}
	return d, progs, packet.Build(packet.Spec{
		Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.1"),
		Proto: packet.TCP, SrcPort: 40000, DstPort: 9, TCPFlags: packet.SYN,
	})
}

func ringPipeline(b *testing.B, observe func(*loader.Event)) {
	d, progs, frame := scanDatapath(b)
	r, err := events.Open(d.EventsMap(), events.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })

	// one record is 48 bytes plus an 8-byte header; keep well under the ring
	const batch = 4096
	window := (d.EventsMap().MaxEntries() / 56) / 2

	var consumed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range r.Events() {
			observe(&ev)
			consumed.Add(1)
		}
	}()

	b.ResetTimer()
	produced := 0
	var inRun time.Duration
	for produced < b.N {
		n := min(batch, b.N-produced)
		// the kernel suppresses a few events (a source drawn twice within one
		// tick of the coarse clock), so outstanding is an upper bound
		for bounded := 0; produced-int(consumed.Load())+n > int(window); bounded++ {
			if bounded > 1e7 {
				b.Fatalf("consumer stuck at %d of %d", consumed.Load(), produced)
			}
			runtime.Gosched()
		}
		t0 := time.Now()
		if _, err := progs.Guard.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(n)}); err != nil {
			b.Fatal(err)
		}
		inRun += time.Since(t0)
		produced += n
	}
	ks, err := d.Stats()
	if err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for uint64(consumed.Load()) < ks.EventsSent && time.Now().Before(deadline) {
		if err := r.Flush(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()

	got := uint64(consumed.Load())
	rs := r.Stats()
	if got != ks.EventsSent || ks.EventsLost != 0 || rs.Dropped != 0 || ks.EventsSent+ks.EventsSuppressed < uint64(b.N) {
		b.Fatalf("events: %d consumed, %d sent for %d packets; kernel lost %d, suppressed %d; queue dropped %d",
			got, ks.EventsSent, b.N, ks.EventsLost, ks.EventsSuppressed, rs.Dropped)
	}
	b.ReportMetric(float64(got)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(ks.EventsSuppressed), "suppressed")
	// the producer's share: prog.Run time per packet; the rest is waiting
	// for the consumer to make room
	b.ReportMetric(float64(inRun.Nanoseconds())/float64(b.N), "run-ns/pkt")
	if err := r.Close(); err != nil {
		b.Fatal(err)
	}
	<-done
}

// BenchmarkRingDrain measures the daemon's side alone: with no reader open the
// datapath fills the ring buffer (no consumer, so no wake-ups slow it down);
// then the clock runs while a Reader drains it into the detector. Batches stay
// under the ring's capacity, so nothing is lost, and the benchmark checks that.
func BenchmarkRingDrain(b *testing.B) {
	testenv.RequireRoot(b)
	b.Run("reader", func(b *testing.B) { ringDrain(b, func(*loader.Event) {}) })
	b.Run("detector", func(b *testing.B) { ringDrain(b, quietDetector(b).Observe) })
}

func ringDrain(b *testing.B, observe func(*loader.Event)) {
	d, progs, frame := scanDatapath(b)
	// 56 bytes a record with its header; stay well under the capacity
	batch := int(d.EventsMap().MaxEntries()/56) * 3 / 4
	var sentBefore uint64
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		n := min(batch, b.N-done)
		if _, err := progs.Guard.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(n)}); err != nil {
			b.Fatal(err)
		}
		ks, err := d.Stats()
		if err != nil {
			b.Fatal(err)
		}
		want := int(ks.EventsSent - sentBefore) // a few are throttled: a source drawn twice in a tick
		sentBefore = ks.EventsSent
		b.StartTimer()

		r, err := events.Open(d.EventsMap(), events.Options{})
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		limit := time.NewTimer(10 * time.Second)
		for got < want {
			select {
			case ev := <-r.Events():
				observe(&ev)
				got++
			case <-limit.C:
				b.Fatalf("drained %d of %d events", got, want)
			}
		}
		limit.Stop()
		b.StopTimer()
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
		if s := r.Stats(); s.Dropped != 0 || s.Undecodable != 0 {
			b.Fatalf("reader stats %+v", s)
		}
		done += n
		b.StartTimer()
	}
	b.StopTimer()
	ks, err := d.Stats()
	if err != nil {
		b.Fatal(err)
	}
	if ks.EventsLost != 0 {
		b.Fatalf("the ring buffer lost %d events", ks.EventsLost)
	}
	b.ReportMetric(float64(ks.EventsSent)/b.Elapsed().Seconds(), "events/s")
}
