package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/apiguard/apiguard/userspace/journal"
)

// The ban book lives in an append-only journal in the state directory: a ban
// is one record added (one write(2), then for a ban or unban someone waits
// on, one fdatasync shared with whoever syncs at that moment), never a
// rewrite of every ban. The old bans.json, rewritten and synced whole on each
// ban (3 ms at 1k bans, 85 ms at 20k, 460 ms at 100k), is migrated once.
const (
	banJournalFile = "bans.journal"
	banStateFile   = "bans.json" // before the journal: migrated, then removed
)

// Compaction rewrites the journal once it holds more than twice the live
// bans plus compactSlack records: the file stays within a few times the book's
// size, and a book of a handful of bans is not rewritten every few changes.
const compactSlack = 1024

// bookSyncEvery is how long a record nobody waits for (a detector ban, a
// sweep) may stay in the page cache before it is synced: it already survives
// the daemon being killed, this bounds what a power cut takes.
const bookSyncEvery = time.Second

// banRecord is what the kernel does not keep about a ban.
type banRecord struct {
	Prefix  netip.Prefix `json:"prefix"`
	Reason  string       `json:"reason"`
	Source  string       `json:"source"`
	Created time.Time    `json:"created"`
	Expires time.Time    `json:"expires,omitzero"`
}

// banFile is the old bans.json.
type banFile struct {
	Bans []banRecord `json:"bans"`
}

// bookEntry is one journal record: a ban (with what the book keeps of it) or
// the end of one.
type bookEntry struct {
	Op      string       `json:"op"`
	Prefix  netip.Prefix `json:"prefix"`
	Reason  string       `json:"reason,omitempty"`
	Source  string       `json:"source,omitempty"`
	Created time.Time    `json:"created,omitzero"`
	Expires time.Time    `json:"expires,omitzero"`
}

const (
	opBan   = "ban"
	opUnban = "unban"
)

func banEntry(r banRecord) ([]byte, error) {
	return json.Marshal(bookEntry{Op: opBan, Prefix: r.Prefix, Reason: r.Reason, Source: r.Source, Created: r.Created, Expires: r.Expires})
}

func unbanEntry(p netip.Prefix) ([]byte, error) {
	return json.Marshal(bookEntry{Op: opUnban, Prefix: p})
}

// applyEntry replays one record onto recs. A record that passed its checksum
// but does not make sense (written by a newer version?) is an error: the
// caller decides.
func applyEntry(recs map[netip.Prefix]banRecord, payload []byte) error {
	var e bookEntry
	if err := json.Unmarshal(payload, &e); err != nil {
		return fmt.Errorf("ban book record: %w", err)
	}
	if !e.Prefix.IsValid() {
		return errors.New("ban book record without a prefix")
	}
	p := e.Prefix.Masked()
	switch e.Op {
	case opBan:
		recs[p] = banRecord{Prefix: p, Reason: e.Reason, Source: e.Source, Created: e.Created, Expires: e.Expires}
	case opUnban:
		delete(recs, p)
	default:
		return fmt.Errorf("ban book record: unknown op %q", e.Op)
	}
	return nil
}

// banBook holds the reasons of the bans in force. The kernel's map says which
// bans exist; the book only explains them, and restores them when the maps
// are lost (a reboot, a detach).
type banBook struct {
	// mu is held across each kernel update and the record that follows it, so
	// the map and the book change in the same order. It is never held for a
	// sync or a compaction.
	mu   sync.Mutex
	path string
	recs map[netip.Prefix]banRecord
	j    *journal.Journal
	log  *slog.Logger
	// compactMu makes compactions one at a time.
	compactMu sync.Mutex
}

// openBook migrates a bans.json left by an earlier version and opens the
// journal in dir. Nothing in the files stops the daemon: a damaged bans.json
// is moved aside, a torn or damaged journal record dropped with a warning.
func openBook(dir string, log *slog.Logger) (*banBook, error) {
	b := &banBook{path: filepath.Join(dir, banJournalFile), recs: map[netip.Prefix]banRecord{}, log: log}
	if err := b.migrate(filepath.Join(dir, banStateFile)); err != nil {
		return nil, err
	}
	bad := 0
	j, err := journal.Open(b.path, func(p []byte) error {
		if err := applyEntry(b.recs, p); err != nil {
			// a record with a good checksum: not a torn write; keep going
			if bad++; bad <= 3 {
				log.Warn("ban book: a record does not make sense; skipped", "err", err)
			}
		}
		return nil
	}, log)
	if err != nil {
		return nil, err
	}
	b.j = j
	return b, nil
}

// migrate turns bans.json into the journal: written whole and synced, then
// the old file goes. A crash between the two leaves both; the journal wins.
func (b *banBook) migrate(old string) error {
	if _, err := os.Stat(old); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(b.path); err == nil {
		b.log.Info("ban book: the journal is already there; removing the migrated bans.json", "path", old)
		return os.Remove(old)
	}
	var f banFile
	if _, err := readJSONFile(old, &f); err != nil {
		// keep the damaged file for a human; bans still work, their reasons are lost
		bad := old + ".corrupt"
		if rerr := os.Rename(old, bad); rerr != nil {
			return fmt.Errorf("%w (and moving it aside failed: %v)", err, rerr)
		}
		b.log.Warn("ban state file is damaged; moved aside, starting without ban reasons", "err", err, "moved_to", bad)
		return nil
	}
	var entries [][]byte
	for _, r := range f.Bans {
		if !r.Prefix.IsValid() {
			continue
		}
		r.Prefix = r.Prefix.Masked()
		e, err := banEntry(r)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", old, err)
		}
		entries = append(entries, e)
	}
	if err := journal.WriteNew(b.path, entries); err != nil {
		return fmt.Errorf("migrate %s: %w", old, err)
	}
	if err := os.Remove(old); err != nil {
		return fmt.Errorf("migrate %s: remove the old file: %w", old, err)
	}
	b.log.Info("ban book migrated from bans.json to an append-only journal", "bans", len(entries), "journal", b.path)
	return nil
}

// putLocked records a ban; the returned sequence number is for sync.
func (b *banBook) putLocked(r banRecord) (uint64, error) {
	b.recs[r.Prefix] = r
	e, err := banEntry(r)
	if err != nil {
		return 0, err
	}
	return b.j.Append(e)
}

// dropLocked forgets bans, with one write for all of them.
func (b *banBook) dropLocked(ps ...netip.Prefix) (uint64, error) {
	entries := make([][]byte, 0, len(ps))
	for _, p := range ps {
		delete(b.recs, p)
		e, err := unbanEntry(p)
		if err != nil {
			return 0, err
		}
		entries = append(entries, e)
	}
	return b.j.Append(entries...)
}

// sync returns once the record seq (and every one before) is on disk.
func (b *banBook) sync(seq uint64) error { return b.j.Sync(seq) }

func (b *banBook) needsCompaction() bool {
	b.mu.Lock()
	live := len(b.recs)
	b.mu.Unlock()
	return b.j.Stats().Records > 2*live+compactSlack
}

// compact rewrites the journal as one record per ban still in force at now.
// It works from the file, not from the book, so bans.mu is never held for it:
// bans go on being added and wait only for the final swap. A kept ban's
// latest record is copied as it is, not decoded and encoded again: the less
// a compaction allocates, the less the garbage collector takes from the
// detector meanwhile.
func (b *banBook) compact(now time.Time) error {
	b.compactMu.Lock()
	defer b.compactMu.Unlock()
	return b.j.Compact(func(records [][]byte) ([][]byte, error) {
		latest := make(map[netip.Prefix][]byte, len(records)/2)
		for _, p := range records {
			var e struct {
				Op      string       `json:"op"`
				Prefix  netip.Prefix `json:"prefix"`
				Expires time.Time    `json:"expires"`
			}
			if json.Unmarshal(p, &e) != nil || !e.Prefix.IsValid() {
				continue // the ones Open skipped, skipped again
			}
			switch pfx := e.Prefix.Masked(); {
			case e.Op == opBan && (e.Expires.IsZero() || e.Expires.After(now)):
				latest[pfx] = p
			case e.Op == opBan, e.Op == opUnban:
				delete(latest, pfx) // ended, or expired
			}
		}
		keys := slices.SortedFunc(maps.Keys(latest), comparePrefix)
		out := make([][]byte, len(keys))
		for i, k := range keys {
			out[i] = latest[k]
		}
		return out, nil
	})
}

func (b *banBook) close() error { return b.j.Close() }

// maintainBans syncs the records nobody waited for and compacts the journal
// when it has grown, until ctx ends; then it syncs what is left.
func (d *Daemon) maintainBans(ctx context.Context) error {
	t := time.NewTicker(bookSyncEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return d.bans.j.SyncAll()
		case now := <-t.C:
			if d.bans.j.Dirty() {
				if err := d.bans.j.SyncAll(); err != nil {
					d.log.Warn("could not sync the ban book; its latest records would not survive a power cut", "err", err)
				}
			}
			if d.bans.needsCompaction() {
				start := time.Now()
				if err := d.bans.compact(now); err != nil {
					// the journal keeps growing and is still right: try again
					d.log.Warn("ban book compaction failed", "err", err)
					continue
				}
				st := d.bans.j.Stats()
				d.log.Debug("ban book compacted", "records", st.Records, "bytes", st.Size, "took", time.Since(start))
			}
		}
	}
}
