package metrics

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestHealthz: 200 while every check passes, 503 as soon as one fails, and
// the checks in the answer either way.
func TestHealthz(t *testing.T) {
	checks := []Check{{Name: "events", OK: true}, {Name: "policy", OK: true, Detail: "p, generation 3"}}
	srv := httptest.NewServer(Handler(prometheus.NewRegistry(), func() []Check { return checks }))
	defer srv.Close()
	get := func() (int, healthReport) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rep healthReport
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, rep
	}
	if code, rep := get(); code != http.StatusOK || rep.Status != "ok" || len(rep.Checks) != 2 || rep.Checks[1].Detail != "p, generation 3" {
		t.Errorf("healthy: %d %+v", code, rep)
	}
	checks = append(checks, Check{Name: "attachments", Detail: "eth0 (native): not attached"})
	if code, rep := get(); code != http.StatusServiceUnavailable || rep.Status != "failing" || rep.Checks[2].OK {
		t.Errorf("one check failing: %d %+v", code, rep)
	}
}
