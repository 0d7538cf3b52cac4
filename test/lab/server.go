package lab

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ServerConfig is the API server's configuration.
type ServerConfig struct {
	// Ports are the TCP ports the API listens on, IPv4 and IPv6 (default 80, 8080).
	Ports []int `json:"ports"`
	// LoginIterations is the PBKDF2-SHA256 work of one /login, as a real
	// server spends hashing a password (default 20000, about 5ms of CPU).
	LoginIterations int `json:"login_iterations"`
	// MaxConns caps the connections served at once, like a web server's
	// worker or connection limit; more wait in the kernel's accept queue.
	// 0 means no cap.
	MaxConns int `json:"max_conns"`
}

func (c *ServerConfig) setDefaults() {
	if len(c.Ports) == 0 {
		c.Ports = []int{80, 8080}
	}
	if c.LoginIterations == 0 {
		c.LoginIterations = 20000
	}
}

// ServerReport is what the server role reports: once when it listens, then
// twice a second.
type ServerReport struct {
	Ready    bool  `json:"ready,omitempty"`
	Requests int64 `json:"requests"` // answered so far
	Logins   int64 `json:"logins"`   // password checks so far
	Conns    int64 `json:"conns"`    // connections open now
}

// Server is the API server process.
type Server struct {
	*Proc
	Config ServerConfig
	last   atomic.Pointer[ServerReport]
}

// Last is the server's latest report.
func (s *Server) Last() ServerReport {
	if r := s.last.Load(); r != nil {
		return *r
	}
	return ServerReport{}
}

// StartServer runs the API server in the server namespace and waits until it
// listens.
func (l *Lab) StartServer(cfg ServerConfig) (*Server, error) {
	cfg.setDefaults()
	s := &Server{Config: cfg}
	ready := make(chan struct{})
	var once sync.Once
	p, err := l.startRole("api server", l.Server.NS, "server", cfg, func(line []byte) {
		var r ServerReport
		if json.Unmarshal(line, &r) != nil {
			return
		}
		s.last.Store(&r)
		if r.Ready {
			once.Do(func() { close(ready) })
		}
	})
	if err != nil {
		return nil, err
	}
	s.Proc = p
	select {
	case <-ready:
		return s, nil
	case <-p.Done():
		return nil, fmt.Errorf("api server exited at start: %w", p.exitErr())
	case <-time.After(15 * time.Second):
		return nil, fmt.Errorf("api server did not listen within 15s: %s", p.Output())
	}
}

// The API's users; the password hashes are computed at start.
var apiUsers = map[string]string{"alice": "wonderland", "bob": "builder"}

// Item is what /items/{id} returns.
type Item struct {
	ID    int     `json:"id"`
	Name  string  `json:"name"`
	Price float64 `json:"price"`
}

// LoginRequest is the body of POST /login.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// MaxItemID is the highest item id the API knows.
const MaxItemID = 1000

type apiServer struct {
	iterations int
	salt       []byte
	hashes     map[string][]byte
	requests   atomic.Int64
	logins     atomic.Int64
	conns      atomic.Int64
}

func newAPIServer(iterations int) (*apiServer, error) {
	a := &apiServer{iterations: iterations, salt: []byte("apiguard-lab"), hashes: map[string][]byte{}}
	for u, pw := range apiUsers {
		h, err := a.hash(pw)
		if err != nil {
			return nil, err
		}
		a.hashes[u] = h
	}
	return a, nil
}

func (a *apiServer) hash(pw string) ([]byte, error) {
	return pbkdf2.Key(sha256.New, pw, a.salt, a.iterations, 32)
}

func (a *apiServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil || id < 1 || id > MaxItemID {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such item"})
			return
		}
		writeJSON(w, http.StatusOK, Item{ID: id, Name: fmt.Sprintf("item-%d", id), Price: float64(id%97) + 0.99})
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		var req LoginRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be {\"user\":…,\"password\":…}"})
			return
		}
		a.logins.Add(1)
		// The hash is computed for unknown users too, so that a login costs
		// the same whoever asks.
		got, err := a.hash(req.Password)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		want, ok := a.hashes[req.User]
		if !ok || subtle.ConstantTimeCompare(got, want) != 1 {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "wrong user or password"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"token": hex.EncodeToString(got[:16])})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to do
}

// runServer is the server role: it runs inside the server namespace.
func runServer(ctx context.Context, config []byte, out *reporter) error {
	var cfg ServerConfig
	if err := json.Unmarshal(config, &cfg); err != nil {
		return fmt.Errorf("server configuration: %w", err)
	}
	cfg.setDefaults()
	api, err := newAPIServer(cfg.LoginIterations)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           api.handler(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				api.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				api.conns.Add(-1)
			}
		},
	}
	var sem chan struct{}
	if cfg.MaxConns > 0 {
		sem = make(chan struct{}, cfg.MaxConns)
	}
	errc := make(chan error, len(cfg.Ports))
	for _, port := range cfg.Ports {
		// "tcp" on an unspecified address is one dual-stack socket: IPv4 and
		// IPv6. Plain TCP, not Go's default MPTCP: the SYN proxy's hand-over
		// refuses MPTCP listeners (docs/synproxy.md).
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort("", strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("listen on port %d: %w", port, err)
		}
		if sem != nil {
			ln = &limitListener{Listener: ln, sem: sem}
		}
		go func() { errc <- srv.Serve(ln) }()
	}
	out.report(ServerReport{Ready: true})
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx) // connections still open at the deadline are cut
			return nil
		case err := <-errc:
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return err
		case <-tick.C:
			out.report(ServerReport{Requests: api.requests.Load(), Logins: api.logins.Load(), Conns: api.conns.Load()})
		}
	}
}

// limitListener accepts a connection only while fewer than cap(sem) are open.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}
