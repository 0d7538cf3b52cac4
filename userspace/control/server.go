package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Server answers control requests from a Backend.
type Server struct {
	backend Backend
	log     *slog.Logger
	// allow decides whether a peer may talk to us; tests replace it to see a refusal.
	allow func(Peer) error
	mux   map[string]map[string]http.HandlerFunc // path -> method -> handler
}

// NewServer returns a server for b. log may be nil.
func NewServer(b Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{backend: b, log: log, allow: func(p Peer) error { return checkPeer(p.UID) }}
	s.mux = map[string]map[string]http.HandlerFunc{
		PathStatus:        {http.MethodGet: s.status},
		PathPolicy:        {http.MethodGet: s.policy, http.MethodPut: s.applyPolicy},
		PathPolicyDiff:    {http.MethodPost: s.diffPolicy},
		PathPolicyConfirm: {http.MethodPost: s.confirmPolicy},
		PathBans:          {http.MethodGet: s.bans, http.MethodPost: s.addBan, http.MethodDelete: s.removeBan},
		PathClientsTop:    {http.MethodGet: s.topClients},
		// bulk bans (bulk.go), for a BanBulk
		PathBansImport: {http.MethodPost: s.importBans},
		// events and flags come from backends that implement EventSource and
		// FlagSource (telemetry.go)
		PathEvents:         {http.MethodGet: s.events},
		PathClientsFlagged: {http.MethodGet: s.flagged},
		// reports from the application (signals.go), for a SignalSink
		PathReport: {http.MethodPost: s.report},
	}
	return s
}

// Listen creates the socket at path: its directory is created 0700 if missing, a
// stale socket from a dead daemon is replaced, and the socket is made 0600. A
// socket that still answers belongs to a running daemon and is an error.
func Listen(path string) (*net.UnixListener, error) {
	if path == "" {
		return nil, errors.New("no control socket path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create control socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket path %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another apiguard daemon is serving %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// Between bind and chmod the socket has the umask's mode; connecting needs
	// write permission, which no umask in use grants to others, and the directory
	// above is 0700 when we made it.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict control socket: %w", err)
	}
	return ln, nil
}

// Serve answers requests on ln until ctx ends, then shuts down gracefully.
// It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ConnContext:       peerContext,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute, // a 64 MiB policy over a local socket takes well under a second
		WriteTimeout:      2 * time.Minute, // applying a large policy takes seconds
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("control server: %w", err)
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shut)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("control server shutdown: %w", err)
	}
	return nil
}

// statusWriter remembers the status code for the request log.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines)
// for the streaming events endpoint.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP checks the caller, then routes by path and method.
func (s *Server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw, code: http.StatusOK}
	peer, err := peerFrom(r.Context())
	defer func() {
		s.log.Debug("control request", "method", r.Method, "path", r.URL.Path, "status", w.code,
			"uid", peer.UID, "pid", peer.PID, "took", time.Since(start))
	}()
	if err == nil {
		err = s.allow(peer)
	}
	if err != nil {
		s.log.Warn("control request refused", "uid", peer.UID, "pid", peer.PID, "err", err)
		writeJSON(w, http.StatusForbidden, ErrorBody{Error: err.Error()})
		return
	}
	methods, ok := s.mux[r.URL.Path]
	if !ok {
		writeJSON(w, http.StatusNotFound, ErrorBody{Error: fmt.Sprintf("no endpoint %s", r.URL.Path)})
		return
	}
	h, ok := methods[r.Method]
	if !ok {
		allowed := make([]string, 0, len(methods))
		for m := range methods {
			allowed = append(allowed, m)
		}
		sort.Strings(allowed)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeJSON(w, http.StatusMethodNotAllowed, ErrorBody{
			Error: fmt.Sprintf("%s does not take %s (allowed: %s)", r.URL.Path, r.Method, strings.Join(allowed, ", ")),
		})
		return
	}
	h(w, r)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.backend.Status(r.Context())
	s.reply(w, st, err)
}

func (s *Server) policy(w http.ResponseWriter, r *http.Request) {
	p, err := s.backend.Policy(r.Context())
	s.reply(w, p, err)
}

func (s *Server) applyPolicy(w http.ResponseWriter, r *http.Request) {
	if up, ok := s.upload(w, r); ok {
		res, err := s.backend.ApplyPolicy(r.Context(), up)
		s.reply(w, res, err)
	}
}

func (s *Server) confirmPolicy(w http.ResponseWriter, r *http.Request) {
	c, ok := s.backend.(PolicyConfirmer)
	if !ok {
		s.fail(w, NotFoundf("this daemon puts no policy on trial"))
		return
	}
	res, err := c.ConfirmPolicy(r.Context())
	s.reply(w, res, err)
}

func (s *Server) diffPolicy(w http.ResponseWriter, r *http.Request) {
	if up, ok := s.upload(w, r); ok {
		res, err := s.backend.DiffPolicy(r.Context(), up)
		s.reply(w, res, err)
	}
}

// upload decodes and checks a policy upload, answering the error itself.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) (*PolicyUpload, bool) {
	var up PolicyUpload
	if err := decode(w, r, MaxPolicyBody, &up); err != nil {
		s.fail(w, err)
		return nil, false
	}
	if err := up.check(); err != nil {
		s.fail(w, err)
		return nil, false
	}
	return &up, true
}

func (s *Server) bans(w http.ResponseWriter, r *http.Request) {
	bans, err := s.backend.Bans(r.Context())
	if bans == nil {
		bans = []Ban{}
	}
	s.reply(w, bans, err)
}

func (s *Server) addBan(w http.ResponseWriter, r *http.Request) {
	var req BanRequest
	if err := decode(w, r, MaxSmallBody, &req); err != nil {
		s.fail(w, err)
		return
	}
	nb, err := req.parse()
	if err != nil {
		s.fail(w, err)
		return
	}
	b, err := s.backend.AddBan(r.Context(), nb)
	s.reply(w, b, err)
}

func (s *Server) removeBan(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if len(q["source"]) == 1 && len(q["prefix"]) == 0 {
		s.flushBans(w, r, q.Get("source"))
		return
	}
	if len(q["prefix"]) != 1 || len(q["source"]) != 0 {
		s.fail(w, Invalidf("give exactly one prefix parameter (DELETE %s?prefix=ADDR|CIDR), or one source (?source=manual|detector|all)", PathBans))
		return
	}
	p, err := ParsePrefix(q.Get("prefix"))
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := s.backend.RemoveBan(r.Context(), p); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) topClients(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := DefaultTopN
	if v := q.Get("n"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxTopN {
			s.fail(w, Invalidf("n=%q: want a whole number from 1 to %d", v, MaxTopN))
			return
		}
	}
	by := ByPackets
	if v := q.Get("by"); v != "" {
		var err error
		if by, err = ParseSortKey(v); err != nil {
			s.fail(w, err)
			return
		}
	}
	service := q.Get("service")
	if service != "" && !ValidServiceName(service) {
		s.fail(w, Invalidf("service=%q is not a service name", clip(service)))
		return
	}
	top, err := s.backend.TopClients(r.Context(), n, by, service)
	s.reply(w, top, err)
}

// reply writes v, or the error.
func (s *Server) reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// httpError carries a status chosen while reading the request.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func (s *Server) fail(w http.ResponseWriter, err error) {
	var he *httpError
	var pe *PolicyError
	switch {
	case errors.As(err, &he):
		writeJSON(w, he.code, ErrorBody{Error: he.msg})
	case errors.As(err, &pe):
		writeJSON(w, http.StatusUnprocessableEntity, ErrorBody{Error: pe.Error(), Problems: pe.Problems})
	case errors.Is(err, ErrInvalid):
		writeJSON(w, http.StatusBadRequest, ErrorBody{Error: err.Error()})
	case errors.Is(err, ErrNotFound):
		writeJSON(w, http.StatusNotFound, ErrorBody{Error: err.Error()})
	case errors.Is(err, ErrRefused):
		writeJSON(w, http.StatusConflict, ErrorBody{Error: err.Error()})
	default:
		s.log.Error("control request failed", "err", err)
		writeJSON(w, http.StatusInternalServerError, ErrorBody{Error: err.Error()})
	}
}

// decode reads one JSON value of at most limit bytes into v. Unknown fields and
// trailing data are errors: a typo in a script must not be silently ignored.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// anything but the end of the body after the value is an error
		var extra json.RawMessage
		if derr := dec.Decode(&extra); derr != io.EOF {
			err = derr
			if err == nil {
				err = errors.New("more than one JSON value")
			}
		}
	}
	return requestError(err)
}

// requestError turns what reading a request body failed with into the
// answer's status and message; nil stays nil.
func requestError(err error) error {
	if err == nil {
		return nil
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit)}
	case errors.Is(err, io.EOF):
		return &httpError{http.StatusBadRequest, "request body is empty: want a JSON object"}
	default:
		return &httpError{http.StatusBadRequest, fmt.Sprintf("bad request body: %v", err)}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	// the peer went away if this fails; there is no one left to tell
	_ = enc.Encode(v)
}
