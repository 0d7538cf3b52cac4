package journal

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func open(t *testing.T, path string) (*Journal, []string, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	var got []string
	j, err := Open(path, func(p []byte) error { got = append(got, string(p)); return nil }, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("open: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() { j.Close() })
	return j, got, &logs
}

func appendAll(t *testing.T, j *Journal, recs ...string) uint64 {
	t.Helper()
	var seq uint64
	for _, r := range recs {
		var err error
		if seq, err = j.Append([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	return seq
}

func records(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"op":"ban","prefix":"192.0.2.%d/32","reason":"r%d"}`, i, i)
	}
	return out
}

func TestAppendReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, got, _ := open(t, path)
	if len(got) != 0 {
		t.Fatalf("a new journal replays %v", got)
	}
	want := records(5)
	seq := appendAll(t, j, want[:3]...)
	s2, err := j.Append([]byte(want[3]), []byte(want[4])) // one write for two
	if err != nil || seq != 3 || s2 != 5 {
		t.Fatalf("sequence %d, %d, %v", seq, s2, err)
	}
	if !j.Dirty() {
		t.Fatal("not dirty after appends")
	}
	if err := j.Sync(s2); err != nil || j.Dirty() {
		t.Fatalf("sync: %v dirty %v", err, j.Dirty())
	}
	j.Close()
	_, got, logs := open(t, path)
	if !slices.Equal(got, want) || logs.Len() != 0 {
		t.Fatalf("replayed %v, logs %s", got, logs)
	}
	if _, err := j.Append([]byte("x")); err == nil {
		t.Fatal("append after close")
	}
}

// A crash in the middle of an append leaves any prefix of the last record: at
// every length, Open keeps the records before it, drops the rest with a
// warning, never refuses, and the next append starts on a clean line.
func TestTornLastRecord(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	j, _, _ := open(t, full)
	want := records(4)
	appendAll(t, j, want...)
	j.Close()
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	lastStart := bytes.LastIndexByte(data[:len(data)-1], '\n') + 1
	for cut := lastStart; cut <= len(data); cut++ {
		path := filepath.Join(dir, fmt.Sprintf("cut%d", cut))
		if err := os.WriteFile(path, data[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		j, got, logs := open(t, path)
		keep := 3
		if cut == len(data) {
			keep = 4
		}
		if !slices.Equal(got, want[:keep]) {
			t.Fatalf("cut at %d of %d: replayed %d records", cut, len(data), len(got))
		}
		torn := cut > lastStart && cut < len(data)
		if torn != strings.Contains(logs.String(), "torn last record was dropped") {
			t.Fatalf("cut at %d: logs %q", cut, logs)
		}
		if st := j.Stats(); st.Size != int64(lastStart) && keep == 3 || st.Records != keep {
			t.Fatalf("cut at %d: stats %+v", cut, st)
		}
		appendAll(t, j, "after")
		j.Close()
		_, got, _ = open(t, path)
		if !slices.Equal(got, append(slices.Clone(want[:keep]), "after")) {
			t.Fatalf("cut at %d: after an append, replayed %q", cut, got)
		}
	}
}

// A damaged record followed by good ones is skipped, the others kept; a bad
// line at the end is torn. Garbage never stops Open.
func TestDamagedRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, _, _ := open(t, path)
	want := records(5)
	appendAll(t, j, want...)
	j.Close()
	data, _ := os.ReadFile(path)
	lines := bytes.SplitAfter(data, []byte("\n"))
	lines[1] = bytes.Replace(lines[1], []byte("192.0.2.1"), []byte("192.0.2.9"), 1) // the CRC no longer matches
	lines[3] = []byte("this is not a record\n")
	garbage := []byte("\x00\x00\x00\x00garbage without an end")
	os.WriteFile(path, append(bytes.Join(lines, nil), garbage...), 0o600)
	j, got, logs := open(t, path)
	if wantKept := []string{want[0], want[2], want[4]}; !slices.Equal(got, wantKept) {
		t.Fatalf("replayed %q", got)
	}
	if st := j.Stats(); st.Damaged != 2 || st.Torn != int64(len(garbage)) {
		t.Fatalf("stats %+v", st)
	}
	if !strings.Contains(logs.String(), "damaged records skipped") || !strings.Contains(logs.String(), "torn last record") {
		t.Fatalf("logs %s", logs)
	}
	// a file of nothing but garbage: empty, not an error
	os.WriteFile(path, []byte("\n\n12345678 x\nzzzzzzzzz\n"), 0o600)
	if _, got, _ := open(t, path); len(got) != 0 {
		t.Fatalf("garbage replayed %q", got)
	}
}

func TestBadPayloads(t *testing.T) {
	j, _, _ := open(t, filepath.Join(t.TempDir(), "j"))
	if _, err := j.Append([]byte("a\nb")); err == nil {
		t.Fatal("a newline accepted")
	}
	if _, err := j.Append(make([]byte, MaxRecord+1)); err == nil {
		t.Fatal("an oversized record accepted")
	}
}

// A compaction keeps what reduce returns and every record appended while it
// ran; the result replays after a reopen. Appends never stop.
func TestCompactWithConcurrentAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, _, _ := open(t, path)
	appendAll(t, j, records(1000)...)
	entered := make(chan struct{})
	release := make(chan struct{})
	var wg sync.WaitGroup
	var compactErr error
	wg.Go(func() {
		compactErr = j.Compact(func(recs [][]byte) ([][]byte, error) {
			if len(recs) != 1000 {
				return nil, fmt.Errorf("reduce got %d records", len(recs))
			}
			close(entered)
			<-release
			return [][]byte{[]byte("snapshot")}, nil
		})
	})
	<-entered
	// appends while reduce runs: they go to the old file and are carried over
	appendAll(t, j, "during-1", "during-2")
	close(release)
	wg.Wait()
	if compactErr != nil {
		t.Fatal(compactErr)
	}
	seq := appendAll(t, j, "after")
	if err := j.Sync(seq); err != nil {
		t.Fatal(err)
	}
	if st := j.Stats(); st.Records != 4 || st.Compactions != 1 {
		t.Fatalf("stats %+v", st)
	}
	j.Close()
	_, got, _ := open(t, path)
	if want := []string{"snapshot", "during-1", "during-2", "after"}; !slices.Equal(got, want) {
		t.Fatalf("replayed %q, want %q", got, want)
	}
	// no temporary file is left behind
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".j.*")); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
}

// A compaction killed half-way leaves its temporary file: the journal is the
// old one, whole, and Open removes the leftover.
func TestLeftoverRewriteRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "j")
	j, _, _ := open(t, path)
	appendAll(t, j, records(3)...)
	j.Close()
	left := filepath.Join(dir, ".j.123456")
	os.WriteFile(left, []byte("half a snapshot"), 0o600)
	_, got, _ := open(t, path)
	if len(got) != 3 {
		t.Fatalf("replayed %d", len(got))
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("leftover still there: %v", err)
	}
}

// Many writers syncing at once: every Sync returns with its record on disk
// (checked by a reopen), whoever did the fdatasync.
func TestConcurrentSyncs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, _, _ := open(t, path)
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				seq, err := j.Append([]byte(fmt.Sprintf("w%d-%d", w, i)))
				if err == nil {
					err = j.Sync(seq)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if j.Dirty() {
		t.Fatal("dirty after every record was synced")
	}
	j.Close()
	if _, got, _ := open(t, path); len(got) != 400 {
		t.Fatalf("replayed %d of 400", len(got))
	}
}

func TestWriteNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	if err := WriteNew(path, [][]byte{[]byte("a"), []byte("b")}); err != nil {
		t.Fatal(err)
	}
	if _, got, _ := open(t, path); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("replayed %q", got)
	}
}
