package deploy_test

import (
	"bufio"
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// stage is one FROM ... AS name of a Containerfile and its instructions.
type stage struct {
	from, name string
	lines      []string // instructions, continuation lines joined
}

func parseContainerfile(t *testing.T, data []byte) []stage {
	t.Helper()
	var stages []stage
	sc := bufio.NewScanner(bytes.NewReader(data))
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		f := strings.Fields(line)
		if strings.EqualFold(f[0], "FROM") {
			st := stage{from: f[1]}
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				st.name = f[3]
			}
			stages = append(stages, st)
			return
		}
		if len(stages) == 0 {
			if !strings.EqualFold(f[0], "ARG") {
				t.Fatalf("%q before the first FROM", line)
			}
			return
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if rest, ok := strings.CutSuffix(l, "\\"); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(l)
		flush()
	}
	flush()
	return stages
}

// TestContainerfile: no container engine runs here, so the Containerfile is
// checked by reading it: a build stage on the Go go.mod names that builds
// ./cmd/apiguard without cgo and stamps the version, commit and date the
// binary reports, and a final stage from scratch that copies exactly the
// binary and the CA bundle (an https:// CrowdSec LAPI) from stages that
// exist. .dockerignore must not hide what the build copies.
func TestContainerfile(t *testing.T) {
	stages := parseContainerfile(t, read(t, "kubernetes/Containerfile"))
	if len(stages) != 2 {
		t.Fatalf("%d stages, want build and final", len(stages))
	}
	build, final := stages[0], stages[1]
	gomod := string(read(t, "../go.mod"))
	goVer := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(gomod)
	if goVer == nil || !strings.HasPrefix(build.from, "docker.io/library/golang:"+goVer[1]+"-") {
		t.Errorf("build stage FROM %s, want the golang image of go.mod's Go (%v)", build.from, goVer)
	}
	all := strings.Join(build.lines, "\n")
	for _, want := range []string{"COPY go.mod go.sum ./", "COPY . .", "CGO_ENABLED=0 go build", "./cmd/apiguard",
		"-X main.version=${VERSION}", "-X main.commit=${COMMIT}", "-X main.date=${DATE}", "-o /out/apiguard"} {
		if !strings.Contains(all, want) {
			t.Errorf("the build stage lacks %q", want)
		}
	}
	// the -X targets exist: a renamed variable would silently stamp nothing
	src := string(read(t, "../cmd/apiguard/version.go"))
	for _, v := range []string{"version", "commit", "date"} {
		if !regexp.MustCompile(`(?m)^\s+` + v + `\s+= ""`).MatchString(src) {
			t.Errorf("cmd/apiguard has no string variable %s for -X main.%s", v, v)
		}
	}
	if final.from != "scratch" {
		t.Errorf("final stage FROM %s, want scratch", final.from)
	}
	copies := map[string]string{}
	for _, l := range final.lines {
		f := strings.Fields(l)
		switch strings.ToUpper(f[0]) {
		case "COPY":
			if len(f) != 4 || f[1] != "--from="+build.name {
				t.Errorf("final stage: %q does not copy from the build stage %q", l, build.name)
				continue
			}
			copies[f[3]] = f[2]
		case "ENTRYPOINT":
			if l != `ENTRYPOINT ["/usr/local/bin/apiguard"]` {
				t.Errorf("entrypoint %q", l)
			}
		case "ENV":
		default:
			t.Errorf("final stage: unexpected %q", l)
		}
	}
	want := map[string]string{
		"/usr/local/bin/apiguard":            "/out/apiguard",
		"/etc/ssl/certs/ca-certificates.crt": "/etc/ssl/certs/ca-certificates.crt", // where Go looks first on Linux
	}
	if len(copies) != len(want) {
		t.Errorf("final stage copies %v, want %v", copies, want)
	}
	for dst, src := range want {
		if copies[dst] != src {
			t.Errorf("final stage copies %q to %s, want %q", copies[dst], dst, src)
		}
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(ignore), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		for _, needed := range []string{"go.mod", "go.sum", "cmd", "loader", "userspace", "bpf"} {
			if ok, _ := regexp.MatchString("^"+regexp.QuoteMeta(strings.TrimSuffix(l, "/"))+"$", needed); ok {
				t.Errorf(".dockerignore %q hides %s, which the build needs", l, needed)
			}
		}
	}
}
