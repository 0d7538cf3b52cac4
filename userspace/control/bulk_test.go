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

// TestImportBodies: an import is read one ban at a time, so a list past
// MaxImportBans is refused at the first ban too many (memory stays bounded
// whatever the body holds) and the backend sees none of it; every other
// shape of body gets the answer POST /v1/bans's decoding gives.
func TestImportBodies(t *testing.T) {
	b := &bulkBackend{}
	path := serve(t, b, nil)
	var long strings.Builder
	long.WriteString(`{"bans":[`)
	for i := range MaxImportBans + 1 {
		if i > 0 {
			long.WriteByte(',')
		}
		long.WriteString(`{"prefix":"1"}`)
	}
	long.WriteString(`]}`)
	for _, tc := range []struct {
		body  string
		code  int
		err   string
		added int
	}{
		{body: long.String(), code: http.StatusBadRequest, err: "more than 200000 bans in one import"},
		{body: ``, code: http.StatusBadRequest, err: "request body is empty"},
		{body: `{"bans":[`, code: http.StatusBadRequest, err: "unexpected EOF"},
		{body: `{"bans":[]`, code: http.StatusBadRequest, err: "unexpected EOF"},
		{body: `[]`, code: http.StatusBadRequest, err: "bad request body"},
		{body: `{"bans":5}`, code: http.StatusBadRequest, err: "want an array"},
		{body: `{"bans":[],"x":1}`, code: http.StatusBadRequest, err: `field "x"`},
		{body: `{"bans":[],"bans":[]}`, code: http.StatusBadRequest, err: `repeated field "bans"`},
		{body: `{"bans":[]} {}`, code: http.StatusBadRequest, err: "bad request body"},
		{body: `{"bans":[{"prefix":"192.0.2.1","bogus":1}]}`, code: http.StatusBadRequest, err: `unknown field "bogus"`},
		{body: `{"bans":null}`, code: http.StatusOK},
		{body: `{}`, code: http.StatusOK},
		{body: ` {"bans":[{"prefix":"192.0.2.1"},{"prefix":"192.0.2.2","ttl":"1h"}]} `, code: http.StatusOK, added: 2},
	} {
		b.got = 0
		code, eb := rawDo(t, path, http.MethodPost, PathBansImport, strings.NewReader(tc.body))
		if code != tc.code || !strings.Contains(eb.Error, tc.err) || b.got != tc.added {
			t.Errorf("%.40q: %d %q (backend got %d), want %d %q (%d)", tc.body, code, eb.Error, b.got, tc.code, tc.err, tc.added)
		}
	}
}
