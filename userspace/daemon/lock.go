package daemon

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// LockPinDir takes an exclusive lock on the pin directory for the life of a
// daemon, so that two daemons never drive the same maps. It fails at once if
// another process holds it.
func LockPinDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s to lock it: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another apiguard daemon is using %s", dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	// closing the file releases the lock
	return func() { f.Close() }, nil
}

// PinDirInUse reports whether a daemon holds the lock on dir.
func PinDirInUse(dir string) (bool, error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open %s: %w", dir, err)
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("lock %s: %w", dir, err)
	}
	return false, nil // the deferred Close releases the lock we just took
}
