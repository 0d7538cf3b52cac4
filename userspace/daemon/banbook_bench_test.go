package daemon

import (
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// oldSave is how the book was saved before the journal (bans.json rewritten
// whole, synced and renamed after every ban), kept for the comparison.
func oldSave(path string, recs map[netip.Prefix]banRecord) error {
	f := banFile{Bans: make([]banRecord, 0, len(recs))}
	for _, r := range recs {
		f.Bans = append(f.Bans, r)
	}
	slices.SortFunc(f.Bans, func(x, y banRecord) int { return comparePrefix(x.Prefix, y.Prefix) })
	return writeJSONFile(path, f)
}

// BenchmarkBanBook is the cost of adding one ban to a book that holds n:
// the old bans.json rewrite, the journal with an fdatasync per ban (a ban by
// hand, answered once on disk) and without (a detector ban, synced within a
// second). The ban map write in the kernel is not included.
func BenchmarkBanBook(b *testing.B) {
	sizes := []int{1000, 20_000, 100_000}
	now := time.Now()
	// the journal first: the old path's rewrites of megabytes leave the disk
	// busy for a while after each, which the journal's syncs would pay for
	for _, synced := range []bool{false, true} {
		name := "journal"
		if synced {
			name = "journal-synced"
		}
		for _, n := range sizes {
			b.Run(fmt.Sprintf("%s/bans=%d", name, n), func(b *testing.B) {
				book := benchBook(b, n, now)
				b.ResetTimer()
				for i := range b.N {
					book.mu.Lock()
					seq, err := book.putLocked(bookRecord(n+i, now))
					book.mu.Unlock()
					if err == nil && synced {
						err = book.sync(seq)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/ban")
			})
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("old/bans=%d", n), func(b *testing.B) {
			recs := make(map[netip.Prefix]banRecord, n+b.N)
			for i := range n {
				r := bookRecord(i, now)
				recs[r.Prefix] = r
			}
			path := filepath.Join(b.TempDir(), banStateFile)
			b.ResetTimer()
			for i := range b.N {
				r := bookRecord(n+i, now)
				recs[r.Prefix] = r
				if err := oldSave(path, recs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/ban")
		})
	}
}

// benchBook is a journal holding n bans, on disk.
func benchBook(b *testing.B, n int, now time.Time) *banBook {
	b.Helper()
	book, err := openBook(b.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { book.close() })
	book.mu.Lock()
	for i := range n {
		if _, err := book.putLocked(bookRecord(i, now)); err != nil {
			b.Fatal(err)
		}
	}
	book.mu.Unlock()
	if err := book.j.SyncAll(); err != nil {
		b.Fatal(err)
	}
	return book
}

// BenchmarkBanBookCompact100k compacts a journal of 200k bans and 100k
// unbans while a writer adds a ban every 100 µs: the time a compaction takes,
// and the longest a ban waited meanwhile, against the longest wait of the same
// writer for as long without a compaction (scheduling and GC on a shared
// machine).
func BenchmarkBanBookCompact100k(b *testing.B) {
	const n = 100_000
	now := time.Now()
	var during, without time.Duration
	for range b.N {
		b.StopTimer()
		book := benchBook(b, 2*n, now)
		book.mu.Lock()
		var gone []netip.Prefix
		for i := range n {
			gone = append(gone, addr4(i))
		}
		if _, err := book.dropLocked(gone...); err != nil {
			b.Fatal(err)
		}
		book.mu.Unlock()
		b.StartTimer()
		start := time.Now()
		stop := make(chan struct{})
		worst := banWriter(b, book, now, stop)
		err := book.compact(now)
		close(stop)
		during = max(during, <-worst)
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if st := book.j.Stats(); st.Records > n+20_000 {
			b.Fatalf("after the compaction: %+v", st)
		}
		b.StopTimer()
		stop = make(chan struct{})
		worst = banWriter(b, book, now, stop)
		time.Sleep(took)
		close(stop)
		without = max(without, <-worst)
		b.StartTimer()
	}
	b.ReportMetric(float64(during.Microseconds())/1000, "ms-worst-ban-during")
	b.ReportMetric(float64(without.Microseconds())/1000, "ms-worst-ban-without")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/compaction")
}

// banWriter adds a ban every 100 µs until stop, and sends the longest one took.
func banWriter(b *testing.B, book *banBook, now time.Time, stop chan struct{}) <-chan time.Duration {
	out := make(chan time.Duration, 1)
	go func() {
		var worst time.Duration
		defer func() { out <- worst }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			book.mu.Lock()
			_, err := book.putLocked(bookRecord(300_000+i%1000, now))
			book.mu.Unlock()
			worst = max(worst, time.Since(start))
			if err != nil {
				b.Error(err)
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	return out
}
