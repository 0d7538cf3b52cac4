package crowdsec

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeLAPI keeps decisions and answers the stream the way LAPI 1.4.6 does:
// startup gives every live decision, later pulls the changes since the last
// one, and empty lists are null.
type fakeLAPI struct {
	mu        sync.Mutex
	key       string
	live      map[int64]Decision
	pendNew   []Decision
	pendDel   []Decision
	nextID    int64
	down      bool   // answer 503
	raw       string // answer this body instead, once
	pulls     []string
	alerts    [][]alert
	logins    int
	password  string
	tokens    map[string]bool
	rejectTok bool      // refuse the next alert post with 401 (token revoked)
	expire    time.Time // the tokens' expiry (default: an hour from now)
	srv       *httptest.Server
}

func newFakeLAPI(t *testing.T) *fakeLAPI {
	f := &fakeLAPI{key: "good-key", live: map[int64]Decision{}, password: "pw", tokens: map[string]bool{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeLAPI) add(scope, value, dur, origin string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	d := Decision{ID: f.nextID, Origin: origin, Scenario: "test", Scope: scope, Type: "ban", Value: value, Duration: dur}
	f.live[d.ID] = d
	f.pendNew = append(f.pendNew, d)
	return d.ID
}

func (f *fakeLAPI) del(id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.live[id]
	delete(f.live, id)
	f.pendDel = append(f.pendDel, d)
}

func (f *fakeLAPI) setDown(v bool) { f.mu.Lock(); f.down = v; f.mu.Unlock() }

func (f *fakeLAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		http.Error(w, `{"message":"down"}`, http.StatusServiceUnavailable)
		return
	}
	switch r.URL.Path {
	case "/v1/decisions/stream":
		if r.Header.Get("X-Api-Key") != f.key {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"message":"access forbidden"}`)
			return
		}
		f.pulls = append(f.pulls, r.URL.RawQuery)
		if f.raw != "" {
			fmt.Fprint(w, f.raw)
			f.raw = ""
			return
		}
		var ans streamAnswer
		if r.URL.Query().Get("startup") == "true" {
			for _, d := range f.live {
				ans.New = append(ans.New, d)
			}
		} else {
			ans.New, ans.Deleted = f.pendNew, f.pendDel
		}
		f.pendNew, f.pendDel = nil, nil
		json.NewEncoder(w).Encode(ans) // nil slices encode as null, like the LAPI
	case "/v1/watchers/login":
		var req struct {
			MachineID string `json:"machine_id"`
			Password  string `json:"password"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if req.Password != f.password {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"code":401,"message":"incorrect Username or Password"}`)
			return
		}
		f.logins++
		tok := fmt.Sprintf("tok-%d", f.logins)
		f.tokens[tok] = true
		exp := f.expire
		if exp.IsZero() {
			exp = time.Now().Add(time.Hour)
		}
		json.NewEncoder(w).Encode(loginAnswer{Code: 200, Token: tok, Expire: exp})
	case "/v1/alerts":
		tok := r.Header.Get("Authorization")
		if f.rejectTok || len(tok) < 8 || !f.tokens[tok[7:]] {
			f.rejectTok = false
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"code":401,"message":"Token is expired"}`)
			return
		}
		var as []alert
		if err := json.NewDecoder(r.Body).Decode(&as); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.alerts = append(f.alerts, as)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `["1"]`)
	default:
		http.NotFound(w, r)
	}
}

// memKernel is the kernel's ban map as the daemon presents it.
type memKernel struct {
	mu    sync.Mutex
	bans  map[netip.Prefix]Ban
	local map[netip.Prefix]bool // bans of another source: never touched
	calls int
	fail  error
}

func newMemKernel() *memKernel {
	return &memKernel{bans: map[netip.Prefix]Ban{}, local: map[netip.Prefix]bool{}}
}

func (k *memKernel) ApplyCrowdSec(add []Ban, remove []netip.Prefix) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fail != nil {
		return k.fail
	}
	k.calls++
	for _, p := range remove {
		delete(k.bans, p)
	}
	for _, b := range add {
		if !k.local[b.Prefix] {
			k.bans[b.Prefix] = b
		}
	}
	return nil
}

func (k *memKernel) CrowdSecBans() ([]netip.Prefix, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []netip.Prefix
	for p := range k.bans {
		out = append(out, p)
	}
	return out, nil
}

func (k *memKernel) prefixes() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for p := range k.bans {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

func (k *memKernel) get(p string) (Ban, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.bans[netip.MustParsePrefix(p)]
	return b, ok
}
