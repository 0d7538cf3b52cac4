package e2e

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

// exitOf runs the CLI against the env's daemon and returns its output and
// exit code.
func (e *env) exitOf(args ...string) (string, int) {
	e.t.Helper()
	out, stderr, err := e.cli(args...)
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out + stderr, ee.ExitCode()
	case err != nil:
		e.t.Fatalf("apiguard %v: %v", args, err)
	}
	return out + stderr, 0
}

// TestCLIHabits runs the CLI's habits for scripts against a real daemon:
// the exit codes (usage 2, no daemon 3, invalid 4, refused 5), policy diff
// --exit-code, and a ban list imported in one go (a never-ban address in it
// refused and named, the others enforced in the kernel) then flushed by
// source.
func TestCLIHabits(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEnv(t)
	const n = 20
	peer := e.pair.peerEnd.Addr4.String()
	self := e.pair.guardEnd.Addr4.String()
	daemonPolicy := e.write("daemon.yaml", basePolicy)
	slower := e.write("slower.yaml", strings.Replace(basePolicy, "ports: [9000]\n",
		"ports: [9000]\n      limits:\n        client:\n          packets: {rate: 30/m}\n", 1))
	badPath := e.write("bad.yaml", badPolicy)
	e.startDaemon(daemonPolicy)
	e.expectPass(n)

	// exit codes
	if out, code := e.exitOf("polcy", "apply", daemonPolicy); code != 2 {
		t.Errorf("an unknown subcommand exits %d, want 2:\n%s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := exec.CommandContext(ctx, e.d.Config.Bin, "status", "--socket", filepath.Join(e.dir, "nobody.sock")).Run()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("status with no daemon: %v, want exit code 3", err)
	}
	if out, code := e.exitOf("policy", "apply", badPath); code != 4 || !strings.Contains(out, badPath+":5: spec.deny[0]") {
		t.Errorf("apply of an invalid policy exits %d, want 4:\n%s", code, out)
	}
	if st := e.status(); st.Policy.Generation != 1 {
		t.Errorf("generation %d after a refused policy, want 1", st.Policy.Generation)
	}

	// policy diff --exit-code: 0 for the policy in force, 1 for another
	if out, code := e.exitOf("policy", "diff", "--exit-code", daemonPolicy); code != 0 {
		t.Errorf("diff --exit-code of the policy in force exits %d:\n%s", code, out)
	}
	if out, code := e.exitOf("policy", "diff", "--exit-code", slower); code != 1 || !strings.Contains(out, "30/m") {
		t.Errorf("diff --exit-code of a changed policy exits %d, want 1 and the change:\n%s", code, out)
	}

	// ban import: one bad-for-the-host line is refused and named, the rest
	// are banned with their own TTLs and reasons
	list := e.write("bans.txt", "# from the incident\n"+peer+"  2h  seen probing\n198.51.100.0/24\n2001:db8::/48 - ipv6 too\n"+self+"\n")
	out, code := e.exitOf("ban", "import", list, "--ttl", "1h", "--reason", "import")
	if code != 5 || !strings.Contains(out, "banned 3 of 4 from "+list) || !strings.Contains(out, list+":5: "+self+"/32: not banned") {
		t.Fatalf("ban import exits %d, want 5 with the host's own address refused:\n%s", code, out)
	}
	e.expectDropped("ban", n)
	var bans []control.Ban
	e.jsonCLI(&bans, "ban", "ls")
	got := map[string]string{}
	for _, b := range bans {
		got[b.Prefix] = b.Source + " " + b.Reason
	}
	if len(got) != 3 || got[peer+"/32"] != "manual seen probing" || got["198.51.100.0/24"] != "manual import" ||
		got["2001:db8::/48"] != "manual ipv6 too" {
		t.Errorf("ban ls after the import: %v", got)
	}

	// ban flush by source: the detector made none, the import's go
	if out := e.mustCLI("ban", "flush", "--source", "detector"); !strings.Contains(out, "lifted 0 bans") {
		t.Errorf("flush of the detector's bans: %s", out)
	}
	if out := e.mustCLI("ban", "flush", "--source", "manual"); !strings.Contains(out, "lifted 3 bans") {
		t.Errorf("flush of the manual bans: %s", out)
	}
	e.jsonCLI(&bans, "ban", "ls")
	if len(bans) != 0 {
		t.Errorf("bans after the flush: %+v", bans)
	}
	e.expectPass(n)
}
