package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/userspace/control"
)

// TestMonitorModeIsCheckable: a service in monitor mode passes what its
// limit would drop, and status, clients top --service and the metrics say
// how much and whose, so the advice "start in monitor mode" can be checked.
func TestMonitorModeIsCheckable(t *testing.T) {
	p, d, dir := lockoutLab(t)
	recv := p.listen(t)
	snd := p.sender(t)
	pol := filepath.Join(dir, "monitor.yaml")
	if err := os.WriteFile(pol, []byte(`apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: trial-echo}
spec:
  services:
    - name: echo
      protocol: udp
      ports: [9000]
      mode: monitor
      limits:
        client:
          packets: {rate: 30/m, burst: 2}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, code := cliExit(t, d, nil, "policy", "apply", pol); code != 0 {
		t.Fatalf("apply: exit %d", code)
	}
	snd.send(t, 20)
	if !lab.WaitFor(5*time.Second, func() bool { return recv.n.Load() >= 20 }) {
		t.Fatalf("monitor mode dropped: %d of 20 arrived", recv.n.Load())
	}
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Services) != 1 {
		t.Fatalf("services %+v", st.Services)
	}
	s := st.Services[0]
	// 2 admitted by the burst; the 30/m rate earns none back in the time 20
	// datagrams take, so 18 would have been dropped
	if s.Name != "echo" || s.Mode != "monitor" || s.Clients != 1 || s.Packets != 20 || s.Drops < 17 || s.Drops > 18 || s.ClientsDropped != 1 {
		t.Errorf("service status %+v", s)
	}
	// the kernel's per-service counters say the same of every packet: the
	// would-drops were let through, none was dropped
	if s.WouldDrop.Packets != s.Drops || s.Passed.Packets+s.WouldDrop.Packets != 20 || s.Dropped.Packets != 0 ||
		s.Passed.Bytes+s.WouldDrop.Bytes != s.Bytes {
		t.Errorf("service counters: passed %+v, would drop %+v, dropped %+v; tracked %d packets, %d bytes, %d drops",
			s.Passed, s.WouldDrop, s.Dropped, s.Packets, s.Bytes, s.Drops)
	}
	out, _, err := d.CLI("status")
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d would", s.WouldDrop.Packets)) || !strings.Contains(out, "monitor mode: echo count what enforcing would drop") {
		t.Errorf("status text: %v\n%s", err, out)
	}
	out, _, err = d.CLI("clients", "top", "--service", "echo", "--by", "drops", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var top control.TopClients
	if err := json.Unmarshal([]byte(out), &top); err != nil || top.Service != "echo" || len(top.Clients) != 1 ||
		top.Clients[0].Addr != p.peerEnd.Addr4.String()+"/32" || top.Clients[0].Drops != s.Drops {
		t.Errorf("clients top --service: %v %+v", err, top)
	}
	if out, code := cliExit(t, d, nil, "clients", "top", "--service", "nosuch"); code != 1 || !strings.Contains(out, `no service "nosuch" in the policy in force (it has: echo)`) {
		t.Errorf("an unknown service: exit %d\n%s", code, out)
	}
}
