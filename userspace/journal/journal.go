// Package journal is an append-only file of records that survives crashes:
// adding a record costs one write(2) whatever the file holds, and, when the
// caller needs the record on disk, one fdatasync shared by every caller
// waiting at that moment (group commit). A compaction rewrites the file as
// the smallest equivalent set of records, away from the appenders: they wait
// only for the few records appended meanwhile to be copied over.
//
// Each record is a line: eight hex digits of the CRC-32C of the payload, a
// space, the payload (which holds no newline), a newline. A crash can leave
// the last line torn; Open drops it with a warning and truncates the file
// there, so that the next append starts on a clean line. A damaged line
// followed by good ones (a lost page, not a torn write) is skipped with a
// warning. Nothing in the file stops Open: a journal is read as far as it
// can be.
package journal

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// headLen is the CRC and its space.
const headLen = 9

// MaxRecord bounds one record's payload.
const MaxRecord = 1 << 20

// Stats say what Open found and what the journal holds.
type Stats struct {
	// Records is how many records the file holds (good ones).
	Records int
	// Size is the file's size in bytes.
	Size int64
	// Torn is the bytes of a torn last record that Open dropped.
	Torn int64
	// Damaged is the damaged records Open skipped (not the last one).
	Damaged int
	// Compactions counts the rewrites since Open.
	Compactions uint64
}

// Journal is one open journal file. Its methods are safe for concurrent use.
type Journal struct {
	path string
	log  *slog.Logger

	// mu guards the file and its counters; appends hold it for their write.
	mu      sync.Mutex
	f       *os.File
	size    int64
	records int
	seq     uint64 // records appended since Open: a record's sequence number
	// syncMu serialises fdatasync and the swap of a compaction, which must
	// not close the file under a sync.
	syncMu sync.Mutex
	synced atomic.Uint64 // every record up to this sequence is on disk
	// compactMu makes compactions one at a time.
	compactMu   sync.Mutex
	compactions atomic.Uint64
	stats       Stats // what Open found
}

// Open opens (or creates) the journal at path and passes every good record,
// oldest first, to replay. The payload slice is valid only during the call.
func Open(path string, replay func(payload []byte) error, log *slog.Logger) (*Journal, error) {
	if log == nil {
		log = slog.Default()
	}
	// what a compaction or a migration killed half-way left behind
	if left, err := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".*")); err == nil {
		for _, l := range left {
			if err := os.Remove(l); err != nil {
				log.Warn("journal: cannot remove an unfinished rewrite", "path", l, "err", err)
			}
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	j := &Journal{path: path, log: log, f: f}
	if err := j.load(replay); err != nil {
		f.Close()
		return nil, err
	}
	return j, nil
}

func (j *Journal) load(replay func([]byte) error) error {
	data, err := io.ReadAll(j.f)
	if err != nil {
		return fmt.Errorf("read journal %s: %w", j.path, err)
	}
	good, records, damaged, err := scan(data, replay)
	if err != nil {
		return err
	}
	if damaged > 0 {
		j.log.Warn("journal: damaged records skipped (their changes are lost; the records after them are kept)",
			"path", j.path, "damaged", damaged)
	}
	if torn := int64(len(data)) - good; torn > 0 {
		// a crash in the middle of an append: the record was never acknowledged
		j.log.Warn("journal: a torn last record was dropped", "path", j.path, "bytes", torn)
		if err := j.f.Truncate(good); err != nil {
			return fmt.Errorf("truncate the torn end of journal %s: %w", j.path, err)
		}
		if err := unix.Fdatasync(int(j.f.Fd())); err != nil {
			return fmt.Errorf("sync journal %s: %w", j.path, err)
		}
		j.stats.Torn = torn
	}
	j.size, j.records = good, records
	j.stats.Damaged = damaged
	return nil
}

// scan replays data's good records and returns where the last good record
// ends: whatever follows it is a torn record.
func scan(data []byte, replay func([]byte) error) (good int64, records, damaged int, err error) {
	pending := 0 // bad lines since the last good one: damage if a good one follows
	for off := 0; off < len(data); {
		nl := bytes.IndexByte(data[off:], '\n')
		if nl < 0 {
			break // no end of line: torn
		}
		line := data[off : off+nl]
		off += nl + 1
		payload, ok := check(line)
		if !ok {
			pending++
			continue
		}
		if replay != nil {
			if err := replay(payload); err != nil {
				return 0, 0, 0, err
			}
		}
		records++
		damaged += pending
		pending = 0
		good = int64(off)
	}
	return good, records, damaged, nil
}

// check verifies a line's CRC and returns its payload.
func check(line []byte) ([]byte, bool) {
	if len(line) < headLen || line[headLen-1] != ' ' {
		return nil, false
	}
	var sum [4]byte
	if _, err := hex.Decode(sum[:], line[:8]); err != nil {
		return nil, false
	}
	payload := line[headLen:]
	want := uint32(sum[0])<<24 | uint32(sum[1])<<16 | uint32(sum[2])<<8 | uint32(sum[3])
	return payload, crc32.Checksum(payload, castagnoli) == want
}

// appendRecord frames payload onto buf.
func appendRecord(buf, payload []byte) ([]byte, error) {
	if len(payload) > MaxRecord {
		return buf, fmt.Errorf("journal record of %d bytes: at most %d", len(payload), MaxRecord)
	}
	if bytes.IndexByte(payload, '\n') >= 0 {
		return buf, errors.New("journal record holds a newline")
	}
	sum := crc32.Checksum(payload, castagnoli)
	buf = hex.AppendEncode(buf, []byte{byte(sum >> 24), byte(sum >> 16), byte(sum >> 8), byte(sum)})
	buf = append(buf, ' ')
	buf = append(buf, payload...)
	return append(buf, '\n'), nil
}

// Stats reads the counters.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := j.stats
	st.Records, st.Size = j.records, j.size
	st.Compactions = j.compactions.Load()
	return st
}

// Append writes the payloads with one write(2) and returns the sequence
// number of the last: once Append returns, the records survive the process
// being killed (they are in the kernel's page cache); Sync(seq) makes them
// survive a power cut too.
func (j *Journal) Append(payloads ...[]byte) (uint64, error) {
	var buf []byte
	for _, p := range payloads {
		var err error
		if buf, err = appendRecord(buf, p); err != nil {
			return 0, err
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return 0, errors.New("journal is closed")
	}
	if _, err := j.f.Write(buf); err != nil {
		// a short write leaves a torn record, which the next Open would
		// drop; cut it now so that the next record starts on a clean line
		if terr := j.f.Truncate(j.size); terr != nil {
			err = errors.Join(err, terr)
		}
		return 0, fmt.Errorf("append to journal %s: %w", j.path, err)
	}
	j.size += int64(len(buf))
	j.records += len(payloads)
	j.seq += uint64(len(payloads))
	return j.seq, nil
}

// Sync returns once every record up to seq is on disk. Callers waiting
// together share one fdatasync.
func (j *Journal) Sync(seq uint64) error {
	if j.synced.Load() >= seq {
		return nil
	}
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	if j.synced.Load() >= seq {
		return nil // another caller's sync covered it
	}
	j.mu.Lock()
	target, f := j.seq, j.f
	j.mu.Unlock()
	if f == nil {
		return errors.New("journal is closed")
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("sync journal %s: %w", j.path, err)
	}
	j.synced.Store(target)
	return nil
}

// SyncAll puts every record appended so far on disk.
func (j *Journal) SyncAll() error {
	j.mu.Lock()
	seq := j.seq
	j.mu.Unlock()
	return j.Sync(seq)
}

// Dirty reports whether records wait for a sync.
func (j *Journal) Dirty() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.synced.Load() < j.seq
}

// Compact rewrites the journal as reduce's records: reduce gets the records
// the file holds when the compaction starts (oldest first) and returns the
// fewest that replay to the same state. Appends go on meanwhile; the records
// they add are copied after reduce's, and the new file replaces the old one
// atomically (a crash leaves one or the other, whole). Appenders wait only
// for that copy.
func (j *Journal) Compact(reduce func(records [][]byte) ([][]byte, error)) error {
	j.compactMu.Lock()
	defer j.compactMu.Unlock()
	j.mu.Lock()
	if j.f == nil {
		j.mu.Unlock()
		return errors.New("journal is closed")
	}
	upTo := j.size
	j.mu.Unlock()

	// the records up to upTo, read through a handle of our own
	old, err := os.Open(j.path)
	if err != nil {
		return fmt.Errorf("compact journal: %w", err)
	}
	defer old.Close()
	data := make([]byte, upTo)
	if _, err := old.ReadAt(data, 0); err != nil {
		return fmt.Errorf("compact journal: read: %w", err)
	}
	var records [][]byte
	if _, _, _, err := scan(data, func(p []byte) error { records = append(records, p); return nil }); err != nil {
		return err
	}
	kept, err := reduce(records)
	if err != nil {
		return fmt.Errorf("compact journal: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(j.path), "."+filepath.Base(j.path)+".*")
	if err != nil {
		return fmt.Errorf("compact journal: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	var buf []byte
	for _, p := range kept {
		if buf, err = appendRecord(buf, p); err != nil {
			tmp.Close()
			return err
		}
	}
	if _, err := tmp.Write(buf); err != nil {
		tmp.Close()
		return fmt.Errorf("compact journal: write: %w", err)
	}
	// the bulk goes to disk before appenders wait: the sync under the lock
	// below has only the tail to write
	if err := unix.Fdatasync(int(tmp.Fd())); err != nil {
		tmp.Close()
		return fmt.Errorf("compact journal: sync: %w", err)
	}
	if err := j.swap(tmp, old, upTo, len(kept), int64(len(buf))); err != nil {
		tmp.Close()
		return err
	}
	j.compactions.Add(1)
	return nil
}

// swap copies what was appended since upTo to tmp and puts tmp in the
// journal's place. Appenders wait only for the last few records to be copied
// and the rename; syncs wait until the new file and its name are on disk.
func (j *Journal) swap(tmp, old *os.File, upTo int64, kept int, keptSize int64) error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	// most of the tail, without the appenders' lock
	j.mu.Lock()
	mid := j.size
	j.mu.Unlock()
	tailRecords, err := copyTail(tmp, old, upTo, mid)
	if err != nil {
		return err
	}
	if err := unix.Fdatasync(int(tmp.Fd())); err != nil {
		return fmt.Errorf("compact journal: sync: %w", err)
	}
	// the rest, and the swap, with it
	seq, err := func() (uint64, error) {
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.f == nil {
			return 0, errors.New("journal is closed")
		}
		n, err := copyTail(tmp, old, mid, j.size)
		if err != nil {
			return 0, err
		}
		if err := os.Rename(tmp.Name(), j.path); err != nil {
			return 0, fmt.Errorf("compact journal: replace: %w", err)
		}
		// appends go on through a handle on the new file
		nf, err := os.OpenFile(j.path, os.O_RDWR|os.O_APPEND, 0o600)
		if err != nil {
			// the file in place is the compacted one and complete; the old
			// handle would append to a file that is gone: stop appending
			j.f.Close()
			j.f = nil
			return 0, fmt.Errorf("compact journal: reopen: %w", err)
		}
		j.f.Close()
		newSize := keptSize + (j.size - upTo)
		j.f, j.size, j.records = nf, newSize, kept+tailRecords+n
		return j.seq, nil
	}()
	if err != nil {
		return err
	}
	tmp.Close()
	// what was copied under the lock, and the new name
	if err := j.syncNewFile(); err != nil {
		return err
	}
	j.synced.Store(seq)
	return nil
}

// syncNewFile syncs the journal file and its directory (after a rename).
func (j *Journal) syncNewFile() error {
	j.mu.Lock()
	f := j.f
	j.mu.Unlock()
	if f == nil {
		return errors.New("journal is closed")
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("compact journal: sync: %w", err)
	}
	return syncDir(filepath.Dir(j.path))
}

// copyTail copies old's bytes [from, to) to the end of tmp and counts the
// records in them.
func copyTail(tmp, old *os.File, from, to int64) (int, error) {
	if to <= from {
		return 0, nil
	}
	tail := make([]byte, to-from)
	if _, err := old.ReadAt(tail, from); err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("compact journal: read the tail: %w", err)
	}
	_, n, _, err := scan(tail, nil)
	if err != nil {
		return 0, err
	}
	if _, err := tmp.Write(tail); err != nil {
		return 0, fmt.Errorf("compact journal: write the tail: %w", err)
	}
	return n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Close syncs what waits and closes the file.
func (j *Journal) Close() error {
	serr := j.SyncAll()
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return serr
	}
	err := j.f.Close()
	j.f = nil
	return errors.Join(serr, err)
}

// WriteNew writes a new journal at path holding records (replacing any file
// there atomically), for a migration from another format.
func WriteNew(path string, records [][]byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	defer os.Remove(tmp.Name())
	var buf []byte
	for _, p := range records {
		if buf, err = appendRecord(buf, p); err != nil {
			tmp.Close()
			return err
		}
	}
	if _, err := tmp.Write(buf); err != nil {
		tmp.Close()
		return fmt.Errorf("write journal: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write journal: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	return syncDir(filepath.Dir(path))
}
