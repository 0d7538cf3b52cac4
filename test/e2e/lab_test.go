package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net"
	"sync/atomic"
	"testing"

	"github.com/apiguard/apiguard/test/netns"
)

// pair is two network namespaces joined by a veth pair: the guarded side runs
// the daemon and a UDP listener, the peer side sends. (test/lab is the full
// lab, for the scenarios with clients and attackers.)
type pair struct {
	guarded, peer     *netns.Namespace
	guardEnd, peerEnd *netns.Link
}

const labPort = 9000

func randomSuffix(t testing.TB) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newPair creates the namespaces and veth pair, removed when the test ends.
func newPair(t testing.TB) *pair {
	t.Helper()
	l := &pair{}
	for _, ns := range []**netns.Namespace{&l.guarded, &l.peer} {
		n, err := netns.New("age2e")
		if err != nil {
			t.Fatal(err)
		}
		*ns = n
		t.Cleanup(func() {
			// deleting a namespace deletes the veth end inside it
			if err := n.Close(); err != nil {
				t.Errorf("remove namespace %s: %v", n.Name, err)
			}
		})
	}
	var err error
	l.guardEnd, l.peerEnd, err = netns.Veth(l.guarded, l.peer, 61)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// receiver counts the UDP datagrams that reach the guarded side.
type receiver struct {
	conn *net.UDPConn
	n    atomic.Int64
}

func (l *pair) listen(t testing.TB) *receiver {
	t.Helper()
	r := &receiver{}
	err := l.guarded.Do(func() error {
		var err error
		r.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: l.guardEnd.Addr4.AsSlice(), Port: labPort})
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

func (l *pair) sender(t testing.TB) *sender {
	t.Helper()
	s := &sender{}
	err := l.peer.Do(func() error {
		var err error
		s.conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: l.peerEnd.Addr4.AsSlice()}, &net.UDPAddr{IP: l.guardEnd.Addr4.AsSlice(), Port: labPort})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	return s
}

func (s *sender) send(t testing.TB, n int) {
	t.Helper()
	payload := bytes.Repeat([]byte{'a'}, 64)
	for range n {
		if _, err := s.conn.Write(payload); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}
