package control

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// bulkBackend imports whatever reaches it.
type bulkBackend struct {
	fakeBackend
	got int
}

func (b *bulkBackend) ImportBans(_ context.Context, bans []NewBan) (*ImportResult, error) {
	b.got += len(bans)
	return &ImportResult{Added: len(bans), Refused: []ImportRefusal{}}, nil
}

func (b *bulkBackend) FlushBans(_ context.Context, source string) (*FlushResult, error) {
	return &FlushResult{Source: source}, nil
}

// TestImportRefusalsAreBounded: a refusal quotes a clipped prefix, never
// the whole of what came: 48 prefixes or TTLs of 128 KiB of control characters
// (36 MiB of JSON, within the limit) used to come back quoted in full
// ("\x01" for each byte, escaped again in JSON: 60 MiB of answer built in
// the daemon's memory for 6 MiB of prefixes).
func TestImportRefusalsAreBounded(t *testing.T) {
	b := &bulkBackend{}
	path := serve(t, b, nil)
	in := BanImport{Bans: []BanRequest{{Prefix: "192.0.2.1"}}}
	junk := strings.Repeat("\x01", 128<<10)
	for range 24 {
		in.Bans = append(in.Bans, BanRequest{Prefix: junk}, BanRequest{Prefix: "192.0.2.2", TTL: junk})
	}
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://apiguard"+PathBansImport, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := rawClient(path)
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var res ImportResult
	if err := json.Unmarshal(raw, &res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	if res.Added != 1 || b.got != 1 || len(res.Refused) != 48 ||
		!strings.Contains(res.Refused[0].Error, "not an address or CIDR") || !strings.Contains(res.Refused[1].Error, "not a duration") {
		t.Fatalf("import: added %d (backend got %d), %d refused, first %.200q %.200q", res.Added, b.got, len(res.Refused), res.Refused[0].Error, res.Refused[1].Error)
	}
	if len(raw) > 48*1024 {
		t.Errorf("the answer to 48 bad prefixes and TTLs is %d bytes: a refusal quotes what came in full", len(raw))
	}
}
