package loader

import (
	"errors"
	"testing"
)

// TestCheckAttachment: an attachment checks out while its hook runs our
// program, and is reported gone after a detach behind the daemon's back and
// after its interface is deleted.
func TestCheckAttachment(t *testing.T) {
	for _, mode := range []AttachMode{AttachNative, AttachTCX, AttachTC} {
		t.Run(string(mode), func(t *testing.T) {
			lab := newVethLab(t)
			dir := tempPinDir(t)
			d := newDatapath(t, Options{PinDir: dir})
			var att Attachment
			check := func() error {
				var err error
				if derr := lab.b.Do(func() error { err = d.CheckAttachment(att); return nil }); derr != nil {
					t.Fatal(derr)
				}
				return err
			}
			if err := lab.b.Do(func() (err error) { att, err = d.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			if err := check(); err != nil {
				t.Fatalf("right after attaching: %v", err)
			}
			if err := lab.b.Do(func() error { return Detach(dir) }); err != nil {
				t.Fatal(err)
			}
			if err := check(); !errors.Is(err, ErrNotAttached) {
				t.Errorf("after a detach: %v, want ErrNotAttached", err)
			}
			// attached again, then the interface goes
			if err := lab.b.Do(func() (err error) { att, err = d.Attach(lab.lb.Name, mode); return err }); err != nil {
				t.Fatal(err)
			}
			if err := check(); err != nil {
				t.Fatalf("after attaching again: %v", err)
			}
			if err := lab.b.IP("link", "del", lab.lb.Name); err != nil {
				t.Fatal(err)
			}
			if err := check(); !errors.Is(err, ErrNotAttached) {
				t.Errorf("after the interface went: %v, want ErrNotAttached", err)
			}
			if err := lab.b.Do(func() error { return Detach(dir) }); err != nil {
				t.Logf("clean up: %v", err)
			}
		})
	}
}
