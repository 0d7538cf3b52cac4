package applog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// collector runs a Follower and gathers its lines.
type collector struct {
	t      *testing.T
	f      *Follower
	mu     sync.Mutex
	lines  []string
	cancel context.CancelFunc
	done   chan error
}

func follow(t *testing.T, opts FollowOptions) *collector {
	t.Helper()
	if opts.Poll == 0 {
		opts.Poll = 5 * time.Millisecond
	}
	f, err := NewFollower(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{t: t, f: f, cancel: cancel, done: make(chan error, 1)}
	go func() {
		c.done <- f.Run(ctx, func(l []byte) {
			c.mu.Lock()
			c.lines = append(c.lines, string(l))
			c.mu.Unlock()
		})
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *collector) stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	c.cancel = nil
	if err := <-c.done; err != nil {
		c.t.Errorf("follower: %v", err)
	}
}

// waitLines waits (at most 10 s: a bound, not a timing assertion) until n
// lines arrived, and returns them.
func (c *collector) waitLines(n int) []string {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		got := slices.Clone(c.lines)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d lines after 10s, want %d; stats %+v", len(got), n, c.f.Stats())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitStat waits until cond holds on the stats.
func (c *collector) waitStat(what string, cond func(FollowStats) bool) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(c.f.Stats()) {
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not after 10s; stats %+v", what, c.f.Stats())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func appendLines(t *testing.T, path string, from, to int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := from; i < to; i++ {
		fmt.Fprintf(f, "line %d\n", i)
	}
}

func want(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("line %d", i))
	}
	return out
}

func TestFollowStartsAtTheEndUnlessAsked(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	appendLines(t, path, 0, 5)
	c := follow(t, FollowOptions{Path: path})
	c.waitStat("opened", func(s FollowStats) bool { return s.Inode != 0 })
	appendLines(t, path, 5, 8)
	if got := c.waitLines(3); !slices.Equal(got, want(5, 8)) {
		t.Fatalf("got %q", got)
	}
	all := follow(t, FollowOptions{Path: path, FromStart: true})
	if got := all.waitLines(8); !slices.Equal(got, want(0, 8)) {
		t.Fatalf("from start: got %q", got)
	}
}

func TestFollowPartialLinesAndTooLong(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := follow(t, FollowOptions{Path: path, FromStart: true, MaxLine: 100})
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// a line written in two parts is one line
	fmt.Fprint(f, "first ha")
	c.waitStat("partial read", func(s FollowStats) bool { return s.Size == 8 })
	fmt.Fprint(f, "lf\n")
	// a line longer than MaxLine, written across reads, is skipped
	fmt.Fprint(f, strings.Repeat("x", 150))
	c.waitStat("long part read", func(s FollowStats) bool { return s.Size > 100 })
	fmt.Fprint(f, strings.Repeat("y", 200)+"\n")
	fmt.Fprint(f, strings.Repeat("z", 101)+"\nlast\n")
	got := c.waitLines(2)
	if !slices.Equal(got, []string{"first half", "last"}) {
		t.Fatalf("got %q", got)
	}
	c.waitStat("too long counted", func(s FollowStats) bool { return s.TooLong == 2 })
}

// The server keeps writing to the renamed file until it reopens its log;
// every line, before and after, is read.
func TestFollowRotationDuringWritesLosesNoLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := follow(t, FollowOptions{Path: path})
	c.waitStat("opened", func(s FollowStats) bool { return s.Inode != 0 })
	const total, rotations = 30000, 3
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	write := func(n int) {
		for range n {
			fmt.Fprintf(w, "line %d\n", next)
			next++
		}
	}
	for range rotations {
		write(total/(rotations+1) - 500)
		// logrotate renames; the server writes on to the old file for a
		// while, then reopens its log
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, next)); err != nil {
			t.Fatal(err)
		}
		write(500)
		w.Close()
		if w, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(total - next)
	w.Close()
	got := c.waitLines(total)
	slices.SortFunc(got, func(a, b string) int {
		var x, y int
		fmt.Sscanf(a, "line %d", &x)
		fmt.Sscanf(b, "line %d", &y)
		return x - y
	})
	if !slices.Equal(got, want(0, total)) {
		t.Fatalf("%d lines, first differences: %v", len(got), firstDiff(got, want(0, total)))
	}
	if s := c.f.Stats(); s.Rotations != rotations {
		t.Fatalf("rotations %d, want %d", s.Rotations, rotations)
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("at %d: %q vs %q", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d vs %d", len(a), len(b))
}

func TestFollowTruncation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := follow(t, FollowOptions{Path: path, FromStart: true})
	appendLines(t, path, 0, 10)
	c.waitLines(10)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	c.waitStat("truncation seen", func(s FollowStats) bool { return s.Truncations == 1 })
	appendLines(t, path, 10, 13)
	if got := c.waitLines(13); !slices.Equal(got, want(0, 13)) {
		t.Fatalf("got %q", got)
	}
}

func TestFollowRestartResumesAtStoredOffset(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	state := filepath.Join(dir, "pos.json")
	appendLines(t, path, 0, 10)
	c := follow(t, FollowOptions{Path: path, StateFile: state, FromStart: true})
	c.waitLines(10)
	c.stop()
	appendLines(t, path, 10, 15) // written while the daemon is down
	again := follow(t, FollowOptions{Path: path, StateFile: state, FromStart: true})
	appendLines(t, path, 15, 17)
	if got := again.waitLines(7); !slices.Equal(got, want(10, 17)) {
		t.Fatalf("after restart: got %q", got)
	}
	again.stop()
	// rotated while down: the new file is read from its start
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendLines(t, path, 100, 103)
	third := follow(t, FollowOptions{Path: path, StateFile: state})
	if got := third.waitLines(3); !slices.Equal(got, want(100, 103)) {
		t.Fatalf("after rotation while down: got %q", got)
	}
}

func TestFollowWaitsForTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "later.log")
	c := follow(t, FollowOptions{Path: path})
	c.waitStat("error reported", func(s FollowStats) bool { return strings.Contains(s.Err, "waiting for the file") })
	appendLines(t, path, 0, 2)
	// a file that appears after the start is new: all of it is read
	if got := c.waitLines(2); !slices.Equal(got, want(0, 2)) {
		t.Fatalf("got %q", got)
	}
}

func TestFollowOptionsChecked(t *testing.T) {
	if _, err := NewFollower(FollowOptions{}); err == nil {
		t.Error("no path accepted")
	}
	if _, err := NewFollower(FollowOptions{Path: "/x", MaxLine: 10}); err == nil {
		t.Error("maxLine 10 accepted")
	}
}

// Writes, rotation and new files wake the follower (inotify): with polling
// all but off, every line still arrives.
func TestFollowWokenByWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := follow(t, FollowOptions{Path: path, Poll: time.Hour})
	c.waitStat("opened", func(s FollowStats) bool { return s.Inode != 0 })
	appendLines(t, path, 0, 3)
	c.waitLines(3)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendLines(t, path+".1", 3, 5) // the server still writes to the old file
	appendLines(t, path, 5, 8)      // then to the new one
	got := c.waitLines(8)
	slices.Sort(got)
	if !slices.Equal(got, want(0, 8)) {
		t.Fatalf("got %q", got)
	}
}
