package applog

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/detect"
	"golang.org/x/sys/unix"
)

// syncBuffer is a log destination read while the source writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFollowRefusesWhatIsNotALog: the policy names the file, so it may be a
// FIFO (a plain open would block the follower for good), a device that never
// ends, or a kernel file. Each is a problem reported once, and the follower
// stays responsive: it stops when asked.
func TestFollowRefusesWhatIsNotALog(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.log")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "is a FIFO: not a regular file"},
		{"/dev/zero", "is a character device: not a regular file"},
		{"/proc/self/environ", "is on procfs"},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			var mu sync.Mutex
			var news []error
			c := follow(t, FollowOptions{Path: tc.path, Notify: func(err error) {
				mu.Lock()
				news = append(news, err)
				mu.Unlock()
			}})
			c.waitStat("problem reported", func(s FollowStats) bool { return strings.Contains(s.Err, tc.want) })
			// many polls later, still one problem
			time.Sleep(50 * time.Millisecond)
			c.stop() // returns: nothing blocks in an open
			st := c.f.Stats()
			mu.Lock()
			defer mu.Unlock()
			if st.Problems != 1 || len(news) != 1 || news[0] == nil || !strings.Contains(news[0].Error(), tc.want) {
				t.Errorf("problems %d, notified %v; want one saying %q", st.Problems, news, tc.want)
			}
			if st.Lines != 0 {
				t.Errorf("%d lines read from %s", st.Lines, tc.path)
			}
		})
	}
}

// TestSourceLogsProblemsAndNoLines: a log that cannot be read is an error in
// the daemon's log, once, with its cause; a line that does not parse is
// counted and described, never quoted.
func TestSourceLogsProblemsAndNoLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src, err := NewSource(SourceConfig{Follow: FollowOptions{Path: path, FromStart: true, Poll: 5 * time.Millisecond}, Format: "json", Fields: DefaultFields()},
		func(detect.Signal) bool { return false }, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s\nstats %+v\nlog:\n%s", what, src.Stats(), logs.String())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitFor("missing file logged", func() bool {
		return strings.Contains(logs.String(), "level=ERROR msg=\"cannot read access log; retrying\"")
	})
	const secret = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG"
	if err := os.WriteFile(path, []byte(`{"`+secret+`": 1, `+"\n"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("both lines counted", func() bool { return src.Stats().ParseErrors == 2 })
	waitFor("opened logged", func() bool { return strings.Contains(logs.String(), "msg=\"following access log\"") })
	out := logs.String()
	if strings.Contains(out, "wJalr") || strings.Contains(out, "AWS_") {
		t.Errorf("the log quotes the file:\n%s", out)
	}
	if n := strings.Count(out, "cannot read access log"); n != 1 || src.Stats().Problems != 1 {
		t.Errorf("%d error lines, %d problems counted, want 1 each:\n%s", n, src.Stats().Problems, out)
	}
	if !strings.Contains(out, "access log line skipped") || !strings.Contains(out, "bytes=43") {
		t.Errorf("skipped lines are not described:\n%s", out)
	}
}
