package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

// TestBanBookSurvivesKill9: the daemon is killed with SIGKILL in the middle
// of a storm of `apiguard ban add` from several shells. Every ban the CLI
// acknowledged is in the ban book: with the kernel's maps gone as after a
// reboot, the next daemon restores each of them with its reason, from the
// journal alone. A torn record at the journal's end (a power cut in a write)
// costs that record, never the start.
func TestBanBookSurvivesKill9(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEnv(t)
	policy := e.write("base.yaml", basePolicy)
	d := e.startDaemon(policy)

	const workers, perWorker = 4, 400
	var mu sync.Mutex
	acked := map[string]string{} // prefix -> reason
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				select {
				case <-stop:
					return
				default:
				}
				prefix := fmt.Sprintf("198.18.%d.%d/32", w, i)
				reason := fmt.Sprintf("storm %d-%d", w, i)
				if _, _, err := e.cli("ban", "add", prefix, "--ttl", "1h", "--reason", reason); err != nil {
					return // the daemon is gone
				}
				mu.Lock()
				acked[prefix] = reason
				mu.Unlock()
			}
		})
	}
	// kill it while the shells are still banning
	if !lab.WaitFor(60*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 60 }) {
		t.Fatalf("only %d bans acknowledged in 60s", len(acked))
	}
	d.signal(t, syscall.SIGKILL)
	if err := d.wait(t); err == nil {
		t.Fatal("the daemon exited cleanly after SIGKILL")
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n >= workers*perWorker {
		t.Fatal("every ban was acknowledged before the kill: the kill did not land in the storm")
	}

	// a power cut in the middle of a write would leave half a record
	journalPath := filepath.Join(e.dir, "state", "bans.journal")
	f, err := os.OpenFile(journalPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`1a2b3c4d {"op":"ban","prefix":"203.0.113.66/32","rea`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// the maps are lost, as after a reboot: only the book knows the bans
	if err := loader.Detach(e.pinDir); err != nil {
		t.Fatal(err)
	}
	d = e.startDaemon(policy)
	d.waitLog(t, "torn last record was dropped")
	d.waitLog(t, "restored bans from the state directory")
	var bans []control.Ban
	e.jsonCLI(&bans, "ban", "ls")
	got := map[string]string{}
	for _, b := range bans {
		got[b.Prefix] = b.Reason
	}
	lost := 0
	for p, reason := range acked {
		if got[p] != reason {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged ban %s (%q) came back as %q", p, reason, got[p])
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged bans lost", lost, n)
	}
	if _, ok := got["203.0.113.66/32"]; ok {
		t.Fatal("the torn record was restored")
	}
	t.Logf("%d bans acknowledged before SIGKILL, all restored from the journal (%d restored in all: bans recorded but not yet acknowledged count too)", n, len(bans))
}
