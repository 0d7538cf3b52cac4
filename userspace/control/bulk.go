package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// Bulk ban endpoints, for a Backend that implements BanBulk (others answer 404).
const (
	// PathBansImport takes many bans in one request (apiguard ban import).
	PathBansImport = "/v1/bans/import"
)

// MaxImportBans bounds one import: as many bans as the kernel's ban map holds
// is more than any file should bring at once.
const MaxImportBans = 200_000

// BanImport is many ban requests at once. Each is checked like POST /v1/bans.
type BanImport struct {
	Bans []BanRequest `json:"bans"`
}

// ImportResult says what an import did: every ban that was refused, with why.
type ImportResult struct {
	Added   int             `json:"added"`
	Refused []ImportRefusal `json:"refused"`
}

// ImportRefusal is one ban of an import that was not made.
type ImportRefusal struct {
	Index  int    `json:"index"` // in BanImport.Bans
	Prefix string `json:"prefix"`
	Error  string `json:"error"`
}

// FlushResult says how many bans a flush lifted.
type FlushResult struct {
	Source  string `json:"source"`
	Removed int    `json:"removed"`
}

// Ban sources a flush takes: bans made by hand, by the detector, or both.
// CrowdSec's follow the LAPI's decisions (cscli decisions delete).
const (
	FlushManual   = "manual"
	FlushDetector = "detector"
	FlushAll      = "all"
)

// BanBulk is a Backend that imports and flushes bans in bulk.
type BanBulk interface {
	// ImportBans makes every ban it can and says why it refused the others.
	ImportBans(ctx context.Context, bans []NewBan) (*ImportResult, error)
	// FlushBans lifts every ban of a source (FlushManual, FlushDetector, FlushAll).
	FlushBans(ctx context.Context, source string) (*FlushResult, error)
}

func (s *Server) importBans(w http.ResponseWriter, r *http.Request) {
	bulk, ok := s.backend.(BanBulk)
	if !ok {
		s.fail(w, NotFoundf("this daemon cannot import bans"))
		return
	}
	in, err := decodeImport(w, r)
	if err != nil {
		s.fail(w, err)
		return
	}
	res := &ImportResult{Refused: []ImportRefusal{}}
	nbs := make([]NewBan, 0, len(in.Bans))
	idx := make([]int, 0, len(in.Bans))
	for i := range in.Bans {
		nb, err := in.Bans[i].parse()
		if err != nil {
			res.Refused = append(res.Refused, ImportRefusal{Index: i, Prefix: clip(in.Bans[i].Prefix), Error: err.Error()})
			continue
		}
		nbs = append(nbs, nb)
		idx = append(idx, i)
	}
	got, err := bulk.ImportBans(r.Context(), nbs)
	if err != nil {
		s.fail(w, err)
		return
	}
	res.Added = got.Added
	for _, rf := range got.Refused {
		if rf.Index >= 0 && rf.Index < len(idx) {
			rf.Index = idx[rf.Index]
		}
		res.Refused = append(res.Refused, rf)
	}
	writeJSON(w, http.StatusOK, res)
}

// decodeImport reads a BanImport one ban at a time and stops past
// MaxImportBans: decoding the whole body first built every ban of it (a
// 64 MiB body of {"prefix":"1"} is 4.4 million: 700 MiB of heap, past the
// chart's memory limit) before the count was checked.
func decodeImport(w http.ResponseWriter, r *http.Request) (*BanImport, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxPolicyBody))
	dec.DisallowUnknownFields()
	delim := func(want json.Delim) error {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) && want != '{' {
			err = io.ErrUnexpectedEOF // not an empty body: a cut one
		}
		if err != nil {
			return requestError(err)
		}
		if d, ok := tok.(json.Delim); !ok || d != want {
			return requestError(fmt.Errorf("want %v, found %v", want, tok))
		}
		return nil
	}
	if err := delim('{'); err != nil {
		return nil, err
	}
	in := &BanImport{}
	seen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, requestError(err)
		}
		if key, _ := tok.(string); key != "bans" || seen {
			return nil, requestError(fmt.Errorf("unknown or repeated field %q (want one \"bans\")", clip(fmt.Sprint(tok))))
		}
		seen = true
		if !dec.More() {
			return nil, requestError(io.ErrUnexpectedEOF)
		}
		tok, err = dec.Token()
		if err != nil {
			return nil, requestError(err)
		}
		if tok == nil {
			continue // "bans": null, no bans
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return nil, requestError(fmt.Errorf("bans: want an array, found %v", tok))
		}
		for dec.More() {
			if len(in.Bans) == MaxImportBans {
				return nil, Invalidf("more than %d bans in one import", MaxImportBans)
			}
			var b BanRequest
			if err := dec.Decode(&b); err != nil {
				return nil, requestError(err)
			}
			in.Bans = append(in.Bans, b)
		}
		if err := delim(']'); err != nil {
			return nil, err
		}
	}
	if err := delim('}'); err != nil {
		return nil, err
	}
	// anything but the end of the body after the object is an error
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("more than one JSON value")
		}
		return nil, requestError(err)
	}
	return in, nil
}

func (s *Server) flushBans(w http.ResponseWriter, r *http.Request, source string) {
	bulk, ok := s.backend.(BanBulk)
	if !ok {
		s.fail(w, NotFoundf("this daemon cannot flush bans"))
		return
	}
	switch source {
	case FlushManual, FlushDetector, FlushAll:
	default:
		s.fail(w, Invalidf("cannot flush the bans of source %q (want manual, detector or all; CrowdSec's follow the LAPI: cscli decisions delete)", clip(source)))
		return
	}
	res, err := bulk.FlushBans(r.Context(), source)
	s.reply(w, res, err)
}

// clip keeps what an error quotes from a request short.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// ImportBans sends many bans at once.
func (c *Client) ImportBans(ctx context.Context, in BanImport) (*ImportResult, error) {
	var res ImportResult
	return &res, c.do(ctx, http.MethodPost, PathBansImport, nil, in, &res)
}

// FlushBans lifts every ban of a source.
func (c *Client) FlushBans(ctx context.Context, source string) (*FlushResult, error) {
	var res FlushResult
	return &res, c.do(ctx, http.MethodDelete, PathBans, url.Values{"source": {source}}, nil, &res)
}
