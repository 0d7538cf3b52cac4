package lab

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/policy"
)

func TestMain(m *testing.M) {
	RunRoleIfAsked() // the server and attack roles run as this test binary
	os.Exit(m.Run())
}

// The SYN rewritten in place is the packet test/packet builds for the same
// fields, checksums included.
func TestSYNRewrite(t *testing.T) {
	for _, tc := range []struct{ tmplSrc, src, dst string }{
		{"10.3.0.2", "203.0.113.77", "10.1.0.2"},
		{"fd00:3::2", "2001:db8:aa::1234", "fd00:1::2"},
	} {
		s := newSYN(netip.MustParseAddr(tc.tmplSrc), netip.MustParseAddr(tc.dst), 80)
		s.set(netip.MustParseAddr(tc.src), 51234, 8080, 1)
		want := packet.Build(packet.Spec{Src: netip.MustParseAddr(tc.src), Dst: netip.MustParseAddr(tc.dst),
			Proto: packet.TCP, SrcPort: 51234, DstPort: 8080, TCPFlags: packet.SYN})[14:]
		if string(s.b) != string(want) {
			t.Errorf("%s: rewritten SYN\n% x\nwant\n% x", tc.src, s.b, want)
		}
	}
}

func TestRandomAddr(t *testing.T) {
	rng := newTestRand()
	all4 := netip.MustParsePrefix("0.0.0.0/0")
	for range 10000 {
		a := randomAddr(rng, all4, false)
		if b := a.As4()[0]; b == 0 || b == 10 || b == 127 || b >= 224 {
			t.Fatalf("random IPv4 source %s is not ordinary unicast", a)
		}
	}
	for _, p := range []string{"100.64.0.0/10", "198.51.100.128/25", "2001:db8:40::/42", "2000::/3"} {
		pfx := netip.MustParsePrefix(p)
		seen := map[netip.Addr]bool{}
		for range 1000 {
			a := randomAddr(rng, pfx, pfx.Addr().Is6())
			if !pfx.Contains(a) {
				t.Fatalf("%s is outside %s", a, pfx)
			}
			seen[a] = true
		}
		if len(seen) < 100 {
			t.Errorf("%s: only %d distinct sources in 1000 draws", p, len(seen))
		}
	}
}

func TestClientStats(t *testing.T) {
	c := &Client{cfg: ClientConfig{Timeout: time.Second}}
	t0 := time.Unix(1000, 0)
	for i := range 98 {
		c.results = append(c.results, Result{Done: t0.Add(time.Duration(i) * time.Millisecond), Latency: time.Duration(i+1) * time.Millisecond, OK: true})
	}
	c.results = append(c.results,
		Result{Done: t0.Add(500 * time.Millisecond), Latency: 300 * time.Millisecond, Err: "timeout"},
		Result{Done: t0.Add(600 * time.Millisecond), Latency: 2 * time.Millisecond, Err: "connection reset"},
		Result{Done: t0.Add(2 * time.Second), Latency: time.Millisecond, OK: true}, // outside the window
	)
	st := c.Stats(t0, t0.Add(time.Second))
	if st.Requests != 100 || st.OK != 98 || st.Errors["timeout"] != 1 || st.Errors["connection reset"] != 1 {
		t.Fatalf("stats: %+v", st)
	}
	if st.SuccessRate() != 0.98 {
		t.Errorf("success rate %v", st.SuccessRate())
	}
	// failures count at the timeout: the two slowest of 100 are 1s
	if st.P50 != 50*time.Millisecond || st.P99 != time.Second {
		t.Errorf("p50 %v, p99 %v; want 50ms and 1s", st.P50, st.P99)
	}
	// By start time: the 98 successes were all sent 1ms before t0, the
	// timeout at 200ms, the reset at 598ms.
	if st := c.StatsStarted(t0.Add(-10*time.Millisecond), t0.Add(300*time.Millisecond)); st.Requests != 99 || st.OK != 98 || st.Errors["timeout"] != 1 {
		t.Errorf("by start time: %+v", st)
	}
	if empty := c.Stats(t0.Add(time.Hour), t0.Add(2*time.Hour)); empty.Requests != 0 || empty.SuccessRate() != 1 {
		t.Errorf("empty window: %+v", empty)
	}
}

func TestMonitorPolicy(t *testing.T) {
	src := "spec:\n  mode: enforce   # the default\n  services:\n    - name: a\n      mode: enforce\n"
	got, err := MonitorPolicy(src)
	if err != nil {
		t.Fatal(err)
	}
	if want := "spec:\n  mode: monitor\n  services:\n    - name: a\n      mode: enforce\n"; got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, bad := range []string{"spec:\n  services: []\n", "spec:\n  mode: enforce\n  mode: enforce\n"} {
		if _, err := MonitorPolicy(bad); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
	shipped, err := os.ReadFile("../../policies/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := MonitorPolicy(string(shipped)); err != nil {
		t.Errorf("the shipped default policy: %v", err)
	}
}

func TestSynProxyPolicy(t *testing.T) {
	src := "spec:\n  services:\n    - name: http   # plain\n      ports: [80]\n    - name: https\n      ports: [443]\n"
	got, err := SynProxyPolicy(src, "http", "auto")
	if err != nil {
		t.Fatal(err)
	}
	if want := "spec:\n  services:\n    - name: http   # plain\n      synProxy: auto\n      ports: [80]\n    - name: https\n      ports: [443]\n"; got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, bad := range []string{"spec:\n  services: []\n", got} {
		if _, err := SynProxyPolicy(bad, "http", "auto"); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
	shipped, err := os.ReadFile("../../policies/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := SynProxyPolicy(string(shipped), "http", "auto")
	if err != nil {
		t.Fatalf("the shipped default policy: %v", err)
	}
	p, err := policy.Parse("default.yaml", []byte(out), nil)
	if err != nil {
		t.Fatalf("the shipped policy with synProxy: %v", err)
	}
	for _, s := range p.Spec.Services {
		if want := map[bool]policy.SynProxyMode{true: policy.SynProxyAuto, false: policy.SynProxyOff}[s.Name == "http"]; s.SynProxy != want {
			t.Errorf("service %s: synProxy %s, want %s", s.Name, s.SynProxy, want)
		}
	}
}

// TestLab brings a lab up, checks that the API answers a client over IPv4
// and IPv6 through the router, that an attack sends what it reports to the
// server, and that Close removes every namespace, process and file.
func TestLab(t *testing.T) {
	testenv.RequireRoot(t)
	l, err := New(Config{Attackers: 1})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			l.Close()
		}
	})
	names := l.Namespaces()
	for _, n := range names {
		if !staleNS.MatchString(n) {
			t.Errorf("namespace %s does not carry the lab's pid (CleanStale would miss it)", n)
		}
	}
	srv, err := l.StartServer(ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []netip.Addr{l.Server.Addr4, l.Server.Addr6} {
		for _, port := range []int{80, 8080} {
			c, err := l.StartClient(ClientConfig{Target: target, Port: port, Rate: 100})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			time.Sleep(time.Second)
			c.Stop()
			st := c.Stats(start, time.Now().Add(time.Second))
			t.Logf("%s port %d: %s", target, port, st)
			if st.Requests < 50 || st.SuccessRate() != 1 {
				t.Errorf("%s port %d: %s", target, port, st)
			}
		}
	}
	if r := srv.Last(); r.Requests < 200 || r.Logins < 20 {
		t.Errorf("the server reports %+v", r)
	}

	sink, err := l.ListenUDP(9000)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := l.RunAttack(0, Attack{Kind: UDPFlood, Target: l.Server.Addr6, Port: 9000, Count: 5000, Rate: 50000, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !WaitFor(2*time.Second, func() bool { return sink.Received() == 5000 }) || rep.Sent != 5000 {
		t.Errorf("the attack reported %d sent (of a count of 5000), the server received %d", rep.Sent, sink.Received())
	}

	procs := []*Proc{srv.Proc}
	dir := l.Dir
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := l.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s is left", n)
		}
	}
	for _, p := range procs {
		if !p.Exited() {
			t.Errorf("%s still runs", p.Name)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab directory %s: %v", dir, err)
	}
}

func newTestRand() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }
