package e2e

import (
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

const connPolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: e2e-conns}
spec:
  services:
    - name: api
      ports: [8443]
      maxConnections:
        client: {established: 5}
    - name: admin
      ports: [8444]
      allowFrom: [198.18.0.128/25]
`

// tcpHold accepts connections on the guarded side and holds them until the
// client closes; then it closes its side too.
func (l *pair) tcpHold(t *testing.T, port int) {
	t.Helper()
	var ln net.Listener
	err := l.guarded.Do(func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", l.guardEnd.Addr4, port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// dialPeer opens n connections at once from the peer side; it returns those
// that connected within timeout.
func (l *pair) dialPeer(t *testing.T, port, n int, timeout time.Duration) []net.Conn {
	t.Helper()
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c net.Conn
			if err := l.peer.Do(func() (err error) {
				c, err = net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", l.guardEnd.Addr4, port), timeout)
				return err
			}); err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// egressPrograms counts the BPF programs on the guarded interface's TCX egress.
func (l *pair) egressPrograms(t *testing.T) int {
	t.Helper()
	n := 0
	err := l.guarded.Do(func() error {
		dev, err := net.InterfaceByName(l.guardEnd.Name)
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: dev.Index, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return err
		}
		n = len(res.Programs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDaemonConnectionCaps: the daemon enforces a service's connection cap and
// source ACL on real TCP, reports both in status, and detach removes the
// egress hook with the rest.
func TestDaemonConnectionCaps(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEnv(t)
	e.pair.tcpHold(t, 8443)
	e.pair.tcpHold(t, 8444)
	d := e.startDaemon(e.write("conns.yaml", connPolicy))
	if n := e.pair.egressPrograms(t); n != 1 {
		t.Fatalf("%d programs on TCX egress, want apiguard's", n)
	}

	conns := e.pair.dialPeer(t, 8443, 8, 1500*time.Millisecond)
	if len(conns) != 5 {
		t.Fatalf("8 dials under a cap of 5: %d connected", len(conns))
	}
	st := e.status()
	if st.Datapath.ConnsEstablished != 5 || st.Datapath.FlowsNew < 5 {
		t.Errorf("status datapath %+v, want 5 established connections", st.Datapath)
	}
	flows := -1
	for _, m := range st.Maps {
		if m.Name == "flows" {
			flows = m.Entries
		}
	}
	if flows < 5 {
		t.Errorf("status shows %d flow entries, want at least 5 (maps %+v)", flows, st.Maps)
	}
	if n := e.dropped("conn_client_established"); n < 3 {
		t.Errorf("%d SYNs counted over the cap, want at least 3", n)
	}
	text := e.mustCLI("status")
	if !regexp.MustCompile(`connections:\s+5 established`).MatchString(text) || !strings.Contains(text, "flows ") {
		t.Errorf("status text:\n%s", text)
	}

	if got := e.pair.dialPeer(t, 8444, 1, time.Second); len(got) != 0 {
		t.Fatal("the admin service answered a source outside its allowFrom")
	}
	if n := e.dropped("acl"); n < 1 {
		t.Errorf("acl drops %d", n)
	}

	// closing frees slots at once
	conns[0].Close()
	conns[1].Close()
	if !lab.WaitFor(3*time.Second, func() bool { return e.status().Datapath.ConnsEstablished == 3 }) {
		t.Fatalf("after two closes status says %d established", e.status().Datapath.ConnsEstablished)
	}
	if got := e.pair.dialPeer(t, 8443, 2, time.Second); len(got) != 2 {
		t.Fatalf("after two closes %d of 2 dials connected", len(got))
	}

	e.mustCLI("ban", "ls") // the daemon still answers
	out := e.mustCLI("policy", "diff", e.write("open.yaml", strings.Replace(connPolicy, "established: 5", "established: 50", 1)))
	if !strings.Contains(out, "~ service api maxConnections client: established 5 -> established 50") {
		t.Errorf("policy diff:\n%s", out)
	}

	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	if n := e.pair.egressPrograms(t); n != 1 {
		t.Fatalf("%d egress programs after the daemon stopped, want the pinned one", n)
	}
	e.mustCLI("detach", "--bpffs", e.pinDir)
	if n := e.pair.egressPrograms(t); n != 0 {
		t.Fatalf("%d egress programs after detach", n)
	}
}
