// Package deploy_test checks the operations files against the code they
// describe: alert rules and the dashboard use only metrics the daemon exports,
// promtool accepts the rules and their unit tests pass, the systemd unit and
// the DaemonSet grant exactly the capabilities apiguard needs and pass only
// flags the daemon knows, and the DaemonSet's policy is valid.
package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/apiguard/apiguard/test/promcheck"
	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/apiguard/apiguard/userspace/metrics"
	"github.com/apiguard/apiguard/userspace/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.yaml.in/yaml/v3"
)

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPrometheusRules(t *testing.T) {
	out := promcheck.Run(t, "check", "rules", "prometheus/apiguard-rules.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules: %s", out)
	}
	// promtool resolves rule_files from the test file's directory
	out = promcheck.Run(t, "test", "rules", "prometheus/apiguard-rules.test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules: %s", out)
	}
	// every alert has a unit test
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert string }
		}
	}
	if err := yaml.Unmarshal(read(t, "prometheus/apiguard-rules.yml"), &rules); err != nil {
		t.Fatal(err)
	}
	tests := string(read(t, "prometheus/apiguard-rules.test.yml"))
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if !strings.Contains(tests, "alertname: "+r.Alert+"\n") {
				t.Errorf("alert %s has no unit test", r.Alert)
			}
		}
	}
	if n < 5 {
		t.Fatalf("only %d alerts", n)
	}
}

// exported is every metric name a scrape of the daemon can contain.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, n := range metrics.Names() {
		names[n] = true
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

var metricRef = regexp.MustCompile(`\b((?:apiguard|process|go)_[a-z0-9_]*[a-z0-9])\b`)

func TestReferencedMetricsExist(t *testing.T) {
	names := exported(t)
	for _, f := range []string{"prometheus/apiguard-rules.yml", "prometheus/apiguard-rules.test.yml", "grafana/apiguard-dashboard.json"} {
		refs := metricRef.FindAllStringSubmatch(string(read(t, f)), -1)
		if len(refs) == 0 {
			t.Fatalf("%s references no metric", f)
		}
		for _, m := range refs {
			if !names[m[1]] {
				t.Errorf("%s uses %s, which the daemon does not export", f, m[1])
			}
		}
	}
}

func TestGrafanaDashboard(t *testing.T) {
	var d struct {
		UID        string
		Title      string
		Templating struct{ List []struct{ Name, Type string } }
		Panels     []struct {
			ID         int
			Type       string
			Title      string
			Datasource *struct{ UID string }
			GridPos    struct{ H, W, X, Y int }
			Targets    []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(read(t, "grafana/apiguard-dashboard.json"), &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Fatal("dashboard needs a uid and a title")
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] || !vars["instance"] {
		t.Fatalf("template variables %v: want datasource and instance", vars)
	}
	ids := map[int]bool{}
	graphs := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
			t.Errorf("panel %q: grid position %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		graphs++
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q: %q ignores the host selector", p.Title, tg.Expr)
			}
		}
	}
	if graphs < 10 {
		t.Fatalf("only %d panels", graphs)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// daemonFlags builds apiguard and lists the flags `apiguard daemon` takes.
func daemonFlags(t *testing.T) (bin string, flags map[string]bool) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "apiguard-deploy-test-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "apiguard")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/apiguard").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	t.Cleanup(func() {}) // the binary is shared by the tests of this run
	if buildErr != nil {
		t.Fatalf("build apiguard: %v", buildErr)
	}
	out, err := exec.Command(binPath, "daemon", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("apiguard daemon --help: %v\n%s", err, out)
	}
	flags = map[string]bool{}
	for _, m := range regexp.MustCompile(`--([a-z][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	return binPath, flags
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func checkFlags(t *testing.T, where string, args []string, known map[string]bool) {
	t.Helper()
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !known[name] {
			t.Errorf("%s passes --%s, which 'apiguard daemon' does not take", where, name)
		}
	}
}

func capSet(s string) []string {
	f := strings.Fields(s)
	sort.Strings(f)
	return f
}

// The capabilities each deployment grants (deploy/README.md says why): the
// systemd unit raises RLIMIT_MEMLOCK itself (LimitMEMLOCK), a pod cannot, so
// the DaemonSet adds CAP_SYS_RESOURCE for kernels before 5.11. The daemon
// keeps only CAP_BPF once attached either way (userspace/privs).
var (
	unitCaps = []string{"CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"}
	podCaps  = []string{"CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_RESOURCE"}
)

func TestSystemdUnit(t *testing.T) {
	unit := read(t, "systemd/apiguard.service")
	kv := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("not a key=value line: %q", line)
		}
		kv[k] = append(kv[k], v)
	}
	one := func(k string) string {
		if len(kv[k]) != 1 {
			t.Fatalf("%s set %d times", k, len(kv[k]))
		}
		return kv[k][0]
	}
	if one("Restart") != "on-failure" {
		t.Errorf("Restart=%s", one("Restart"))
	}
	for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		if got := capSet(one(k)); !slices.Equal(got, unitCaps) {
			t.Errorf("%s = %v, want exactly %v", k, got, unitCaps)
		}
	}
	// uid 0 without CAP_DAC_OVERRIDE reads Debian's 0640 www-data:adm logs
	// through the group; the rest confines what a compromised daemon can do
	if !slices.Contains(strings.Fields(one("SupplementaryGroups")), "adm") || one("ProtectProc") != "invisible" ||
		one("LimitMEMLOCK") != "infinity" || one("SystemCallErrorNumber") != "EPERM" {
		t.Errorf("SupplementaryGroups=%s ProtectProc=%s LimitMEMLOCK=%s SystemCallErrorNumber=%s",
			one("SupplementaryGroups"), one("ProtectProc"), one("LimitMEMLOCK"), one("SystemCallErrorNumber"))
	}
	if f := strings.Fields(one("SystemCallFilter")); !slices.Contains(f, "@system-service") || !slices.Contains(f, "bpf") {
		t.Errorf("SystemCallFilter=%v: want @system-service and bpf", f)
	}
	if one("NoNewPrivileges") != "yes" || one("ExecReload") != "/bin/kill -HUP $MAINPID" {
		t.Error("NoNewPrivileges or ExecReload")
	}
	exec0 := strings.Fields(one("ExecStart"))
	if len(exec0) < 2 || filepath.Base(exec0[0]) != "apiguard" || exec0[1] != "daemon" {
		t.Fatalf("ExecStart %v", exec0)
	}
	bin, flags := daemonFlags(t)
	checkFlags(t, "the systemd unit", exec0[2:], flags)

	// systemd's own parser, where it is installed: no warning allowed
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: unit syntax not verified by systemd")
		return
	}
	dir := t.TempDir()
	local := bytes.ReplaceAll(unit, []byte(exec0[0]), []byte(bin))
	path := filepath.Join(dir, "apiguard.service")
	if err := os.WriteFile(path, local, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// k8sDocs decodes a multi-document manifest by kind.
func k8sDocs(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(read(t, path)))
	out := map[string]map[string]any{}
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out[doc["kind"].(string)] = doc
	}
}

// dig walks maps and lists: dig(x, "spec", "template", 0) ...
func dig(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("at %v: not a mapping", path)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("at %v: not a list of %d", path, k+1)
			}
			v = l[k]
		}
	}
	return v
}

func TestKubernetesDaemonSet(t *testing.T) {
	docs := k8sDocs(t, "kubernetes/apiguard.yaml")
	ds := docs["DaemonSet"]
	cm := docs["ConfigMap"]
	if ds == nil || cm == nil || docs["Namespace"] == nil {
		t.Fatalf("kinds %v", docs)
	}
	args := checkDaemonSet(t, ds, cm)
	pm := k8sDocs(t, "kubernetes/podmonitor.yaml")["PodMonitor"]
	if pm == nil || dig(t, pm, "spec", "podMetricsEndpoints", 0, "port") != "metrics" {
		t.Errorf("PodMonitor %v", pm)
	}
	if !strings.Contains(strings.Join(args, " "), "--metrics-addr=$(NODE_IP):9470") {
		t.Error("metrics are not served on the port the annotations name")
	}
}

// checkDaemonSet checks a DaemonSet and its policy ConfigMap (the plain
// manifest's, or the Helm chart's as rendered) and returns the daemon's args.
func checkDaemonSet(t *testing.T, ds, cm map[string]any) []string {
	t.Helper()
	pod := dig(t, ds, "spec", "template", "spec")
	if dig(t, pod, "hostNetwork") != true {
		t.Error("hostNetwork is not true")
	}
	c := dig(t, pod, "containers", 0)
	add := []string{}
	for _, a := range dig(t, c, "securityContext", "capabilities", "add").([]any) {
		add = append(add, "CAP_"+a.(string))
	}
	sort.Strings(add)
	if !slices.Equal(add, podCaps) {
		t.Errorf("capabilities add %v, want %v", add, podCaps)
	}
	if drop := dig(t, c, "securityContext", "capabilities", "drop").([]any); len(drop) != 1 || drop[0] != "ALL" {
		t.Errorf("capabilities drop %v, want [ALL]", drop)
	}
	if dig(t, c, "securityContext", "privileged") != false {
		t.Error("container is privileged")
	}
	// the probes ask the daemon's health, not whether its HTTP server answers
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if p := dig(t, c, probe, "httpGet", "path"); p != "/healthz" {
			t.Errorf("%s probes %v, want /healthz", probe, p)
		}
		if p := dig(t, c, probe, "httpGet", "port"); p != "metrics" {
			t.Errorf("%s probes port %v, want the metrics port", probe, p)
		}
	}

	// volumes: bpffs from the host, the policy from the ConfigMap
	vols := map[string]map[string]any{}
	for _, v := range dig(t, pod, "volumes").([]any) {
		vols[v.(map[string]any)["name"].(string)] = v.(map[string]any)
	}
	mounts := map[string]string{}
	for _, m := range dig(t, c, "volumeMounts").([]any) {
		mm := m.(map[string]any)
		mounts[mm["mountPath"].(string)] = mm["name"].(string)
	}
	if v := vols[mounts["/sys/fs/bpf"]]; v == nil || dig(t, v, "hostPath", "path") != "/sys/fs/bpf" {
		t.Errorf("/sys/fs/bpf is not the host's bpffs: %v", v)
	}
	if v := vols[mounts["/etc/apiguard"]]; v == nil || dig(t, v, "configMap", "name") != dig(t, cm, "metadata", "name") {
		t.Errorf("/etc/apiguard is not the policy ConfigMap: %v", v)
	}

	// flags the daemon takes; the policy path is the ConfigMap's key
	var args []string
	for _, a := range dig(t, c, "args").([]any) {
		args = append(args, a.(string))
	}
	if len(args) == 0 || args[0] != "daemon" {
		t.Fatalf("args %v", args)
	}
	_, flags := daemonFlags(t)
	checkFlags(t, "the DaemonSet", args[1:], flags)
	policyFile := ""
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--policy="); ok {
			policyFile = v
		}
	}
	key := filepath.Base(policyFile)
	if filepath.Dir(policyFile) != "/etc/apiguard" {
		t.Fatalf("--policy=%s is not in the ConfigMap mount", policyFile)
	}
	src, ok := dig(t, cm, "data", key).(string)
	if !ok {
		t.Fatalf("ConfigMap has no %s", key)
	}
	pol, err := policy.Parse("ConfigMap "+key, []byte(src), func(string) ([]byte, error) { return nil, os.ErrNotExist })
	if err != nil {
		t.Fatalf("the DaemonSet's policy does not validate:\n%v", err)
	}
	if _, err := pol.Compile(nil); err != nil {
		t.Fatalf("the DaemonSet's policy does not compile: %v", err)
	}
	// the commented crowdsec section validates once uncommented, and names
	// only variables the container gets from the Secret
	uncommented := regexp.MustCompile(`(?m)^  # (crowdsec:|  lapi:|  bouncer:|  report:)`).ReplaceAllString(src, "  $1")
	if uncommented == src {
		t.Fatal("the policy lacks the commented crowdsec section")
	}
	pol, err = policy.Parse("ConfigMap "+key, []byte(uncommented), func(string) ([]byte, error) { return nil, os.ErrNotExist })
	if err != nil {
		t.Fatalf("the crowdsec section does not validate:\n%v", err)
	}
	cs := pol.Spec.CrowdSec
	envs := map[string]bool{}
	for _, e := range dig(t, c, "env").([]any) {
		m, _ := e.(map[string]any)
		from, _ := m["valueFrom"].(map[string]any)
		ref, _ := from["secretKeyRef"].(map[string]any)
		if name, _ := m["name"].(string); ref["name"] == "apiguard-crowdsec" && ref["optional"] == true {
			envs[name] = true
		}
	}
	for _, v := range []string{cs.Bouncer.APIKey.Env, cs.Report.MachineID.Env, cs.Report.Password.Env} {
		if !envs[v] {
			t.Errorf("the crowdsec section reads %q, which the container does not get from the Secret", v)
		}
	}

	// scraping: the annotations point at the metrics port
	ann := dig(t, ds, "spec", "template", "metadata", "annotations").(map[string]any)
	port := dig(t, c, "ports", 0)
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9470" ||
		dig(t, port, "containerPort") != 9470 || dig(t, port, "name") != "metrics" {
		t.Errorf("scrape annotations %v, port %v", ann, port)
	}
	return args
}

// noPanelOrRule are exported metrics that need neither a panel nor an alert,
// each with why. Every other metric the daemon exports is used by a rule or
// a dashboard panel (TestEveryMetricCovered).
var noPanelOrRule = map[string]string{}

// TestEveryMetricCovered: whatever the daemon exports is on the dashboard or
// in an alert, or listed above with a reason; and the list holds nothing
// that is covered or no longer exported.
func TestEveryMetricCovered(t *testing.T) {
	used := map[string]bool{}
	for _, f := range []string{"prometheus/apiguard-rules.yml", "grafana/apiguard-dashboard.json"} {
		for _, m := range metricRef.FindAllStringSubmatch(string(read(t, f)), -1) {
			used[m[1]] = true
		}
	}
	names := map[string]bool{}
	for _, n := range metrics.Names() {
		names[n] = true
		if !used[n] && noPanelOrRule[n] == "" {
			t.Errorf("%s is exported but no panel or alert uses it (add one, or list it in noPanelOrRule with why)", n)
		}
	}
	for n := range noPanelOrRule {
		switch {
		case !names[n]:
			t.Errorf("noPanelOrRule lists %s, which the daemon does not export", n)
		case used[n]:
			t.Errorf("noPanelOrRule lists %s, which a panel or alert uses", n)
		}
	}
	pending := metrics.PendingNames()
	for _, n := range pending {
		if noPanelOrRule[n] == "" {
			t.Errorf("%s is pending but not listed in noPanelOrRule", n)
		}
	}
	for n, why := range noPanelOrRule {
		if strings.HasPrefix(why, "pending") && !slices.Contains(pending, n) {
			t.Errorf("noPanelOrRule calls %s pending, but the daemon exports it now: give it a panel or an alert", n)
		}
	}
}

// apiReasons are the detector's rules fed by the API layer: those an
// application's report may name.
func apiReasons() []string {
	var out []string
	for _, r := range detect.Reasons() {
		if _, err := detect.ReportReason(string(r)); err == nil {
			out = append(out, string(r))
		}
	}
	return out
}

// TestEveryReasonShown: the flags of every detector rule have their label
// value named in deploy/README.md's metric table, and the dashboard's panel
// of the API detectors selects exactly the API rules (a rule added to the
// detector shows up there or fails here).
func TestEveryReasonShown(t *testing.T) {
	var row string
	for _, l := range strings.Split(string(read(t, "README.md")), "\n") {
		if strings.HasPrefix(l, "| `apiguard_clients_flagged_total` |") {
			row = l
		}
	}
	for _, r := range detect.Reasons() {
		if !regexp.MustCompile(`[ (]` + regexp.QuoteMeta(string(r)) + `[,)]`).MatchString(row) {
			t.Errorf("deploy/README.md's row of apiguard_clients_flagged_total does not name reason %s: %q", r, row)
		}
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(read(t, "grafana/apiguard-dashboard.json"), &d); err != nil {
		t.Fatal(err)
	}
	sel := regexp.MustCompile(`apiguard_clients_flagged_total\{[^}]*reason=~"([^"]*)"`)
	var got []string
	for _, p := range d.Panels {
		if p.Title != "Flags by the API detectors" {
			continue
		}
		for _, tg := range p.Targets {
			if m := sel.FindStringSubmatch(tg.Expr); m != nil {
				got = append(got, strings.Split(m[1], "|")...)
			}
		}
	}
	slices.Sort(got)
	want := apiReasons()
	slices.Sort(want)
	if len(want) < 7 || !slices.Equal(got, want) {
		t.Errorf("the panel of the API detectors selects reasons %v, want the API rules %v", got, want)
	}
}

// TestREADMEMetricTable: deploy/README.md's metric table names every metric
// the daemon exports, and its alert table every alert.
func TestREADMEMetricTable(t *testing.T) {
	readme := string(read(t, "README.md"))
	for _, n := range metrics.Names() {
		if !strings.Contains(readme, "`"+n+"`") {
			t.Errorf("deploy/README.md's metric table lacks %s", n)
		}
	}
	// a metric the daemon cannot export yet is said to be so where it is listed
	for _, n := range metrics.PendingNames() {
		for _, l := range strings.Split(readme, "\n") {
			if strings.HasPrefix(l, "| ") && strings.Contains(l, "`"+n+"`") && !strings.Contains(l, "Not exported yet") {
				t.Errorf("deploy/README.md's row of %s does not say it is not exported yet: %q", n, l)
			}
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert string }
		}
	}
	if err := yaml.Unmarshal(read(t, "prometheus/apiguard-rules.yml"), &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if !strings.Contains(readme, "| `"+r.Alert+"` |") {
				t.Errorf("deploy/README.md's alert table lacks %s", r.Alert)
			}
		}
	}
}
