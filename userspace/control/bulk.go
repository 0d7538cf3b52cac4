package control

import (
	"context"
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
	var in BanImport
	if err := decode(w, r, MaxPolicyBody, &in); err != nil {
		s.fail(w, err)
		return
	}
	if len(in.Bans) > MaxImportBans {
		s.fail(w, Invalidf("%d bans in one import; at most %d", len(in.Bans), MaxImportBans))
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
