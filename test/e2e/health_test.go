package e2e

import (
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/testenv"
)

// get asks the daemon's metrics server (its default address inside the
// guarded namespace) for path: the status code and the body.
func (e *env) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	var conn net.Conn
	err := e.pair.guarded.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", "127.0.0.1:9470", 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.0\r\nHost: apiguard\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(raw), "\r\n\r\n")
	f := strings.Fields(head)
	if len(f) < 2 {
		t.Fatalf("GET %s answered %q", path, head)
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("GET %s answered %q: %v", path, head, err)
	}
	return code, []byte(body)
}

// TestHealthzFollowsTheDatapath: the daemon's /healthz answers 200 while it
// guards its interface and 503 once the hook is gone (its pin, the last
// reference to the XDP link, removed behind its back), naming what failed.
func TestHealthzFollowsTheDatapath(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEnv(t)
	e.startDaemon(e.write("daemon.yaml", basePolicy))
	// started the usual way (nsenter --net), the pins are the host's
	if st := e.status(); len(st.Warnings) != 0 {
		t.Errorf("status warnings %q, want none", st.Warnings)
	}
	code, body := e.get(t, "/healthz")
	if code != 200 || !strings.Contains(string(body), `"status":"ok"`) {
		t.Fatalf("healthy daemon: %d %s", code, body)
	}
	if err := os.Remove(filepath.Join(e.pinDir, "links", "native_"+e.pair.guardEnd.Name)); err != nil {
		t.Fatal(err)
	}
	code, body = e.get(t, "/healthz")
	var rep struct {
		Status string
		Checks []struct {
			Name   string
			OK     bool
			Detail string
		}
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("%d %s: %v", code, body, err)
	}
	failing := map[string]string{}
	for _, c := range rep.Checks {
		if !c.OK {
			failing[c.Name] = c.Detail
		}
	}
	if code != 503 || rep.Status != "failing" || len(failing) != 1 || !strings.Contains(failing["attachments"], "not attached") {
		t.Errorf("after the hook went: %d %s", code, body)
	}
}
