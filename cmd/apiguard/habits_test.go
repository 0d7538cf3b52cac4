package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/detect"
)

// TestExitCodes: scripts tell a usage mistake, a missing daemon and an
// invalid policy apart; an unknown subcommand fails instead of printing help.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, goodPolicy)
	writeFile(t, filepath.Join(dir, "lists/deny.txt"), "192.0.2.0/24\n")
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, strings.Replace(goodPolicy, "[443]", "[0]", 1))
	none := filepath.Join(dir, "none.sock")
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"version"}, exitOK},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"policy", "frobnicate"}, exitUsage},
		{[]string{"ban"}, exitUsage},
		{[]string{"clients"}, exitUsage},
		{[]string{"status", "--colour"}, exitUsage},
		{[]string{"status", "extra"}, exitUsage},
		{[]string{"status", "-o", "yaml"}, exitUsage},
		{[]string{"ban", "flush"}, exitUsage},
		{[]string{"ban", "flush", "--source", "crowdsec"}, exitUsage},
		{[]string{"status", "--socket", none}, exitNotRunning},
		{[]string{"ban", "ls", "--socket", none}, exitNotRunning},
		{[]string{"policy", "validate", good}, exitOK},
		{[]string{"policy", "validate", bad}, exitInvalid},
		{[]string{"policy", "validate", good, bad}, exitInvalid},
		{[]string{"policy", "validate"}, exitUsage},
	} {
		_, _, err := execute(t, tc.args...)
		if got := exitCode(err); got != tc.want {
			t.Errorf("apiguard %s: exit %d (%v), want %d", strings.Join(tc.args, " "), got, err, tc.want)
		}
	}
}

func TestValidateSeveralFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, goodPolicy)
	writeFile(t, filepath.Join(dir, "lists/deny.txt"), "192.0.2.0/24\n")
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, strings.Replace(goodPolicy, "[443]", "[0]", 1))
	out, stderr, err := execute(t, "policy", "validate", good, bad, good)
	if exitCode(err) != exitInvalid || !strings.Contains(err.Error(), "1 of 3 policies have problems") {
		t.Fatalf("err = %v", err)
	}
	if strings.Count(out, "is valid") != 2 || !strings.HasPrefix(stderr, bad+":") {
		t.Errorf("out %q stderr %q", out, stderr)
	}
	out, _, _ = execute(t, "policy", "validate", good, bad, "-o", "json")
	var vs []validation
	if err := json.Unmarshal([]byte(out), &vs); err != nil || len(vs) != 2 || !vs[0].Valid || vs[1].Valid || vs[1].File != bad {
		t.Errorf("json: %v %+v", err, vs)
	}
}

func TestCompletion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"daemon", "--attach", ""}, []string{"native", "generic", "tcx", "tc"}},
		{[]string{"daemon", "--iface", ""}, []string{"auto"}},
		{[]string{"daemon", "--log-level", ""}, []string{"debug", "info", "warn", "error"}},
		{[]string{"status", "-o", ""}, []string{"text", "json"}},
		{[]string{"clients", "top", "--by", ""}, []string{"packets", "bytes", "drops"}},
		{[]string{"report", "192.0.2.1", ""}, reportReasons},
		{[]string{"report", "192.0.2.1", "injection", "--class", ""}, []string{"sql", "xss", "command", "traversal", "template"}},
		{[]string{"ban", "flush", "--source", ""}, []string{"manual", "detector", "all"}},
	} {
		out, _, err := execute(t, append([]string{"__complete"}, tc.args...)...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		var got []string
		for _, l := range strings.Split(out, "\n") {
			if l == "" || strings.HasPrefix(l, ":") || strings.HasPrefix(l, "Completion ended") {
				continue
			}
			w, _, _ := strings.Cut(l, "\t")
			got = append(got, w)
		}
		for _, w := range tc.want {
			if !slices.Contains(got, w) {
				t.Errorf("complete %v: %v lacks %q", tc.args, got, w)
			}
		}
		if !strings.Contains(out, ":4\n") { // ShellCompDirectiveNoFileComp: no file names offered
			t.Errorf("complete %v offers files:\n%s", tc.args, out)
		}
	}
}

// TestReportReasonsCoverRules: the completion of report's reason offers a
// word for every rule a report may count for (those detect.ReportReason
// takes by name), and only words it takes.
func TestReportReasonsCoverRules(t *testing.T) {
	covered := map[detect.Reason]bool{}
	for _, w := range reportReasons {
		r, err := detect.ReportReason(w)
		if err != nil {
			t.Errorf("completion offers %q: %v", w, err)
		}
		covered[r] = true
	}
	for _, r := range detect.Reasons() {
		if _, err := detect.ReportReason(string(r)); err == nil && !covered[r] {
			t.Errorf("reports may count for %s, but no word in reportReasons names it", r)
		}
	}
}

func TestParseBanList(t *testing.T) {
	good := "203.0.113.7\n# a comment\n\n198.51.100.0/24  24h  scanner from x   # why\n2001:db8::1 - seen probing\n::ffff:192.0.2.9\n"
	lines, err := parseBanList("f", []byte(good), "1h", "import", false)
	if err != nil {
		t.Fatal(err)
	}
	want := []importLine{
		{1, control.BanRequest{Prefix: "203.0.113.7/32", TTL: "1h", Reason: "import"}},
		{4, control.BanRequest{Prefix: "198.51.100.0/24", TTL: "24h", Reason: "scanner from x"}},
		{5, control.BanRequest{Prefix: "2001:db8::1/128", TTL: "1h", Reason: "seen probing"}},
		{6, control.BanRequest{Prefix: "192.0.2.9/32", TTL: "1h", Reason: "import"}},
	}
	if !slices.Equal(lines, want) {
		t.Errorf("got %+v\nwant %+v", lines, want)
	}
	// every bad line is reported, nothing is imported, no line is quoted in full
	bad := "203.0.113.7\nroot:$6$secret\n10.0.0.0/33\n" + strings.Repeat("x", 200) + "\n"
	_, err = parseBanList("f", []byte(bad), "", "", false)
	if exitCode(err) != exitInvalid || !strings.Contains(err.Error(), "f:2: not an address or CIDR (a word of 14 bytes)") ||
		strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), `f:3: not an address or CIDR: "10.0.0.0/33"`) ||
		!strings.Contains(err.Error(), "f:3:") || !strings.Contains(err.Error(), "f:4:") || strings.Contains(err.Error(), strings.Repeat("x", 100)) {
		t.Errorf("err = %v", err)
	}
	if _, err := parseBanList("f", []byte(strings.Repeat("1", 5000)+"\n"), "", "", false); err == nil || !strings.Contains(err.Error(), "at most 4 KiB") {
		t.Errorf("a long line: %v", err)
	}
}

// bulkFake is the fake daemon with bulk bans.
type bulkFake struct {
	fakeDaemon
	imported []control.NewBan
	flushed  string
}

func (f *bulkFake) ImportBans(_ context.Context, bans []control.NewBan) (*control.ImportResult, error) {
	f.imported = bans
	res := &control.ImportResult{Refused: []control.ImportRefusal{}}
	for i, b := range bans {
		if b.Prefix == netip.MustParsePrefix("192.0.2.1/32") {
			res.Refused = append(res.Refused, control.ImportRefusal{Index: i, Prefix: b.Prefix.String(), Error: "never banned: the gateway"})
			continue
		}
		res.Added++
	}
	return res, nil
}

func (f *bulkFake) FlushBans(_ context.Context, source string) (*control.FlushResult, error) {
	f.flushed = source
	return &control.FlushResult{Source: source, Removed: 3}, nil
}

func TestBanImportAndFlush(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	fake := &bulkFake{fakeDaemon: fakeDaemon{now: time.Now}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.NewServer(fake, nil).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	file := filepath.Join(t.TempDir(), "bans.txt")
	writeFile(t, file, "203.0.113.7 2h\n192.0.2.1\n198.51.100.0/24\n")
	out, stderr, err := execute(t, "ban", "import", file, "--reason", "list", "--socket", sock)
	if exitCode(err) != exitRefused || !strings.Contains(out, "banned 2 of 3") || !strings.Contains(stderr, file+":2: 192.0.2.1/32: not banned: never banned: the gateway") {
		t.Errorf("import: %v\n%s\n%s", err, out, stderr)
	}
	if len(fake.imported) != 3 || fake.imported[0].TTL != 2*time.Hour || fake.imported[1].Reason != "list" || !fake.imported[1].DefaultTTL {
		t.Errorf("imported %+v", fake.imported)
	}
	out, _, err = execute(t, "ban", "flush", "--source", "detector", "--socket", sock)
	if err != nil || fake.flushed != "detector" || !strings.Contains(out, "lifted 3 bans (detector)") {
		t.Errorf("flush: %v %q %s", err, fake.flushed, out)
	}
}
