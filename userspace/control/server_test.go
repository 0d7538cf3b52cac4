package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/testenv"
)

// fakeBackend records what the server passed it and answers from its fields.
type fakeBackend struct {
	mu        sync.Mutex
	applied   []*PolicyUpload
	added     []NewBan
	removed   []netip.Prefix
	topN      int
	topBy     SortKey
	applyErr  error
	removeErr error
}

func (f *fakeBackend) Status(context.Context) (*Status, error) {
	return &Status{Version: "test", PID: 42, Policy: PolicySummary{Name: "default", Generation: 7},
		Interfaces: []Interface{{Name: "eth0", Mode: "native", Adopted: true}}}, nil
}

func (f *fakeBackend) Policy(context.Context) (*PolicyInfo, error) {
	return &PolicyInfo{PolicySummary: PolicySummary{Name: "default", Generation: 7}, Path: "/etc/apiguard/policy.yaml", Source: "kind: Policy\n"}, nil
}

func (f *fakeBackend) ApplyPolicy(_ context.Context, up *PolicyUpload) (*ApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, up)
	if f.applyErr != nil {
		return nil, f.applyErr
	}
	return &ApplyResult{Name: up.Name, Generation: 8, Changed: true, Changes: []string{"+ deny 192.0.2.0/24"}}, nil
}

func (f *fakeBackend) DiffPolicy(_ context.Context, up *PolicyUpload) (*DiffResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applyErr != nil {
		return nil, f.applyErr
	}
	return &DiffResult{Name: up.Name, Changes: []string{"~ " + up.Name}}, nil
}

func (f *fakeBackend) Bans(context.Context) ([]Ban, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Ban
	for _, b := range f.added {
		out = append(out, Ban{Prefix: b.Prefix.String(), Reason: b.Reason, Source: "manual"})
	}
	return out, nil
}

func (f *fakeBackend) AddBan(_ context.Context, b NewBan) (*Ban, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.added = append(f.added, b)
	return &Ban{Prefix: b.Prefix.String(), Reason: b.Reason, Source: "manual"}, nil
}

func (f *fakeBackend) RemoveBan(_ context.Context, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.removeErr != nil {
		return f.removeErr
	}
	f.removed = append(f.removed, p)
	return nil
}

func (f *fakeBackend) TopClients(_ context.Context, n int, by SortKey, _ string) (*TopClients, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.topN, f.topBy = n, by
	return &TopClients{By: by, Tracked: 1, Clients: []ClientSummary{{Addr: "192.0.2.1/32", Packets: 10}}}, nil
}

// serve starts a server for b on a socket in a fresh directory and returns the
// socket path. The server stops when the test ends.
func serve(t *testing.T, b Backend, tweak func(*Server)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "ctl.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(b, nil)
	if tweak != nil {
		tweak(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

// rawClient sends hand-made requests, for the cases the typed client never makes.
func rawClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func rawDo(t *testing.T, path, method, target string, body io.Reader) (int, ErrorBody) {
	t.Helper()
	req, err := http.NewRequest(method, "http://apiguard"+target, body)
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
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusNoContent && ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, target, ct)
	}
	var eb ErrorBody
	if resp.StatusCode >= 300 {
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
			t.Fatalf("%s %s: error body is not JSON: %v", method, target, err)
		}
	}
	return resp.StatusCode, eb
}

func TestCheckPeer(t *testing.T) {
	if err := checkPeer(0); err != nil {
		t.Errorf("root refused: %v", err)
	}
	for _, uid := range []uint32{1, 1000, 65534} {
		err := checkPeer(uid)
		if err == nil {
			t.Errorf("uid %d accepted", uid)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("uid %d", uid)) {
			t.Errorf("uid %d: error %q does not name the uid", uid, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	fb := &fakeBackend{}
	c := NewClient(serve(t, fb, nil))
	defer c.Close()
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Policy.Generation != 7 || len(st.Interfaces) != 1 || st.Interfaces[0].Mode != "native" || !st.Interfaces[0].Adopted {
		t.Errorf("status = %+v", st)
	}

	p, err := c.Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "default" || p.Source != "kind: Policy\n" {
		t.Errorf("policy = %+v", p)
	}

	up := &PolicyUpload{Name: "/tmp/p.yaml", Source: "kind: Policy\n", Files: map[string]string{"deny.txt": "192.0.2.0/24\n"}}
	res, err := c.ApplyPolicy(ctx, up)
	if err != nil {
		t.Fatal(err)
	}
	if res.Generation != 8 || !res.Changed || len(res.Changes) != 1 {
		t.Errorf("apply = %+v", res)
	}
	if len(fb.applied) != 1 || fb.applied[0].Files["deny.txt"] != "192.0.2.0/24\n" {
		t.Errorf("backend got uploads %+v", fb.applied)
	}
	diff, err := c.DiffPolicy(ctx, up)
	if err != nil {
		t.Fatal(err)
	}
	if len(diff.Changes) != 1 || diff.Changes[0] != "~ /tmp/p.yaml" {
		t.Errorf("diff = %+v", diff)
	}

	if _, err := c.AddBan(ctx, BanRequest{Prefix: "192.0.2.77", TTL: "10m", Reason: "scanner"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddBan(ctx, BanRequest{Prefix: "2001:db8::1/48", Force: true}); err != nil {
		t.Fatal(err)
	}
	want := []NewBan{
		{Prefix: netip.MustParsePrefix("192.0.2.77/32"), TTL: 10 * time.Minute, Reason: "scanner"},
		{Prefix: netip.MustParsePrefix("2001:db8::/48"), DefaultTTL: true, Force: true},
	}
	if len(fb.added) != len(want) {
		t.Fatalf("backend got bans %+v, want %+v", fb.added, want)
	}
	for i := range want {
		if fb.added[i] != want[i] {
			t.Errorf("ban %d: backend got %+v, want %+v", i, fb.added[i], want[i])
		}
	}
	bans, err := c.Bans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(bans) != 2 || bans[0].Prefix != "192.0.2.77/32" || bans[0].Reason != "scanner" {
		t.Errorf("bans = %+v", bans)
	}
	if err := c.RemoveBan(ctx, "192.0.2.77"); err != nil {
		t.Fatal(err)
	}
	if len(fb.removed) != 1 || fb.removed[0] != netip.MustParsePrefix("192.0.2.77/32") {
		t.Errorf("backend removed %v", fb.removed)
	}

	top, err := c.TopClients(ctx, 5, ByDrops, "")
	if err != nil {
		t.Fatal(err)
	}
	if fb.topN != 5 || fb.topBy != ByDrops || len(top.Clients) != 1 {
		t.Errorf("top: backend got n=%d by=%s, answer %+v", fb.topN, fb.topBy, top)
	}
}

func TestPeerRefused(t *testing.T) {
	refuse := func(p Peer) error { return checkPeer(p.UID + 1000) } // everyone looks like uid >= 1000
	path := serve(t, &fakeBackend{}, func(s *Server) { s.allow = refuse })
	c := NewClient(path)
	defer c.Close()
	_, err := c.Status(context.Background())
	if !errors.Is(err, ErrPermission) {
		t.Fatalf("err = %v, want ErrPermission", err)
	}
	if !strings.Contains(err.Error(), "only root") {
		t.Errorf("err = %q does not say who may connect", err)
	}
	code, eb := rawDo(t, path, http.MethodGet, PathStatus, nil)
	if code != http.StatusForbidden || !strings.Contains(eb.Error, "uid 1000") {
		t.Errorf("raw status: %d %+v", code, eb)
	}
}

func TestBadRequests(t *testing.T) {
	fb := &fakeBackend{removeErr: fmt.Errorf("unban 192.0.2.9/32: %w", ErrNotFound)}
	path := serve(t, fb, nil)
	for _, tc := range []struct {
		name, method, target, body string
		code                       int
		want                       string
	}{
		{"syntax", "PUT", PathPolicy, `{"name": "p.yaml", "source": `, 400, "bad request body"},
		{"wrong type", "PUT", PathPolicy, `{"name": 3, "source": "x"}`, 400, "cannot unmarshal number"},
		{"unknown field", "PUT", PathPolicy, `{"name": "p.yaml", "source": "x", "sorce": "y"}`, 400, `unknown field "sorce"`},
		{"trailing data", "PUT", PathPolicy, `{"name": "p.yaml", "source": "x"} {}`, 400, "bad request body"},
		{"empty body", "PUT", PathPolicy, ``, 400, "request body is empty"},
		{"empty policy", "PUT", PathPolicy, `{"name": "p.yaml", "source": "  "}`, 400, "policy p.yaml is empty"},
		{"no name", "POST", PathPolicyDiff, `{"source": "x"}`, 400, "has no name"},
		{"bad cidr", "POST", PathBans, `{"prefix": "192.0.2.300/24"}`, 400, `"192.0.2.300/24" is not an address or CIDR`},
		{"bad ttl", "POST", PathBans, `{"prefix": "192.0.2.1", "ttl": "ten minutes"}`, 400, `ttl "ten minutes"`},
		{"negative ttl", "POST", PathBans, `{"prefix": "192.0.2.1", "ttl": "-1m"}`, 400, "negative"},
		{"control char", "POST", PathBans, `{"prefix": "192.0.2.1", "reason": "a\nb"}`, 400, "control character"},
		{"unknown ban field", "POST", PathBans, `{"prefix": "192.0.2.1", "tll": "1m"}`, 400, `unknown field "tll"`},
		{"no prefix param", "DELETE", PathBans, ``, 400, "exactly one prefix"},
		{"missing ban", "DELETE", PathBans + "?prefix=192.0.2.9", ``, 404, "not found"},
		{"top n zero", "GET", PathClientsTop + "?n=0", ``, 400, "from 1 to"},
		{"top n huge", "GET", PathClientsTop + "?n=999999", ``, 400, "from 1 to"},
		{"top by", "GET", PathClientsTop + "?by=colour", ``, 400, `cannot sort clients by "colour"`},
		{"method", "DELETE", PathStatus, ``, 405, "does not take DELETE"},
		{"path", "GET", "/v1/nothing", ``, 404, "no endpoint /v1/nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, eb := rawDo(t, path, tc.method, tc.target, strings.NewReader(tc.body))
			if code != tc.code || !strings.Contains(eb.Error, tc.want) {
				t.Errorf("got %d %q, want %d containing %q", code, eb.Error, tc.code, tc.want)
			}
		})
	}
	if len(fb.applied) != 0 || len(fb.added) != 0 {
		t.Errorf("bad requests reached the backend: %+v %+v", fb.applied, fb.added)
	}
}

// repeatReader yields n copies of b without holding them in memory.
type repeatReader struct {
	b byte
	n int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), r.n)
	for i := range k {
		p[i] = r.b
	}
	r.n -= k
	return int(k), nil
}

func TestOversizeBodies(t *testing.T) {
	fb := &fakeBackend{}
	path := serve(t, fb, nil)
	body := func(prefix string, n int64, suffix string) io.Reader {
		return io.MultiReader(strings.NewReader(prefix), &repeatReader{b: 'a', n: n}, strings.NewReader(suffix))
	}

	code, eb := rawDo(t, path, "POST", PathBans, body(`{"prefix": "192.0.2.1", "reason": "`, MaxSmallBody, `"}`))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(eb.Error, "larger than 65536 bytes") {
		t.Errorf("oversize ban: %d %q", code, eb.Error)
	}
	code, eb = rawDo(t, path, "PUT", PathPolicy, body(`{"name": "big.yaml", "source": "`, MaxPolicyBody, `"}`))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(eb.Error, "larger than") {
		t.Errorf("oversize policy: %d %q", code, eb.Error)
	}
	if len(fb.applied) != 0 {
		t.Fatal("an oversize policy reached the backend")
	}
	// a large deny list that fits is accepted whole
	big := strings.Repeat("- 192.0.2.0/24\n", 2<<20) // 30 MiB
	c := NewClient(path)
	defer c.Close()
	if _, err := c.ApplyPolicy(context.Background(), &PolicyUpload{Name: "big.yaml", Source: big}); err != nil {
		t.Fatal(err)
	}
	if len(fb.applied) != 1 || len(fb.applied[0].Source) != len(big) {
		t.Errorf("the large policy did not arrive whole")
	}
}

func TestPolicyErrorsPassThrough(t *testing.T) {
	problems := []Problem{
		{File: "p.yaml", Line: 4, Field: "deny[0]", Message: `"10.0.0.300/8" is not a CIDR`},
		{File: "p.yaml", Line: 9, Field: "services[1].ports", Message: "port 70000 is outside 1-65535"},
		{File: "deny.txt", Line: 12, Message: "bad CIDR"},
	}
	fb := &fakeBackend{applyErr: fmt.Errorf("apply: %w", &PolicyError{Problems: problems})}
	path := serve(t, fb, nil)
	c := NewClient(path)
	defer c.Close()
	for _, call := range []func() error{
		func() error {
			_, err := c.ApplyPolicy(context.Background(), &PolicyUpload{Name: "p.yaml", Source: "x"})
			return err
		},
		func() error {
			_, err := c.DiffPolicy(context.Background(), &PolicyUpload{Name: "p.yaml", Source: "x"})
			return err
		},
	} {
		err := call()
		var pe *PolicyError
		if !errors.As(err, &pe) {
			t.Fatalf("err = %v (%T), want *PolicyError", err, err)
		}
		if len(pe.Problems) != len(problems) {
			t.Fatalf("got %d problems, want %d", len(pe.Problems), len(problems))
		}
		for i := range problems {
			if pe.Problems[i] != problems[i] {
				t.Errorf("problem %d = %+v, want %+v", i, pe.Problems[i], problems[i])
			}
		}
		msg := err.Error()
		for _, want := range []string{"3 errors", `p.yaml:4: deny[0]: "10.0.0.300/8" is not a CIDR`, "deny.txt:12: bad CIDR"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q lacks %q", msg, want)
			}
		}
	}
	code, _ := rawDo(t, path, "PUT", PathPolicy, strings.NewReader(`{"name": "p.yaml", "source": "x"}`))
	if code != http.StatusUnprocessableEntity {
		t.Errorf("status %d, want 422", code)
	}
}

func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "apiguard")
	path := filepath.Join(dir, "s.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: os.ModeDir | 0o700, path: os.ModeSocket | 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	// accept in the background so the probe of a live socket connects
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another apiguard daemon") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	// a daemon killed with -9 leaves its socket file behind
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	c := NewClient(path)
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "nothing listens on") {
		t.Errorf("client on a stale socket: %v", err)
	}
	ln2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen on a regular file: %v", err)
	}
}

func TestClientNotRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	_, err := NewClient(path).Status(context.Background())
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("err = %v, want ErrNotRunning", err)
	}
	want := "apiguard daemon is not running (no socket at " + path + ")"
	if err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "192.0.2.1", want: "192.0.2.1/32"},
		{in: " 192.0.2.1 ", want: "192.0.2.1/32"},
		{in: "192.0.2.77/24", want: "192.0.2.0/24"},
		{in: "2001:db8::1", want: "2001:db8::1/128"},
		{in: "2001:db8::1/64", want: "2001:db8::/64"},
		{in: "::ffff:192.0.2.1", want: "192.0.2.1/32"},
		{in: "::ffff:192.0.2.0/120", want: "192.0.2.0/24"},
		{in: "", err: "empty address"},
		{in: "example.com", err: "not an address or CIDR"},
		{in: "192.0.2.1/33", err: "not an address or CIDR"},
		{in: "fe80::1%eth0", err: "zone"},
	} {
		p, err := ParsePrefix(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid) {
				t.Errorf("ParsePrefix(%q) = %v, %v; want error containing %q", tc.in, p, err, tc.err)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

// peerHelperEnv makes the test binary act as a client of the socket it names
// (see TestMain), so a test can call the server from another uid.
const peerHelperEnv = "APIGUARD_CONTROL_TEST_PEER"

func TestMain(m *testing.M) {
	if path := os.Getenv(peerHelperEnv); path != "" {
		_, err := NewClient(path).Status(context.Background())
		fmt.Printf("uid=%d err=%v\n", os.Getuid(), err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestNonRootPeerRefused loosens the socket's modes (as a careless admin might)
// and calls it as nobody: the peer-credential check still refuses.
func TestNonRootPeerRefused(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	openUp(t, dir)
	path := serve(t, &fakeBackend{}, nil)
	openUp(t, filepath.Dir(path))
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	// nobody cannot run the binary from go's private build directory: copy it
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "peer.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), peerHelperEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	got := string(out)
	if !strings.Contains(got, "uid=65534") || !strings.Contains(got, "permission denied: only root may use the apiguard control socket (caller uid 65534)") {
		t.Errorf("helper output %q: want a refusal naming uid 65534", got)
	}
}

// openUp makes d and its parents below the temporary directory world-readable,
// so another uid can reach what is inside.
func openUp(t *testing.T, d string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir()) + "/"
	for ; strings.HasPrefix(d, tmp); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}
