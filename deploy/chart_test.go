package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/test/testenv"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

const chartDir = "helm/apiguard"

// helmBin finds helm (make deps installs it from the Go module proxy).
func helmBin(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs("../bin/helm"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return testenv.RequireTool(t, "helm")
}

// helmTemplate renders the chart with the given --set values; errors are
// returned with helm's output, for the cases that must fail.
func helmTemplate(t *testing.T, sets ...string) (string, error) {
	t.Helper()
	args := []string{"template", "ag", chartDir, "--namespace", "apiguard"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helmBin(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", errors.New(errb.String())
	}
	return out.String(), nil
}

// rendered decodes helm's output twice: strictly into the Kubernetes API's
// own types (an unknown field, a wrong type, a quantity that does not parse
// is an error, as the API server would answer), and into maps by kind for
// the checks the plain manifest gets too.
func rendered(t *testing.T, out string) map[string]map[string]any {
	t.Helper()
	docs := map[string]map[string]any{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("helm template output: %v", err)
		}
		var doc map[string]any
		if err := node.Decode(&doc); err != nil || doc == nil {
			continue
		}
		raw, err := yaml.Marshal(&node)
		if err != nil {
			t.Fatal(err)
		}
		kind, _ := doc["kind"].(string)
		var typed any
		switch kind {
		case "DaemonSet":
			typed = &appsv1.DaemonSet{}
		case "ConfigMap":
			typed = &corev1.ConfigMap{}
		case "Secret":
			typed = &corev1.Secret{}
		case "PodMonitor":
			// a CRD: checked by field below
		default:
			t.Errorf("the chart renders a %s, which this test does not validate", kind)
		}
		if typed != nil {
			if err := sigsyaml.UnmarshalStrict(raw, typed); err != nil {
				t.Errorf("%s does not validate against the Kubernetes API types: %v", kind, err)
			}
		}
		if docs[kind] != nil {
			t.Errorf("two %s documents", kind)
		}
		docs[kind] = doc
	}
}

func TestHelmChart(t *testing.T) {
	out, err := exec.Command(helmBin(t), "lint", "--strict", chartDir).CombinedOutput()
	if err != nil {
		t.Fatalf("helm lint --strict: %v\n%s", err, out)
	}

	// the defaults: the same DaemonSet the plain manifest is checked to be,
	// every node's interfaces chosen by --iface auto
	def, err := helmTemplate(t)
	if err != nil {
		t.Fatal(err)
	}
	docs := rendered(t, def)
	ds, cm := docs["DaemonSet"], docs["ConfigMap"]
	if ds == nil || cm == nil || docs["PodMonitor"] != nil {
		t.Fatalf("default kinds: %v", docs)
	}
	args := checkDaemonSet(t, ds, cm)
	if !slices.Contains(args, "--iface=auto") || !strings.Contains(strings.Join(args, " "), "--metrics-addr=$(NODE_IP):9470") {
		t.Errorf("default args %v", args)
	}
	pod := dig(t, ds, "spec", "template", "spec")
	if dig(t, pod, "priorityClassName") != "system-node-critical" {
		t.Errorf("priorityClassName %v", dig(t, pod, "priorityClassName"))
	}

	// every option set
	out2, err := helmTemplate(t, "interfaces={eth0,eth1}", "attach=tcx", "metrics.port=9555",
		"metrics.podMonitor.enabled=true", "crowdsec.secretName=cs-creds", "extraArgs={--flow-capacity=262144}",
		"resources.limits.memory=1Gi", "priorityClassName=")
	if err != nil {
		t.Fatal(err)
	}
	docs = rendered(t, out2)
	ds = docs["DaemonSet"]
	c := dig(t, ds, "spec", "template", "spec", "containers", 0)
	var got []string
	for _, a := range dig(t, c, "args").([]any) {
		got = append(got, a.(string))
	}
	for _, want := range []string{"--iface=eth0", "--iface=eth1", "--attach=tcx", "--metrics-addr=$(NODE_IP):9555", "--flow-capacity=262144"} {
		if !slices.Contains(got, want) {
			t.Errorf("args %v lack %s", got, want)
		}
	}
	_, flags := daemonFlags(t)
	checkFlags(t, "the chart", got[1:], flags)
	if dig(t, c, "ports", 0, "containerPort") != 9555 || dig(t, ds, "spec", "template", "metadata", "annotations", "prometheus.io/port") != "9555" {
		t.Error("the metrics port is not the one set")
	}
	if ref := dig(t, c, "env", 1, "valueFrom", "secretKeyRef", "name"); ref != "cs-creds" {
		t.Errorf("CrowdSec secret %v", ref)
	}
	if _, ok := dig(t, ds, "spec", "template", "spec").(map[string]any)["priorityClassName"]; ok {
		t.Error("an empty priorityClassName is rendered")
	}
	pm := docs["PodMonitor"]
	if pm == nil || dig(t, pm, "spec", "podMetricsEndpoints", 0, "port") != "metrics" {
		t.Errorf("PodMonitor %v", pm)
	}

	// values are quoted where they land: a YAML-looking value stays a string
	out4, err := helmTemplate(t, "extraArgs={--flow-capacity=1: 2}", `crowdsec.secretName=a b: c}`, "priorityClassName=x: y")
	if err != nil {
		t.Fatal(err)
	}
	docs = rendered(t, out4)
	c = dig(t, docs["DaemonSet"], "spec", "template", "spec", "containers", 0)
	got = nil
	for _, a := range dig(t, c, "args").([]any) {
		got = append(got, a.(string))
	}
	if got[len(got)-1] != "--flow-capacity=1: 2" || dig(t, c, "env", 1, "valueFrom", "secretKeyRef", "name") != "a b: c}" ||
		dig(t, docs["DaemonSet"], "spec", "template", "spec", "priorityClassName") != "x: y" {
		t.Errorf("values not kept as strings: args %q", got)
	}

	// a policy of the operator's own ConfigMap: the chart renders none
	out3, err := helmTemplate(t, "policy.existingConfigMap=my-policy")
	if err != nil {
		t.Fatal(err)
	}
	docs = rendered(t, out3)
	if docs["ConfigMap"] != nil {
		t.Error("a ConfigMap is rendered beside policy.existingConfigMap")
	}
	var vol any
	for _, v := range dig(t, docs["DaemonSet"], "spec", "template", "spec", "volumes").([]any) {
		if v.(map[string]any)["name"] == "policy" {
			vol = dig(t, v, "configMap", "name")
		}
	}
	if vol != "my-policy" {
		t.Errorf("policy volume %v, want my-policy", vol)
	}

	// values the schema or the templates refuse, each with a reason
	for _, tc := range []struct{ set, want string }{
		{"attach=xdp", "attach"},
		{"interfaces[0]=eth0/1", "interfaces"},
		{"metrics.port=0", "port"},
		{"extraArgs={rm -rf}", "extraArgs"},
		{"colour=blue", "colour"},
		{"policy.content=", "policy.content is empty"},
		{`interfaces[0]=eth0: x`, "interfaces"},
		{"nodeSelector.role=1", "nodeSelector"},
	} {
		if _, err := helmTemplate(t, tc.set); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s: %v, want an error naming %q", tc.set, err, tc.want)
		}
	}
}
