package safefile

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// noHang runs f and fails the test if it has not returned within a generous
// bound: the property under test is that it returns at all.
func noHang(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s hung", what)
	}
}

func TestReadRefusesWhatIsNotARegularDataFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	toZero := filepath.Join(dir, "zero-link")
	if err := os.Symlink("/dev/zero", toZero); err != nil {
		t.Fatal(err)
	}
	toEnviron := filepath.Join(dir, "list.txt")
	if err := os.Symlink("/proc/self/environ", toEnviron); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want error
		msg  string
	}{
		{fifo, ErrNotRegular, "is a FIFO"},
		{"/dev/zero", ErrNotRegular, "is a character device"},
		{toZero, ErrNotRegular, "is a character device"}, // checked after the open: the link's target
		{dir, ErrNotRegular, "is a directory"},
		{"/proc/self/environ", ErrKernelFile, "is on procfs"},
		{toEnviron, ErrKernelFile, "is on procfs"},
		{"/proc/self/status", ErrKernelFile, "is on procfs"},
		{"/sys/kernel/mm/transparent_hugepage/enabled", ErrKernelFile, "is on sysfs"},
	} {
		if _, err := os.Lstat(tc.path); err != nil {
			t.Logf("%s: %v (skipped)", tc.path, err)
			continue
		}
		var err error
		noHang(t, "Read "+tc.path, func() { _, err = Read(tc.path, 1<<20) })
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.path+" "+tc.msg) {
			t.Errorf("Read(%s) = %v, want %v saying %q", tc.path, err, tc.want, tc.msg)
		}
	}
}

func TestReadLimit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "list.txt")
	if err := os.WriteFile(path, []byte(strings.Repeat("192.0.2.0/24\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := Read(path, 1300)
	if err != nil || len(data) != 1300 {
		t.Fatalf("at the limit: %d bytes, %v", len(data), err)
	}
	if _, err := Read(path, 1299); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "holds 1300 bytes, over the limit of 1299 bytes") {
		t.Errorf("over the limit: %v", err)
	}
	// a symlink to a regular file is followed
	link := filepath.Join(dir, "link")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if data, err := Read(link, 1<<20); err != nil || len(data) != 1300 {
		t.Errorf("through a symlink: %d bytes, %v", len(data), err)
	}
	if _, err := Read(filepath.Join(dir, "none"), 1<<20); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if s, err := ReadSecret(write("key", "s3cr3t-Key_1\n")); err != nil || s != "s3cr3t-Key_1" {
		t.Errorf("good key: %q, %v", s, err)
	}
	if s, err := ReadSecret(write("crlf", "abc\r\n")); err != nil || s != "abc" {
		t.Errorf("CRLF key: %q, %v", s, err)
	}
	const secret = "hunter2-the-password"
	for _, tc := range []struct{ name, content, want string }{
		{"empty", "\n", "is empty"},
		{"two", secret + "\nroot:x:0:0\n", "more than one line"},
		{"space", "user " + secret + "\n", "a space, a control character or a non-ASCII byte (at byte 5)"},
		{"nul", "A=" + secret + "\x00B=c", "(at byte 23)"},
		{"big", strings.Repeat(secret, 300), "over the limit of 4 KiB"},
	} {
		_, err := ReadSecret(write(tc.name, tc.content))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter") || strings.Contains(err.Error(), "root:") {
			t.Errorf("%s: the error quotes the file: %v", tc.name, err)
		}
	}
	if _, err := ReadSecret("/proc/self/environ"); !errors.Is(err, ErrKernelFile) {
		t.Errorf("environ as a secret: %v", err)
	}
}

// TestRefusedFilesAreNeverOpened: opening a device is an act of its own
// (/dev/watchdog starts a timer that reboots the host unless it is closed
// just so, a tape rewinds, a serial line raises DTR; a FIFO's open wakes a
// writer waiting for a reader), so what is refused must be refused before any
// open for reading. inotify sees every such open (IN_OPEN); the regular file
// read alongside shows that the watch works.
func TestRefusedFilesAreNeverOpened(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	toFIFO := filepath.Join(dir, "list.txt")
	if err := os.Symlink(fifo, toFIFO); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain.txt")
	if err := os.WriteFile(plain, []byte("192.0.2.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, dir, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, toFIFO} {
		if _, err := Read(p, 1<<20); !errors.Is(err, ErrNotRegular) {
			t.Errorf("Read(%s) = %v, want %v", p, err, ErrNotRegular)
		}
		if f, _, err := Open(p); !errors.Is(err, ErrNotRegular) {
			t.Errorf("Open(%s) = %v, want %v", p, err, ErrNotRegular)
			if f != nil {
				f.Close()
			}
		}
	}
	if _, err := Read(plain, 1<<20); err != nil {
		t.Fatal(err)
	}
	// fsnotify queues an event as the open happens: all are here by now
	var opened []string
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(in, buf)
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			opened = append(opened, strings.TrimRight(string(name), "\x00"))
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
	if !slices.Equal(opened, []string{"plain.txt"}) {
		t.Errorf("opened %q, want only plain.txt", opened)
	}
}
