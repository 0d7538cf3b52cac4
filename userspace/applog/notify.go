package applog

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// watcher wakes the follower when anything changes in the log's directory
// (a write, a rename, a new file), so a line is read when it is written
// rather than at the next poll. Polling stays as the fallback: a filesystem
// without inotify, or a host out of inotify watches, only loses the speed.
type watcher struct {
	file *os.File
	wake chan struct{}
	done chan struct{}
}

// watchDir starts watching dir; the error says why it could not.
func watchDir(dir string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	const mask = unix.IN_MODIFY | unix.IN_CREATE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE |
		unix.IN_CLOSE_WRITE | unix.IN_ATTRIB
	if _, err := unix.InotifyAddWatch(fd, filepath.Clean(dir), mask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	// a non-blocking descriptor goes to Go's poller: Read parks the
	// goroutine, and Close wakes it
	w := &watcher{file: os.NewFile(uintptr(fd), "inotify"), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.read()
	return w, nil
}

func (w *watcher) read() {
	defer close(w.done)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		if _, err := w.file.Read(buf); err != nil {
			// closed, or inotify failed: either way the follower's
			// polling goes on without us
			return
		}
		// the events themselves do not matter: the follower checks
		// everything it cares about on each pass; a pending wake-up
		// covers any number of events
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (w *watcher) close() {
	w.file.Close()
	<-w.done
}
