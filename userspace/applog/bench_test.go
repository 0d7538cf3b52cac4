package applog

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
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

// probeLines are benchLines with what the API-layer detectors of issue 18
// look for mixed in, in the proportions of an API under a slow scan: one
// line in 10 a search whose query needs decoding (quotes, spaces, non-ASCII),
// one in 50 an injection payload, one in 100 a scanner's user agent asking
// for a sensitive file.
func probeLines(n int) [][]byte {
	out := benchLines(n)
	searches := []string{"q=O%27Reilly+books", "q=select+a+script+for+the+play", "q=caf%C3%A9+cr%C3%A8me", "q=%22exact+phrase%22&page=2"}
	payloads := []string{"id=1%27%20or%20%271%27%3D%271", "q=%3Cscript%3Ealert(1)%3C/script%3E", "host=127.0.0.1%3Bcat%20/etc/passwd",
		"file=..%2f..%2f..%2fetc%2fpasswd", "name=%7B%7B7*7%7D%7D"}
	for i := range out {
		var req, ua string
		status := 200
		switch {
		case i%100 == 51:
			req, ua, status = "GET /.git/config HTTP/1.1", "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000063)", 404
		case i%50 == 13:
			req, ua = "GET /api/v1/items?"+payloads[i%len(payloads)]+" HTTP/1.1", "curl/7.88.1"
		case i%10 == 5:
			req, ua = "GET /api/v1/search?"+searches[i%len(searches)]+" HTTP/1.1", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
		default:
			continue
		}
		addr, _, _ := bytes.Cut(out[i], []byte(" "))
		out[i] = fmt.Appendf(nil, `%s - - [%s] "%s" %d 512 "-" "%s"`, addr, time.Now().Add(-30*time.Second).Format("02/Jan/2006:15:04:05 -0700"), req, status, ua)
	}
	return out
}

// BenchmarkSourcePipeline is the whole path on one file: follow, split,
// parse, attribute, and a real detector's API rules, with the lines of
// probeLines. "detectors=off" is the path before issue 18 (status rules
// only: no matcher), "detectors=on" screens every line for payloads and
// scanners' user agents and runs all seven API rules. b.N lines are written
// first; the time is reading them all. lines/s is wall-clock;
// lines/cpu-s counts the process's CPU time (user and system), the
// per-core figure, which load from other processes does not dilute.
func BenchmarkSourcePipeline(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("detectors=%s", map[bool]string{false: "off", true: "on"}[on]), func(b *testing.B) {
			sourcePipeline(b, on)
		})
	}
}

func sourcePipeline(b *testing.B, detectors bool) {
	lines := probeLines(4096)
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
	cfg := SourceConfig{Follow: FollowOptions{Path: path, FromStart: true, Poll: time.Millisecond}}
	if detectors {
		cfg.Matcher = det.Matcher
	}
	src, err := NewSource(cfg, det.ObserveSignal, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	go func() { done <- src.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for src.Stats().Lines < uint64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d lines read after 5 minutes", src.Stats().Lines, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	st := src.Stats()
	if st.ParseErrors != 0 {
		b.Fatalf("%d parse errors", st.ParseErrors)
	}
	// every payload line and scanner line is found with the detectors on,
	// none without
	if want := uint64(0); !detectors && st.Probes != want || detectors && b.N >= 4096 && st.Probes < uint64(b.N/50) {
		b.Fatalf("%d probe lines among %d", st.Probes, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "lines/cpu-s")
}

// cpuTime is the process's CPU time so far, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
