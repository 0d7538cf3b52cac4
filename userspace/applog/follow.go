package applog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/apiguard/apiguard/userspace/safefile"
)

// Defaults for FollowOptions.
const (
	// DefaultMaxLine holds the longest line a client can make nginx write
	// with its default buffers (large_client_header_buffers 4 8k): its
	// request line and headers, at most about 33 KiB, go to the log with
	// each non-printable byte as \xNN, four times as long. A shorter limit
	// lets a client get its own lines skipped with a long user agent.
	DefaultMaxLine     = 256 << 10
	DefaultPoll        = 100 * time.Millisecond
	DefaultRotateGrace = 5 * time.Second
	readChunk          = 64 << 10
	saveEvery          = time.Second
)

// FollowOptions say which file to follow and how.
type FollowOptions struct {
	Path string
	// StateFile keeps the position (inode and offset) across restarts; empty
	// means none is kept.
	StateFile string
	// FromStart reads a file met for the first time from its beginning; by
	// default reading starts at its end (what the file holds from the moment
	// the daemon starts). A stored position always wins.
	FromStart bool
	// MaxLine bounds a line (and the memory held for a partial one): a longer
	// line is skipped and counted.
	MaxLine int
	// Poll is how often the file is checked for new data, rotation and
	// truncation even when nothing wakes the follower: changes in the log's
	// directory do (inotify) where the filesystem supports it.
	Poll time.Duration
	// RotateGrace is how long a rotated file is still read after its last
	// data: a server writes to the old file until it reopens its logs.
	RotateGrace time.Duration
	// Notify, when set, hears of each new problem (opening, reading, keeping
	// the position) once, and of each time the file is opened (err nil):
	// at start, after rotation, after a problem. It runs on the follower's
	// goroutine and must not block.
	Notify func(err error)
}

// FollowStats are a Follower's counters.
type FollowStats struct {
	Path        string
	Lines       uint64
	TooLong     uint64
	Rotations   uint64
	Truncations uint64
	// Offset is the position read up to in the current file; Size its size
	// at the latest check. Size - Offset is the lag in bytes.
	Offset, Size int64
	// Inode is the current file's (0: not open yet).
	Inode uint64
	// LastLine is when the latest line was read (zero: none yet).
	LastLine time.Time
	// Err is the latest problem opening or reading the file ("" once it is
	// read again).
	Err string
	// Problems counts the problems met, each once while it lasts: a log that
	// cannot be opened counts one, not one per poll.
	Problems uint64
}

// Position is what the state file keeps.
type Position struct {
	Dev    uint64 `json:"dev"`
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
}

// Follower reads the lines appended to a file, across rotation (rename and a
// new file) and truncation.
type Follower struct {
	opts FollowOptions

	mu       sync.Mutex
	stats    FollowStats
	saved    Position
	lastSave time.Time
}

// NewFollower checks the options.
func NewFollower(opts FollowOptions) (*Follower, error) {
	if opts.Path == "" {
		return nil, errors.New("follow: no path")
	}
	if opts.MaxLine == 0 {
		opts.MaxLine = DefaultMaxLine
	}
	if opts.MaxLine < 64 || opts.MaxLine > 1<<20 {
		return nil, fmt.Errorf("follow %s: maxLine %d outside 64..1048576", opts.Path, opts.MaxLine)
	}
	if opts.Poll == 0 {
		opts.Poll = DefaultPoll
	}
	if opts.RotateGrace == 0 {
		opts.RotateGrace = DefaultRotateGrace
	}
	return &Follower{opts: opts, stats: FollowStats{Path: opts.Path}}, nil
}

// Stats reads the counters.
func (f *Follower) Stats() FollowStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// reader reads one open file.
type reader struct {
	file     *os.File
	dev, ino uint64
	// off is what has been consumed: complete lines and skipped bytes. The
	// file position is off + n.
	off      int64
	buf      []byte
	n        int // pending partial line in buf[:n]
	skipping bool
	lastData time.Time
}

func fileID(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), st.Ino
	}
	return 0, 0
}

// Run follows the file until ctx ends, calling fn for each line (without its
// newline; the slice is valid only during the call). It saves the position
// on its way out.
func (f *Follower) Run(ctx context.Context, fn func(line []byte)) error {
	var cur *reader
	var rotated []*reader
	defer func() {
		if cur != nil {
			f.save(cur, true)
			cur.file.Close()
		}
		for _, r := range rotated {
			r.file.Close()
		}
	}()
	stored, haveState := f.loadState()
	first := true
	tick := time.NewTicker(f.opts.Poll)
	defer tick.Stop()
	var wake <-chan struct{}
	if w, err := watchDir(filepath.Dir(f.opts.Path)); err == nil {
		defer w.close()
		wake = w.wake
	}
	var last time.Time
	for {
		now := time.Now()
		last = now
		// the rotated files first: their lines are older
		keep := rotated[:0]
		for _, r := range rotated {
			if err := f.drain(r, fn, now); err != nil || now.Sub(r.lastData) > f.opts.RotateGrace {
				r.file.Close()
				continue
			}
			keep = append(keep, r)
		}
		rotated = keep
		if cur != nil {
			if err := f.drain(cur, fn, now); err != nil {
				f.setErr(err)
			}
		}
		next, err := f.check(cur, stored, haveState, first, now)
		// a file that appears later is new: all of it is read
		first = false
		if err != nil {
			f.setErr(err)
		} else if next != cur {
			if cur != nil {
				f.mu.Lock()
				f.stats.Rotations++
				f.mu.Unlock()
				cur.lastData = now
				rotated = append(rotated, cur)
			}
			cur = next
			if err := f.drain(cur, fn, now); err != nil {
				f.setErr(err)
			}
		}
		if cur != nil {
			f.mu.Lock()
			f.stats.Offset = cur.off
			f.mu.Unlock()
			f.save(cur, false)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-wake:
			// a server writing line by line wakes us per line: a pass at
			// most every minGap reads them in batches
			if gap := minGap - time.Since(last); gap > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(gap):
				}
			}
		}
	}
}

// minGap spaces the passes that inotify wake-ups trigger.
const minGap = 2 * time.Millisecond

func (f *Follower) setErr(err error) {
	f.mu.Lock()
	msg := err.Error()
	fresh := msg != f.stats.Err
	if fresh {
		f.stats.Err = msg
		f.stats.Problems++
	}
	f.mu.Unlock()
	if fresh && f.opts.Notify != nil {
		f.opts.Notify(err)
	}
}

// check looks at the path: a new file there (first open, or rotation) is
// returned as the next reader; a truncated current file starts over.
func (f *Follower) check(cur *reader, stored Position, haveState, first bool, now time.Time) (*reader, error) {
	fi, err := os.Stat(f.opts.Path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if cur != nil {
				return cur, nil // renamed away; the next one is not there yet
			}
			return nil, fmt.Errorf("follow %s: waiting for the file: %w", f.opts.Path, err)
		}
		return cur, fmt.Errorf("follow %s: %w", f.opts.Path, err)
	}
	dev, ino := fileID(fi)
	if cur != nil && cur.dev == dev && cur.ino == ino {
		pos := cur.off + int64(cur.n)
		if fi.Size() < pos {
			// truncated (copytruncate): what was written before the
			// truncation and not yet read is gone; start over
			if _, err := cur.file.Seek(0, io.SeekStart); err != nil {
				return cur, fmt.Errorf("follow %s: rewind after truncation: %w", f.opts.Path, err)
			}
			cur.off, cur.n, cur.skipping = 0, 0, false
			f.mu.Lock()
			f.stats.Truncations++
			f.mu.Unlock()
		}
		f.mu.Lock()
		f.stats.Size = fi.Size()
		f.stats.Err = ""
		f.mu.Unlock()
		return cur, nil
	}
	// a regular file only, checked on what was opened (the path may be a
	// FIFO, which would block a plain open, /dev/zero, or a file under /proc:
	// the policy names it), and the file opened may not be the one stat saw:
	// its own identity is used
	file, ofi, err := safefile.Open(f.opts.Path)
	if err != nil {
		return cur, fmt.Errorf("follow: %w", err)
	}
	r := &reader{file: file, buf: make([]byte, f.opts.MaxLine+readChunk), lastData: now}
	r.dev, r.ino = fileID(ofi)
	var start int64
	switch {
	case first && haveState && stored.Dev == r.dev && stored.Inode == r.ino && stored.Offset <= ofi.Size():
		start = stored.Offset // a restart: resume
	case first && haveState:
		start = 0 // rotated or truncated while we were away: all of it is new
	case first && !f.opts.FromStart:
		start = ofi.Size()
	}
	if start > 0 {
		if _, err := file.Seek(start, io.SeekStart); err != nil {
			file.Close()
			return cur, fmt.Errorf("follow %s: seek to %d: %w", f.opts.Path, start, err)
		}
	}
	r.off = start
	f.mu.Lock()
	f.stats.Size = ofi.Size()
	f.stats.Inode = r.ino
	f.stats.Err = ""
	f.mu.Unlock()
	if f.opts.Notify != nil {
		f.opts.Notify(nil)
	}
	return r, nil
}

// drain reads r to its end, calling fn for each complete line.
func (f *Follower) drain(r *reader, fn func([]byte), now time.Time) error {
	maxLine := f.opts.MaxLine
	for {
		m, err := r.file.Read(r.buf[r.n:])
		if m > 0 {
			r.lastData = now
			f.lines(r, m, maxLine, fn, now)
		}
		if err == io.EOF || (m == 0 && err == nil) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("follow %s: read: %w", f.opts.Path, err)
		}
	}
}

// lines splits what was just read (m bytes after the pending n).
func (f *Follower) lines(r *reader, m, maxLine int, fn func([]byte), now time.Time) {
	data := r.buf[:r.n+m]
	start := 0
	var lines, long uint64
	for {
		i := bytes.IndexByte(data[start:], '\n')
		if i < 0 {
			break
		}
		line := data[start : start+i]
		switch {
		case r.skipping:
			r.skipping = false // the rest of a line already counted
		case len(line) > maxLine:
			long++
		default:
			fn(line)
			lines++
		}
		start += i + 1
	}
	r.off += int64(start)
	rest := len(data) - start
	if rest > maxLine {
		// a line longer than allowed and not finished: drop what is held,
		// skip to its newline
		if !r.skipping {
			long++
		}
		r.skipping = true
		r.off += int64(rest)
		rest = 0
	} else {
		copy(r.buf, data[start:])
	}
	r.n = rest
	f.mu.Lock()
	f.stats.Lines += lines
	f.stats.TooLong += long
	if lines > 0 {
		f.stats.LastLine = now
	}
	f.mu.Unlock()
}

func (f *Follower) loadState() (Position, bool) {
	if f.opts.StateFile == "" {
		return Position{}, false
	}
	b, err := os.ReadFile(f.opts.StateFile)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			f.setErr(fmt.Errorf("follow %s: read state: %w", f.opts.Path, err))
		}
		return Position{}, false
	}
	var p Position
	if err := json.Unmarshal(b, &p); err != nil || p.Offset < 0 {
		f.setErr(fmt.Errorf("follow %s: state file %s is corrupt; starting at the end", f.opts.Path, f.opts.StateFile))
		return Position{}, false
	}
	f.saved = p
	return p, true
}

// save writes the position at most once per saveEvery (always when final).
func (f *Follower) save(r *reader, final bool) {
	if f.opts.StateFile == "" {
		return
	}
	p := Position{Dev: r.dev, Inode: r.ino, Offset: r.off}
	if p == f.saved || (!final && time.Since(f.lastSave) < saveEvery) {
		return
	}
	b, _ := json.Marshal(p)
	tmp := f.opts.StateFile + ".tmp"
	err := os.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = os.Rename(tmp, f.opts.StateFile)
	}
	if err != nil {
		f.setErr(fmt.Errorf("follow %s: save position: %w", f.opts.Path, err))
		return
	}
	f.saved, f.lastSave = p, time.Now()
}
