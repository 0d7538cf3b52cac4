package metrics

import (
	"errors"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/loader"
)

type fakeServices struct {
	stats []ServiceStat
	err   error
}

func (f *fakeServices) ServiceStats() ([]ServiceStat, error) { return f.stats, f.err }

// serviceCountingDatapath is the fake datapath with the kernel's per-service
// counters, as loader.Datapath has them.
type serviceCountingDatapath struct {
	*fakeDatapath
	svc []ServiceCounter
}

func (c serviceCountingDatapath) ServiceCounters() ([]ServiceCounter, error) { return c.svc, nil }

func TestServiceMetrics(t *testing.T) {
	src := fakeSources()
	svcs := &fakeServices{stats: []ServiceStat{
		{Name: "api", Protocol: "tcp", Ports: "443", Clients: 12, Packets: 9000, Bytes: 1 << 20, Drops: 40},
		{Name: "trial", Protocol: "tcp", Ports: "8000-8999", Monitor: true, Clients: 3, Packets: 500, Bytes: 4096, Drops: 120},
	}}
	src.Services = svcs
	got := sample(t, newTestRegistry(t, src))
	for k, v := range map[string]float64{
		"apiguard_service_info{mode=enforce,ports=443,protocol=tcp,service=api}":         1,
		"apiguard_service_info{mode=monitor,ports=8000-8999,protocol=tcp,service=trial}": 1,
		"apiguard_service_tracked_clients{service=api}":                                  12,
		"apiguard_service_tracked_packets{service=trial}":                                500,
		"apiguard_service_tracked_bytes{service=api}":                                    1 << 20,
		"apiguard_service_tracked_drops{mode=enforce,service=api}":                       40,
		// what "start in monitor mode" is checked by: the drops enforcing would make
		"apiguard_service_tracked_drops{mode=monitor,service=trial}": 120,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k := range got {
		if strings.HasPrefix(k, "apiguard_service_packets_total") {
			t.Errorf("%s exported by a datapath without per-service counters", k)
		}
	}

	// a failed service walk costs its metrics, not the scrape
	src.Services = &fakeServices{err: errors.New("read clients: boom")}
	reg := newTestRegistry(t, src)
	if _, err := reg.Gather(); err == nil {
		t.Error("a failed service walk is not reported")
	}

	// the hook: a datapath that counts by service gets the kernel's series
	src = fakeSources()
	src.Datapath = serviceCountingDatapath{fakeDatapath: src.Datapath.(*fakeDatapath), svc: []ServiceCounter{
		{Service: "api", Action: loader.ActionDrop, Reason: loader.Reason(loader.GuardAgReasonAG_R_CLIENT_PPS), Packets: 7, Bytes: 700},
	}}
	got = sample(t, newTestRegistry(t, src))
	if got["apiguard_service_packets_total{action=drop,reason=client_pps,service=api}"] != 7 ||
		got["apiguard_service_bytes_total{action=drop,reason=client_pps,service=api}"] != 700 {
		t.Errorf("per-service kernel counters not exported: %v", got["apiguard_service_packets_total{action=drop,reason=client_pps,service=api}"])
	}
}
