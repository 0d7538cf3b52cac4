package metrics

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/promcheck"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/apiguard/apiguard/userspace/events"
	"github.com/cilium/ebpf"
)

// The collector against a real loaded datapath: what the kernel counted is
// what the scrape says.
func TestCollectorOnLoadedDatapath(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.OnOneCPU(t) // the kernel's event throttle is per CPU: a migration changes the counts
	d, err := loader.Load(loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if _, err := d.Apply(&loader.Policy{
		Deny: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		Services: []loader.Service{{ID: 1, Name: "api", Proto: loader.ProtoTCP, Ports: []loader.PortRange{{First: 8080, Last: 8080}},
			Client: loader.Limits{Packets: loader.Rate{PerSecond: 1, Burst: 1}}}},
	}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []loader.Ban{
		{Prefix: netip.MustParsePrefix("203.0.113.9/32"), Expires: time.Now().Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("203.0.113.10/32"), Expires: time.Now().Add(-time.Second)}, // lapsed, not swept
	} {
		if err := d.Ban(b); err != nil {
			t.Fatal(err)
		}
	}
	r, err := events.Open(d.EventsMap(), events.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	det, err := detect.New(detect.Config{}, detect.Options{})
	if err != nil {
		t.Fatal(err)
	}

	dst := netip.MustParseAddr("192.0.2.1")
	frame := func(src string, flags uint8) []byte {
		return packet.Build(packet.Spec{Src: netip.MustParseAddr(src), Dst: dst, Proto: packet.TCP, SrcPort: 1234, DstPort: 8080, TCPFlags: flags})
	}
	deny := frame("198.51.100.1", packet.SYN)
	run := func(f []byte, n int) {
		for i := 0; i < n; i++ {
			if _, err := d.XDP().Run(&ebpf.RunOptions{Data: f}); err != nil {
				t.Fatal(err)
			}
		}
	}
	run(deny, 2)                            // the second deny hit's event is throttled
	run(frame("192.0.2.77", packet.ACK), 3) // one passes, two are limited
	run(frame("203.0.113.9", packet.SYN), 1)

	// the reader sees deny_hit, limited and ban_hit: the second deny event was
	// throttled, and the second limited packet was dropped by the refusal
	// memory before any event
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		select {
		case ev := <-r.Events():
			det.Observe(&ev)
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d did not arrive", i)
		}
	}

	src := Sources{Datapath: d, Events: r, Fanout: events.NewHub(), Detector: det}
	reg := newTestRegistry(t, src)
	got := sample(t, reg)
	want := map[string]float64{
		"apiguard_packets_total{action=drop,reason=deny}":       2,
		"apiguard_bytes_total{action=drop,reason=deny}":         float64(2 * len(deny)),
		"apiguard_packets_total{action=drop,reason=client_pps}": 2,
		"apiguard_packets_total{action=pass,reason=ok}":         1,
		"apiguard_packets_total{action=drop,reason=ban}":        1,
		"apiguard_events_sent_total":                            3,
		"apiguard_events_suppressed_total":                      1,
		"apiguard_events_lost_total{stage=ringbuf}":             0,
		"apiguard_events_total{type=deny_hit}":                  1,
		"apiguard_events_total{type=limited}":                   1,
		"apiguard_events_total{type=ban_hit}":                   1,
		"apiguard_bans_active":                                  1,
		"apiguard_map_entries{map=bans4}":                       2,
		"apiguard_map_entries{map=lists4}":                      1,
		"apiguard_map_entries{map=clients}":                     1,
		"apiguard_map_capacity{map=clients}":                    1 << 17,
		"apiguard_map_inserts_total{map=clients}":               1,
		"apiguard_policy_generation":                            1,
		"apiguard_scrape_errors_total":                          0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	// the kernel's per-service counters: the service's packets under its
	// name (the refusal memory's drop included), the rest under (none);
	// exactly these series, each verdict a service met and no other
	wantSvc := map[string]float64{
		`apiguard_service_packets_total{action=drop,reason=deny,service=(none)}`:    2,
		`apiguard_service_packets_total{action=drop,reason=ban,service=(none)}`:     1,
		`apiguard_service_packets_total{action=pass,reason=ok,service=api}`:         1,
		`apiguard_service_packets_total{action=drop,reason=client_pps,service=api}`: 2,
		`apiguard_service_bytes_total{action=drop,reason=deny,service=(none)}`:      float64(2 * len(deny)),
		`apiguard_service_bytes_total{action=drop,reason=ban,service=(none)}`:       float64(len(deny)),
		`apiguard_service_bytes_total{action=pass,reason=ok,service=api}`:           float64(len(deny)),
		`apiguard_service_bytes_total{action=drop,reason=client_pps,service=api}`:   float64(2 * len(deny)),
	}
	for k, g := range got {
		if strings.HasPrefix(k, "apiguard_service_packets_total") || strings.HasPrefix(k, "apiguard_service_bytes_total") {
			if v, ok := wantSvc[k]; !ok || g != v {
				t.Errorf("%s = %v, want %v (listed %v)", k, g, v, ok)
			}
		}
	}
	for k, v := range wantSvc {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing, want %v", k, v)
		}
	}
	code, body := scrape(t, reg)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	promcheck.Metrics(t, body)
}
