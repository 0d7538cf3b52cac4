package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lab is two network namespaces joined by a veth pair: the guarded side runs
// the daemon and a UDP listener, the peer side sends.
type lab struct {
	guarded, peer   string // namespace names
	guardIf, peerIf string // veth ends
	guardIP, peerIP net.IP
}

const (
	labGuardIP = "198.18.0.1"
	labPeerIP  = "198.18.0.2"
	labPort    = 9000
)

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// newLab creates the namespaces and veth pair, removed when the test ends.
func newLab(t *testing.T) *lab {
	t.Helper()
	sfx := randomSuffix(t)
	l := &lab{
		guarded: fmt.Sprintf("apiguard-e2e-%d-%s-g", os.Getpid(), sfx),
		peer:    fmt.Sprintf("apiguard-e2e-%d-%s-p", os.Getpid(), sfx),
		guardIf: "agg" + sfx, // interface names have at most 15 bytes
		peerIf:  "agp" + sfx,
		guardIP: net.ParseIP(labGuardIP).To4(),
		peerIP:  net.ParseIP(labPeerIP).To4(),
	}
	for _, ns := range []string{l.guarded, l.peer} {
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			// deleting a namespace deletes the veth end inside it
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("remove namespace %s: %v\n%s", ns, err, out)
			}
		})
	}
	mustRun(t, "ip", "link", "add", l.guardIf, "netns", l.guarded, "type", "veth", "peer", "name", l.peerIf, "netns", l.peer)
	mustRun(t, "ip", "-n", l.guarded, "addr", "add", labGuardIP+"/24", "dev", l.guardIf)
	mustRun(t, "ip", "-n", l.peer, "addr", "add", labPeerIP+"/24", "dev", l.peerIf)
	for _, x := range [][2]string{{l.guarded, l.guardIf}, {l.peer, l.peerIf}, {l.guarded, "lo"}, {l.peer, "lo"}} {
		mustRun(t, "ip", "-n", x[0], "link", "set", x[1], "up")
	}
	return l
}

// inNetns runs fn on an OS thread that has entered namespace ns. Sockets fn
// opens stay in ns for their whole life, whatever thread later uses them.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// the thread is never unlocked: if switching back failed, it dies with
		// this goroutine instead of running other code in the wrong namespace
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// receiver counts the UDP datagrams that reach the guarded side.
type receiver struct {
	conn *net.UDPConn
	n    atomic.Int64
}

func (l *lab) listen(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	err := inNetns(l.guarded, func() error {
		var err error
		r.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: l.guardIP, Port: labPort})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := r.conn.ReadFromUDP(buf); err != nil {
				return // closed at cleanup
			}
			r.n.Add(1)
		}
	}()
	t.Cleanup(func() {
		r.conn.Close()
		<-done
	})
	return r
}

// sender sends UDP datagrams from the peer side.
type sender struct {
	conn *net.UDPConn
}

func (l *lab) sender(t *testing.T) *sender {
	t.Helper()
	s := &sender{}
	err := inNetns(l.peer, func() error {
		var err error
		s.conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: l.peerIP}, &net.UDPAddr{IP: l.guardIP, Port: labPort})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	return s
}

func (s *sender) send(t *testing.T, n int) {
	t.Helper()
	payload := bytes.Repeat([]byte{'a'}, 64)
	for range n {
		if _, err := s.conn.Write(payload); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

// waitFor polls cond every 20ms for at most limit; it reports whether cond held.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
