package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/testenv"
)

func testBook(t testing.TB, dir string) (*banBook, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	b, err := openBook(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("open the book: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() { b.close() })
	return b, &logs
}

func addr4(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

func bookRecord(i int, now time.Time) banRecord {
	return banRecord{Prefix: addr4(i), Reason: fmt.Sprintf("scan: SYNs to %d ports", 20+i%50), Source: SourceDetector,
		Created: now.Truncate(time.Second), Expires: now.Add(time.Hour).Truncate(time.Second)}
}

// The book a journal replays is the book that wrote it: bans, unbans,
// compaction, and records appended after a compaction.
func TestBookJournalRoundTrip(t *testing.T) {
	dir := t.TempDir()
	b, _ := testBook(t, dir)
	now := time.Now()
	want := map[netip.Prefix]banRecord{}
	b.mu.Lock()
	for i := range 3000 {
		r := bookRecord(i, now)
		if _, err := b.putLocked(r); err != nil {
			t.Fatal(err)
		}
		want[r.Prefix] = r
	}
	var gone []netip.Prefix
	for i := range 2500 {
		gone = append(gone, addr4(i))
		delete(want, addr4(i))
	}
	if _, err := b.dropLocked(gone...); err != nil {
		t.Fatal(err)
	}
	// one that expired: a compaction drops its record
	expired := banRecord{Prefix: netip.MustParsePrefix("2001:db8::/64"), Reason: "old", Source: SourceManual,
		Created: now.Add(-2 * time.Hour).Truncate(time.Second), Expires: now.Add(-time.Hour).Truncate(time.Second)}
	if _, err := b.putLocked(expired); err != nil {
		t.Fatal(err)
	}
	b.mu.Unlock()
	if !b.needsCompaction() {
		t.Fatalf("5501 records for 501 bans: no compaction due (%+v)", b.j.Stats())
	}
	if err := b.compact(now); err != nil {
		t.Fatal(err)
	}
	if st := b.j.Stats(); st.Records != 500 || b.needsCompaction() {
		t.Fatalf("after the compaction: %+v", st)
	}
	b.mu.Lock()
	late := bookRecord(99999, now)
	if _, err := b.putLocked(late); err != nil {
		t.Fatal(err)
	}
	b.mu.Unlock()
	want[late.Prefix] = late
	b.close()

	again, _ := testBook(t, dir)
	if !maps.EqualFunc(again.recs, want, func(x, y banRecord) bool {
		return x.Prefix == y.Prefix && x.Reason == y.Reason && x.Source == y.Source && x.Created.Equal(y.Created) && x.Expires.Equal(y.Expires)
	}) {
		t.Fatalf("replayed %d records, want %d", len(again.recs), len(want))
	}
}

// bans.json of an earlier version becomes the journal, once, and goes; a
// damaged one is moved aside; with both files the journal wins.
func TestBookMigration(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	old := banFile{Bans: []banRecord{bookRecord(1, now), bookRecord(2, now),
		{Prefix: netip.MustParsePrefix("2001:db8:1::1/48"), Reason: "unmasked", Source: SourceManual, Created: now.Truncate(time.Second)}}}
	if err := writeJSONFile(filepath.Join(dir, banStateFile), old); err != nil {
		t.Fatal(err)
	}
	b, logs := testBook(t, dir)
	if len(b.recs) != 3 || b.recs[netip.MustParsePrefix("2001:db8:1::/48")].Reason != "unmasked" {
		t.Fatalf("migrated %+v", b.recs)
	}
	if _, err := os.Stat(filepath.Join(dir, banStateFile)); !os.IsNotExist(err) {
		t.Fatalf("bans.json still there: %v", err)
	}
	if !strings.Contains(logs.String(), "migrated from bans.json") {
		t.Fatalf("logs %s", logs)
	}
	b.close()

	// a crash after the journal was written, before bans.json went
	if err := writeJSONFile(filepath.Join(dir, banStateFile), banFile{Bans: []banRecord{bookRecord(7, now)}}); err != nil {
		t.Fatal(err)
	}
	b, _ = testBook(t, dir)
	if len(b.recs) != 3 {
		t.Fatalf("with both files: %d records, want the journal's 3", len(b.recs))
	}
	if _, err := os.Stat(filepath.Join(dir, banStateFile)); !os.IsNotExist(err) {
		t.Fatal("bans.json kept next to the journal")
	}

	// a damaged bans.json: moved aside, the daemon starts
	dir = t.TempDir()
	os.WriteFile(filepath.Join(dir, banStateFile), []byte(`{"bans": [`), 0o600)
	b, logs = testBook(t, dir)
	if len(b.recs) != 0 || !strings.Contains(logs.String(), "moved aside") {
		t.Fatalf("damaged bans.json: %d records, logs %s", len(b.recs), logs)
	}
	if _, err := os.Stat(filepath.Join(dir, banStateFile+".corrupt")); err != nil {
		t.Fatal(err)
	}
}

// A journal cut in the middle of its last record (the daemon died in the
// write) opens with that record dropped and a warning; a record that parses
// but makes no sense is skipped. Neither stops the daemon.
func TestBookTornJournal(t *testing.T) {
	dir := t.TempDir()
	b, _ := testBook(t, dir)
	now := time.Now()
	b.mu.Lock()
	for i := range 10 {
		if _, err := b.putLocked(bookRecord(i, now)); err != nil {
			t.Fatal(err)
		}
	}
	b.mu.Unlock()
	b.close()
	path := filepath.Join(dir, banJournalFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cut := len(data) - 17 // inside the tenth record
	if err := os.WriteFile(path, data[:cut], 0o600); err != nil {
		t.Fatal(err)
	}
	b, logs := testBook(t, dir)
	if len(b.recs) != 9 || !strings.Contains(logs.String(), "torn last record was dropped") {
		t.Fatalf("%d records; logs %s", len(b.recs), logs)
	}
	if _, ok := b.recs[addr4(9)]; ok {
		t.Fatal("the torn record was replayed")
	}
	// a well-framed record of another kind: skipped, the rest kept
	b.mu.Lock()
	if _, err := b.j.Append([]byte(`{"op":"explode","prefix":"192.0.2.1/32"}`), []byte(`{"op":"ban"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.putLocked(bookRecord(42, now)); err != nil {
		t.Fatal(err)
	}
	b.mu.Unlock()
	b.close()
	b, logs = testBook(t, dir)
	if len(b.recs) != 10 || strings.Count(logs.String(), "does not make sense") != 2 {
		t.Fatalf("%d records; logs %s", len(b.recs), logs)
	}
}

// The daemon restores migrated bans when the maps are new: a bans.json from
// before the journal is not lost on the upgrade.
func TestMigratedBansRestored(t *testing.T) {
	testenv.RequireRoot(t)
	pinDir, stateDir := testPinDir(t), t.TempDir()
	now := time.Now()
	old := banFile{Bans: []banRecord{
		{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Reason: "scanner", Source: SourceManual, Created: now, Expires: now.Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("192.0.2.8/32"), Reason: "expired", Source: SourceManual, Created: now, Expires: now.Add(-time.Minute)},
	}}
	if err := writeJSONFile(filepath.Join(stateDir, banStateFile), old); err != nil {
		t.Fatal(err)
	}
	d := startBans(t, pinDir, stateDir)
	bans, err := d.dp.Bans()
	if err != nil {
		t.Fatal(err)
	}
	if len(bans) != 1 || bans[0].Prefix != netip.MustParsePrefix("192.0.2.7/32") || bans[0].Reason != sourceCode(SourceManual) {
		t.Fatalf("kernel bans after the migration %+v", bans)
	}
	if b, ok := banByPrefix(t, d, "192.0.2.7/32"); !ok || b.Reason != "scanner" {
		t.Fatalf("ban ls: %+v", b)
	}
	// the expired one was dropped, and the journal says so
	d.bans.close()
	again, _ := testBook(t, stateDir)
	if got := slices.Collect(maps.Keys(again.recs)); len(got) != 1 || got[0] != netip.MustParsePrefix("192.0.2.7/32") {
		t.Fatalf("journal holds %v", got)
	}
}
