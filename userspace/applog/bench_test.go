package applog

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/detect"
)

// benchLines is a mix like an API's access log: mostly 200s, some 404s and
// 401s, IPv4 and IPv6 clients, real user agents, written in the last minute.
func benchLines(n int) [][]byte {
	start := time.Now().Add(-time.Minute).Truncate(time.Minute)
	uas := []string{"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "curl/7.88.1", "python-requests/2.31.0", "okhttp/4.12.0"}
	out := make([][]byte, n)
	for i := range out {
		addr := fmt.Sprintf("198.51.%d.%d", i%200, i%251)
		if i%7 == 0 {
			addr = fmt.Sprintf("2001:db8:%x::%x", i%300, i%97)
		}
		status, req := 200, fmt.Sprintf("GET /api/v1/items/%d?fields=name,price HTTP/1.1", i)
		switch i % 20 {
		case 3:
			status = 404
		case 9:
			status, req = 401, "POST /login HTTP/1.1"
		}
		out[i] = fmt.Appendf(nil, `%s - - [%s] "%s" %d %d "https://app.example.com/dashboard" "%s"`,
			addr, start.Add(time.Duration(i%60)*time.Second).Format("02/Jan/2006:15:04:05 -0700"), req, status, 100+i%5000, uas[i%len(uas)])
	}
	return out
}

// BenchmarkCombined reports lines parsed per second on one core (target 500k).
func BenchmarkCombined(b *testing.B) {
	lines := benchLines(4096)
	var bytes int64
	for _, l := range lines {
		bytes += int64(len(l)) + 1
	}
	var p Combined
	var e Entry
	b.SetBytes(bytes / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := p.Parse(lines[i&4095], &e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

func BenchmarkJSONLines(b *testing.B) {
	lines := make([][]byte, 1024)
	for i := range lines {
		lines[i] = fmt.Appendf(nil, `{"time_iso8601":"2026-11-27T10:22:%02d+00:00","remote_addr":"198.51.%d.%d","request":"GET /api/v1/items/%d HTTP/1.1","status":"%d","request_time":"0.0%02d","http_x_forwarded_for":"-"}`,
			i%60, i%200, i%251, i, 200+(i%5)*100, i%100)
	}
	p, err := NewJSONLines(DefaultFields())
	if err != nil {
		b.Fatal(err)
	}
	var e Entry
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// 300 and 500 are valid statuses too
		if err := p.Parse(lines[i&1023], &e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkParseTime is what dating a line that may count costs: $time_local
// and $time_iso8601 (only 4xx and 5xx lines are dated).
func BenchmarkParseTime(b *testing.B) {
	for _, c := range []struct{ name, text string }{
		{"time_local", "27/Nov/2026:10:22:02 +0100"},
		{"iso8601", "2026-11-27T10:22:02+01:00"},
		{"msec", "1764238922.123"},
	} {
		b.Run(c.name, func(b *testing.B) {
			text := []byte(c.text)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseTime(text); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSourcePipeline is the whole path on one file: follow, split,
// parse, attribute, and the API rules of a real detector (a 4xx in ten
// lines). b.N lines are written first; the time is reading them all.
func BenchmarkSourcePipeline(b *testing.B) {
	lines := benchLines(4096)
	path := filepath.Join(b.TempDir(), "access.log")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range b.N {
		w.Write(lines[i&4095])
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	det, err := detect.New(detect.DefaultConfig(), detect.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	src, err := NewSource(SourceConfig{Follow: FollowOptions{Path: path, FromStart: true, Poll: time.Millisecond}},
		det.ObserveSignal, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	go func() { done <- src.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for src.Stats().Lines < uint64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d lines read after 5 minutes", src.Stats().Lines, b.N)
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if st := src.Stats(); st.ParseErrors != 0 {
		b.Fatalf("%d parse errors", st.ParseErrors)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
