package session

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/testenv"
	"golang.org/x/sys/unix"
)

func TestHexAddrPort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		addr string
		port uint16
	}{
		{"0100007F:0016", "127.0.0.1", 22},
		{"0A02000A:C350", "10.0.2.10", 50000},
		{"B80D0120000000000000000001000000:01BB", "2001:db8::1", 443},
		{"0000000000000000FFFF00000A02000A:0016", "::ffff:10.0.2.10", 22},
	} {
		a, p, ok := hexAddrPort(tc.in)
		if !ok || a != netip.MustParseAddr(tc.addr) || p != tc.port {
			t.Errorf("hexAddrPort(%q) = %v %d %v, want %s %d", tc.in, a, p, ok, tc.addr, tc.port)
		}
	}
	for _, bad := range []string{"", "0100007F", "zz00007F:0016", "0100007F:zz", "01007F:0016"} {
		if _, _, ok := hexAddrPort(bad); ok {
			t.Errorf("hexAddrPort(%q) accepted", bad)
		}
	}
}

func TestSSHConnection(t *testing.T) {
	fs, err := Find([]string{"HOME=/root", "SSH_CONNECTION=203.0.113.5 51234 192.0.2.10 22"}, t.TempDir(), 1)
	if err != nil || len(fs) != 1 || fs[0].Src != netip.MustParseAddr("203.0.113.5") || fs[0].LocalPort != 22 {
		t.Fatalf("Find = %+v, %v", fs, err)
	}
	fs, err = Find([]string{"SSH_CONNECTION=fe80::1%eth0 51234 fe80::2%eth0 22"}, t.TempDir(), 1)
	if err != nil || len(fs) != 1 || fs[0].Src != netip.MustParseAddr("fe80::1") {
		t.Errorf("a link-local session: %+v, %v; want fe80::1 without its zone", fs, err)
	}
	for _, bad := range []string{"", "1.2.3.4 5 6.7.8.9", "nobody 1 2.3.4.5 22", "127.0.0.1 5 127.0.0.1 22", "1.2.3.4 5 6.7.8.9 0", "1.2.3.4 5 6.7.8.9 70000"} {
		if fs, _ := Find([]string{"SSH_CONNECTION=" + bad}, t.TempDir(), 1); len(fs) != 0 {
			t.Errorf("SSH_CONNECTION=%q: %+v", bad, fs)
		}
	}
}

// TestInboundOfAncestor: this test process listens and accepts a TCP
// connection on a non-loopback address it owns (the connection from itself
// is not loopback traffic by address); Find, asked for a child of this
// process, walks up to it and reports the accepted connection's source and
// local port, and not the outgoing end. The addresses are those of a veth
// pair in a namespace the test creates, so the test does not depend on how
// the machine is connected.
func TestInboundOfAncestor(t *testing.T) {
	testenv.RequireRoot(t)
	ns, err := netns.New("agses")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("remove namespace: %v", err)
		}
	})
	// both ends in the one namespace: the test owns the client's address too
	client, server, err := netns.Veth(ns, ns, 1)
	if err != nil {
		t.Fatal(err)
	}

	// Sockets and the look-up happen on the thread that is in the namespace:
	// /proc/PID/net shows the main thread's namespace, /proc/PID/task/TID/net
	// this thread's, and the fd table is the process's either way.
	err = ns.Do(func() error {
		ln, err := net.Listen("tcp4", net.JoinHostPort(server.Addr4.String(), "0"))
		if err != nil {
			return err
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				accepted <- c
			}
			close(accepted)
		}()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: client.Addr4.AsSlice()}, Timeout: 5 * time.Second}
		out, err := d.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		defer out.Close()
		in := <-accepted
		if in == nil {
			return errors.New("accept failed")
		}
		defer in.Close()
		port := uint16(ln.Addr().(*net.TCPAddr).Port)

		// a fake /proc whose process 4242 is a child of this one, which /proc
		// shows as it is from this thread
		fake := t.TempDir()
		if err := os.MkdirAll(filepath.Join(fake, "4242"), 0o755); err != nil {
			return err
		}
		stat := "4242 (apiguard) S " + strconv.Itoa(os.Getpid()) + " 1 1 0\n"
		if err := os.WriteFile(filepath.Join(fake, "4242", "stat"), []byte(stat), 0o644); err != nil {
			return err
		}
		self := fmt.Sprintf("/proc/%d/task/%d", os.Getpid(), unix.Gettid())
		if err := os.Symlink(self, filepath.Join(fake, strconv.Itoa(os.Getpid()))); err != nil {
			return err
		}
		fs, err := Find(nil, fake, 4242)
		if err != nil {
			return err
		}
		want := Flow{Src: client.Addr4, LocalPort: port}
		if !slices.ContainsFunc(fs, func(f Flow) bool { return f.Src == want.Src && f.LocalPort == want.LocalPort }) {
			t.Errorf("Find = %+v, want a flow from %v to port %d", fs, want.Src, port)
		}
		for _, f := range fs {
			if f.LocalPort != port {
				t.Errorf("an outgoing connection reported: %+v", f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
