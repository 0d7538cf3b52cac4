package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
	"golang.org/x/sys/unix"
)

const unitFile = "../../deploy/systemd/apiguard.service"

// unit reads the shipped systemd unit's Service settings: key to values, in
// order (a key may be set more than once).
func unit(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			kv[k] = append(kv[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kv
}

// unitWrap is a command line (prlimit, setpriv) that gives the daemon what
// the unit gives it: its RLIMIT_MEMLOCK, exactly its capability bounding set
// (uid 0 then holds those and no others), its supplementary groups, and no
// new privileges.
func unitWrap(t *testing.T) (wrap []string, caps uint64) {
	t.Helper()
	testenv.RequireTool(t, "setpriv")
	testenv.RequireTool(t, "prlimit")
	u := unit(t)
	if len(u["CapabilityBoundingSet"]) != 1 || len(u["SupplementaryGroups"]) != 1 || u["NoNewPrivileges"][0] != "yes" ||
		len(u["LimitMEMLOCK"]) != 1 || u["LimitMEMLOCK"][0] != "infinity" {
		t.Fatalf("the unit's capabilities, groups, NoNewPrivileges or LimitMEMLOCK changed shape: %v", u)
	}
	bounding := "-all"
	for _, c := range strings.Fields(u["CapabilityBoundingSet"][0]) {
		n, ok := capNumbers[c]
		if !ok {
			t.Fatalf("capability %s: unknown to this test", c)
		}
		caps |= 1 << n
		bounding += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	groups := strings.Join(strings.Fields(u["SupplementaryGroups"][0]), ",")
	wrap = []string{"setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "--groups", groups, "--no-new-privs", "--"}
	// LimitMEMLOCK=infinity: where this test may raise the limit at all (a
	// container without CAP_SYS_RESOURCE may not; from Linux 5.11 on, BPF is
	// not charged to it)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max == unix.RLIM_INFINITY || hexField(t, procStatus(t, os.Getpid()), "CapEff")&(1<<unix.CAP_SYS_RESOURCE) != 0 {
		wrap = append([]string{"prlimit", "--memlock=unlimited:unlimited", "--"}, wrap...)
	} else {
		t.Logf("RLIMIT_MEMLOCK stays %d: this test cannot raise it as the unit does", lim.Cur)
	}
	return wrap, caps
}

var capNumbers = map[string]int{
	"CAP_BPF": unix.CAP_BPF, "CAP_PERFMON": unix.CAP_PERFMON, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN,
	"CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN,
}

// procStatus reads the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func hexField(t *testing.T, st map[string]string, k string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(st[k], 16, 64)
	if err != nil {
		t.Fatalf("%s %q: %v", k, st[k], err)
	}
	return v
}

// debianLog creates a log file as Debian's nginx leaves it: owner www-data,
// group group, mode 0640.
func debianLog(t *testing.T, path, group string) {
	t.Helper()
	owner, err := user.Lookup("www-data")
	if err != nil {
		t.Fatalf("user www-data (Debian's nginx package creates it): %v", err)
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(g.Gid)
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
}

const combinedLine = `203.0.113.5 - - [06/Dec/2026:10:00:00 +0000] "GET /items/1 HTTP/1.1" 200 5 "-" "curl"` + "\n"

// TestDaemonWithTheUnitsPrivileges runs the daemon with exactly what the
// systemd unit grants (setpriv: its capability bounding set, its groups, no
// new privileges) and checks that it works: it attaches, follows an nginx log
// that is 0640 www-data:adm, keeps only CAP_BPF once started, and still bans,
// reloads and reports healthy. A log its groups cannot read is an error in
// its log and in its metrics.
func TestDaemonWithTheUnitsPrivileges(t *testing.T) {
	testenv.RequireRoot(t)
	wrap, unitCaps := unitWrap(t)
	e := newEnv(t)
	logDir := filepath.Join(e.dir, "nginx")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	readable, private := filepath.Join(logDir, "access.log"), filepath.Join(logDir, "private.log")
	debianLog(t, readable, "adm")
	debianLog(t, private, "www-data") // not a group of the daemon's
	pol := e.write("daemon.yaml", basePolicy+fmt.Sprintf("  accessLogs:\n    - {path: %s, fromStart: true}\n    - {path: %s, fromStart: true}\n", readable, private))
	e.d.Config.Wrap = wrap
	d := e.startDaemon(pol)
	d.waitLog(t, "dropped the capabilities needed only to start")

	st := e.status()
	ps := procStatus(t, st.PID)
	if got := hexField(t, ps, "CapBnd"); got != unitCaps {
		t.Errorf("bounding set %x, want the unit's %x", got, unitCaps)
	}
	for _, k := range []string{"CapPrm", "CapEff"} {
		if got := hexField(t, ps, k); got != 1<<unix.CAP_BPF {
			t.Errorf("%s %x once started, want CAP_BPF alone (%x)", k, got, uint64(1)<<unix.CAP_BPF)
		}
	}
	t.Logf("pid %d: CapBnd %s CapPrm %s CapEff %s CapAmb %s Groups %q NoNewPrivs %s", st.PID, ps["CapBnd"], ps["CapPrm"], ps["CapEff"], ps["CapAmb"], ps["Groups"], ps["NoNewPrivs"])
	if ps["NoNewPrivs"] != "1" || !slices.Contains(strings.Fields(ps["Groups"]), "4") {
		t.Errorf("NoNewPrivs %s, groups %q: want 1 and adm (4)", ps["NoNewPrivs"], ps["Groups"])
	}

	f, err := os.OpenFile(readable, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := f.WriteString(combinedLine); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	var logs map[string]control.AccessLogStatus
	if !lab.WaitFor(20*time.Second, func() bool {
		logs = map[string]control.AccessLogStatus{}
		for _, l := range e.status().AccessLogs {
			logs[l.Path] = l
		}
		return logs[readable].Lines == 3 && logs[private].Error != ""
	}) {
		t.Fatalf("access logs: %+v\n%s", logs, d.logText())
	}
	if logs[readable].Error != "" || !strings.Contains(logs[private].Error, "permission denied") {
		t.Errorf("access logs: %+v", logs)
	}
	// the unreadable one: an error in the log (once) and in the metrics
	var errLines int
	for _, line := range strings.Split(d.logText(), "\n") {
		var rec struct{ Level, Msg, Path string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "ERROR" && rec.Msg == "cannot read access log; retrying" && rec.Path == private {
			errLines++
		}
	}
	if errLines != 1 {
		t.Errorf("%d error lines about %s, want 1:\n%s", errLines, private, d.logText())
	}
	body := e.scrape(t)
	for series, want := range map[string]float64{
		fmt.Sprintf("apiguard_access_log_readable{path=%q}", private):     0,
		fmt.Sprintf("apiguard_access_log_errors_total{path=%q}", private): 1,
		fmt.Sprintf("apiguard_access_log_readable{path=%q}", readable):    1,
		fmt.Sprintf("apiguard_access_log_lines_total{path=%q}", readable): 3,
	} {
		if got, ok := metric(body, series); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}

	// with CAP_BPF alone: bans, a reload and the health check still work
	e.mustCLI("ban", "add", e.pair.peerEnd.Addr4.String(), "--ttl", "1m")
	e.expectDropped("ban", 5)
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, `"why":"sighup"`, "policy already in force")
	if code, body := e.get(t, "/healthz"); code != 200 {
		t.Errorf("healthz: %d %s", code, body)
	}
}

// TestUnitSystemCallFilter runs the daemon under strace with the unit's
// privileges through start, a scrape, /healthz, a ban, a reload and a stop,
// and checks that every system call it made is one the unit's
// SystemCallFilter allows (as systemd-analyze expands its groups): the
// filter can be enforced without breaking the daemon.
func TestUnitSystemCallFilter(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "strace")
	analyze := testenv.RequireTool(t, "systemd-analyze")
	wrap, _ := unitWrap(t)
	allowed := allowedSyscalls(t, analyze, unit(t)["SystemCallFilter"])

	e := newEnv(t)
	trace := filepath.Join(e.dir, "strace.out")
	e.d.Config.Wrap = append([]string{"strace", "-f", "-qq", "-o", trace}, wrap...)
	d := e.startDaemon(e.write("daemon.yaml", basePolicy))
	d.waitLog(t, "dropped the capabilities needed only to start")
	e.scrape(t)
	e.get(t, "/healthz")
	e.mustCLI("ban", "add", e.pair.peerEnd.Addr4.String(), "--ttl", "1m")
	// signals go to the daemon, not to strace (the process the lab started)
	pid := e.status().PID
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitLog(t, `"why":"sighup"`)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.p.Wait(30 * time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.logText())
	}

	used, err := syscallsAfterExec(trace, e.d.Config.Bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(used) < 20 {
		t.Fatalf("only %d system calls traced: %v", len(used), used)
	}
	var refused []string
	for name := range used {
		if !allowed[name] {
			refused = append(refused, name)
		}
	}
	slices.Sort(refused)
	if len(refused) > 0 {
		t.Errorf("the unit's SystemCallFilter would refuse %v (of %d system calls the daemon made)", refused, len(used))
	}
	t.Logf("%d distinct system calls, all allowed by SystemCallFilter=%v", len(used), unit(t)["SystemCallFilter"])
}

// allowedSyscalls expands SystemCallFilter settings (an allow list; "~" lines
// deny) with systemd's own group definitions.
func allowedSyscalls(t *testing.T, analyze string, settings []string) map[string]bool {
	t.Helper()
	out, err := exec.Command(analyze, "syscall-filter").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	var cur string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "@"):
			cur = strings.TrimSpace(line)
		case strings.HasPrefix(line, "    ") && cur != "":
			if w := strings.TrimSpace(line); w != "" && !strings.HasPrefix(w, "#") {
				groups[cur] = append(groups[cur], w)
			}
		}
	}
	var expand func(name string, into map[string]bool, depth int)
	expand = func(name string, into map[string]bool, depth int) {
		if !strings.HasPrefix(name, "@") {
			into[name] = true
			return
		}
		members, ok := groups[name]
		if !ok || depth > 10 {
			t.Fatalf("syscall group %s: unknown to systemd-analyze", name)
		}
		for _, m := range members {
			expand(m, into, depth+1)
		}
	}
	allowed, denied := map[string]bool{}, map[string]bool{}
	for _, s := range settings {
		into := allowed
		if rest, ok := strings.CutPrefix(s, "~"); ok {
			s, into = rest, denied
		}
		for _, name := range strings.Fields(s) {
			expand(name, into, 0)
		}
	}
	for name := range denied {
		delete(allowed, name)
	}
	return allowed
}

var straceCall = regexp.MustCompile(`^\d+\s+(?:<\.\.\. )?([a-z_][a-z0-9_]*)[( ]`)

// syscallsAfterExec lists the system calls in an strace -f log from the
// execve of bin on: systemd applies the filter to the service's binary, not
// to its own set-up (setpriv's, here).
func syscallsAfterExec(path, bin string) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	started := false
	for _, line := range strings.Split(string(data), "\n") {
		if !started {
			started = strings.Contains(line, `execve("`+bin+`"`) && strings.HasSuffix(line, "= 0")
			continue
		}
		if m := straceCall.FindStringSubmatch(line); m != nil && m[1] != "exited" && m[1] != "killed" {
			used[m[1]] = true
		}
	}
	if !started {
		return nil, fmt.Errorf("no execve of %s in %s", bin, path)
	}
	return used, nil
}
