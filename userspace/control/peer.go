package control

import (
	"context"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Peer is the process at the other end of a control connection, as the kernel
// vouches for it (SO_PEERCRED: the credentials it had when it connected).
type Peer struct {
	PID int32
	UID uint32
	GID uint32
}

type peerKey struct{}

// peerResult is stored in each connection's context by the ConnContext hook.
type peerResult struct {
	peer Peer
	err  error
}

// checkPeer decides who may use the socket. The socket file is 0600 root in a
// 0700 directory already; this holds even if someone loosens those modes.
func checkPeer(uid uint32) error {
	if uid != 0 {
		return fmt.Errorf("permission denied: only root may use the apiguard control socket (caller uid %d)", uid)
	}
	return nil
}

// peerContext is the server's ConnContext hook: it reads the peer's credentials
// once per connection, before any request on it is handled.
func peerContext(ctx context.Context, c net.Conn) context.Context {
	p, err := peerCred(c)
	return context.WithValue(ctx, peerKey{}, peerResult{peer: p, err: err})
}

func peerFrom(ctx context.Context) (Peer, error) {
	r, ok := ctx.Value(peerKey{}).(peerResult)
	if !ok {
		return Peer{}, errors.New("connection has no peer credentials")
	}
	return r.peer, r.err
}

func peerCred(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("connection is %T, not a unix socket: cannot identify the caller", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", credErr)
	}
	return Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}
