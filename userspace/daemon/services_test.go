package daemon

import (
	"testing"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/control"
)

// The kernel's per-service counters reach status by name and action:
// reasons sum, (none) and a service the policy no longer has stay out.
func TestAddServiceCounters(t *testing.T) {
	svcs := []control.ServiceStatus{{Name: "api", Mode: "enforce"}, {Name: "trial", Mode: "monitor"}}
	ok, pps := loader.Reason(loader.GuardAgReasonAG_R_OK), loader.Reason(loader.GuardAgReasonAG_R_CLIENT_PPS)
	acl, deny := loader.Reason(loader.GuardAgReasonAG_R_ACL), loader.Reason(loader.GuardAgReasonAG_R_DENY)
	addServiceCounters(svcs, []loader.ServiceCounter{
		{Service: loader.NoService, Action: loader.ActionDrop, Reason: deny, Packets: 1000, Bytes: 60000},
		{Service: "api", Action: loader.ActionPass, Reason: ok, Packets: 90, Bytes: 9000},
		{Service: "api", Action: loader.ActionDrop, Reason: pps, Packets: 7, Bytes: 700},
		{Service: "api", Action: loader.ActionDrop, Reason: acl, Packets: 3, Bytes: 180},
		{Service: "trial", Action: loader.ActionPass, Reason: ok, Packets: 2, Bytes: 120},
		{Service: "trial", Action: loader.ActionMonitor, Reason: pps, Packets: 18, Bytes: 1080},
		{Service: "gone", Action: loader.ActionPass, Reason: ok, Packets: 5, Bytes: 500},
	})
	want := []control.ServiceStatus{
		{Name: "api", Mode: "enforce", Passed: control.PacketCount{Packets: 90, Bytes: 9000}, Dropped: control.PacketCount{Packets: 10, Bytes: 880}},
		{Name: "trial", Mode: "monitor", Passed: control.PacketCount{Packets: 2, Bytes: 120}, WouldDrop: control.PacketCount{Packets: 18, Bytes: 1080}},
	}
	for i := range want {
		if svcs[i] != want[i] {
			t.Errorf("service %d: %+v, want %+v", i, svcs[i], want[i])
		}
	}
}
