package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/promcheck"
	"github.com/apiguard/apiguard/userspace/crowdsec"
	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/apiguard/apiguard/userspace/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var now = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

type fakeDatapath struct {
	counters []loader.Counter
	stats    loader.Stats
	usage    []loader.MapUsage
	bans     []loader.Ban
	gen      uint32
	usageErr error
}

func (f *fakeDatapath) Counters() ([]loader.Counter, error) { return f.counters, nil }
func (f *fakeDatapath) Stats() (loader.Stats, error)        { return f.stats, nil }
func (f *fakeDatapath) Usage() ([]loader.MapUsage, error)   { return f.usage, f.usageErr }
func (f *fakeDatapath) Bans() ([]loader.Ban, error)         { return f.bans, nil }
func (f *fakeDatapath) Generation() uint32                  { return f.gen }

type fakeReader events.Stats

func (f fakeReader) Stats() events.Stats { return events.Stats(f) }

type fakeFanout uint64

func (f fakeFanout) Dropped() uint64 { return uint64(f) }

type fakeDetector detect.Totals

func (f fakeDetector) Totals() detect.Totals { return detect.Totals(f) }

type fakeDaemon struct{}

func (fakeDaemon) ReloadErrors() uint64 { return 2 }
func (fakeDaemon) ManualBans() uint64   { return 3 }
func (fakeDaemon) NeverBanEntries() int { return 11 }
func (fakeDaemon) NeverBanCrowdSec() uint64 {
	return 4
}
func (fakeDaemon) Attachments() []loader.Attachment {
	return []loader.Attachment{{Iface: "eth0", Mode: loader.AttachNative}, {Iface: "eth0", Mode: loader.AttachNative, Adopted: true}, {Iface: "eth1", Mode: loader.AttachTCX}}
}

type fakeSignals struct{}

func (fakeSignals) AccessLogs() []AccessLog {
	return []AccessLog{{Path: "/var/log/nginx/access.log", Lines: 100, ParseErrors: 1, Signals: 9, LagBytes: 10,
		Stale: 40, Future: 2, AllTrusted: 3, BadHops: 4}}
}
func (fakeSignals) Reports() uint64 { return 5 }

type fakeCrowdSec struct{}

func (fakeCrowdSec) CrowdSecStats() (*crowdsec.BouncerStats, *crowdsec.ReporterStats) {
	return &crowdsec.BouncerStats{Reachable: false, Pulls: 10, PullErrors: 3, Outages: 1, LastSuccess: now.Add(-time.Minute),
			Active: 4, Decisions: 5, Applied: 7, Removed: 2, Ignored: 4,
			Refused: map[string]uint64{crowdsec.RefusedTooBroad: 3, crowdsec.RefusedType: 1}},
		&crowdsec.ReporterStats{Sent: 6, Dropped: 1, Errors: 2, Queued: 3}
}

func fakeSources() Sources {
	var counters []loader.Counter
	for a := loader.ActionPass; a <= loader.ActionMonitor; a++ {
		for _, r := range loader.Reasons() {
			counters = append(counters, loader.Counter{Action: a, Reason: r})
		}
	}
	counters[int(loader.ActionDrop)*len(loader.Reasons())+int(loader.GuardAgReasonAG_R_CLIENT_PPS)].Packets = 1500
	counters[int(loader.ActionDrop)*len(loader.Reasons())+int(loader.GuardAgReasonAG_R_CLIENT_PPS)].Bytes = 96000
	return Sources{
		Datapath: &fakeDatapath{
			counters: counters,
			stats:    loader.Stats{EventsSent: 40, EventsSuppressed: 900, EventsLost: 1, ClientInserts: 77, ClientInsertFailures: 4, CASContended: 5, ProvenSYNs: 6, FragInserts: 8},
			usage:    []loader.MapUsage{{Name: "clients", Entries: 77, Capacity: 1 << 17}, {Name: "bans4", Entries: 3, Capacity: 1 << 16}},
			bans: []loader.Ban{
				{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Expires: now.Add(time.Minute)},
				{Prefix: netip.MustParsePrefix("192.0.2.2/32")}, // forever
				{Prefix: netip.MustParsePrefix("192.0.2.3/32"), Expires: now.Add(-time.Minute)},
			},
			gen: 7,
		},
		Events: fakeReader{Received: 41, Undecodable: 1, Dropped: 6, ByType: map[loader.EventType]uint64{
			loader.EventType(loader.GuardAgEventTypeAG_EV_LIMITED): 30, loader.EventType(loader.GuardAgEventTypeAG_EV_NO_SERVICE): 10,
		}},
		Fanout:   fakeFanout(12),
		Detector: fakeDetector{Flagged: map[detect.Reason]uint64{detect.Flood: 4, detect.Scan: 1}, Bans: 5, BanErrors: 1, Unproven: 8, NeverBan: 2, Capped: 6, Clients: 9, Prefixes: 2, Flags: 5},
		Daemon:   fakeDaemon{},
		CrowdSec: fakeCrowdSec{},
		Signals:  fakeSignals{},
		SynProxy: fakeSynProxy{},
		Now:      func() time.Time { return now },
	}
}

// sample flattens a registry into "name{l=v,...}" -> value.
func sample(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			key := mf.GetName()
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			default:
				out[key] = -1 // histograms and summaries from the Go collector
			}
		}
	}
	return out
}

func newTestRegistry(t *testing.T, src Sources) *prometheus.Registry {
	t.Helper()
	c, err := NewCollector(src)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := NewRegistry(c)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestCollectorValues(t *testing.T) {
	got := sample(t, newTestRegistry(t, fakeSources()))
	want := map[string]float64{
		"apiguard_packets_total{action=drop,reason=client_pps}":                                1500,
		"apiguard_bytes_total{action=drop,reason=client_pps}":                                  96000,
		"apiguard_packets_total{action=monitor,reason=deny}":                                   0,
		"apiguard_events_total{type=limited}":                                                  30,
		"apiguard_events_total{type=no_service}":                                               10,
		"apiguard_events_total{type=map_pressure}":                                             0,
		"apiguard_events_sent_total":                                                           40,
		"apiguard_events_lost_total{stage=ringbuf}":                                            1,
		"apiguard_events_lost_total{stage=queue}":                                              6,
		"apiguard_events_suppressed_total":                                                     900,
		"apiguard_events_undecodable_total":                                                    1,
		"apiguard_events_subscriber_dropped_total":                                             12,
		"apiguard_clients_flagged_total{reason=flood}":                                         4,
		"apiguard_clients_flagged_total{reason=scan}":                                          1,
		"apiguard_clients_flagged_total{reason=aggregate}":                                     0,
		"apiguard_bans_active":                                                                 2,
		"apiguard_bans_total{source=detector}":                                                 5,
		"apiguard_bans_total{source=manual}":                                                   3,
		"apiguard_bans_withheld_total{why=unproven}":                                           8,
		"apiguard_bans_withheld_total{why=never_ban}":                                          2,
		"apiguard_bans_withheld_total{why=rate_cap}":                                           6,
		"apiguard_never_ban_entries":                                                           11,
		"apiguard_crowdsec_never_ban_skipped_total":                                            4,
		"apiguard_ban_errors_total":                                                            1,
		"apiguard_detector_tracked{kind=clients}":                                              9,
		"apiguard_map_entries{map=clients}":                                                    77,
		"apiguard_map_capacity{map=clients}":                                                   1 << 17,
		"apiguard_map_entries{map=bans4}":                                                      3,
		"apiguard_map_inserts_total{map=clients}":                                              77,
		"apiguard_map_inserts_total{map=fragments}":                                            8,
		"apiguard_map_insert_failures_total{map=clients}":                                      4,
		"apiguard_limiter_cas_contended_total":                                                 5,
		"apiguard_proven_syns_total":                                                           6,
		"apiguard_policy_generation":                                                           7,
		"apiguard_policy_reload_errors_total":                                                  2,
		"apiguard_attach_info{iface=eth0,mode=native}":                                         1,
		"apiguard_attach_info{iface=eth1,mode=tcx}":                                            1,
		"apiguard_scrape_errors_total":                                                         0,
		"apiguard_crowdsec_lapi_up":                                                            0,
		"apiguard_crowdsec_pulls_total{result=ok}":                                             7,
		"apiguard_crowdsec_pulls_total{result=error}":                                          3,
		"apiguard_crowdsec_outages_total":                                                      1,
		"apiguard_crowdsec_last_pull_success_timestamp_seconds":                                float64(now.Add(-time.Minute).Unix()),
		"apiguard_crowdsec_bans_active":                                                        4,
		"apiguard_crowdsec_decisions_active":                                                   5,
		"apiguard_crowdsec_decision_changes_total{change=applied}":                             7,
		"apiguard_crowdsec_decision_changes_total{change=removed}":                             2,
		"apiguard_crowdsec_decisions_refused_total{reason=too_broad}":                          3,
		"apiguard_crowdsec_decisions_refused_total{reason=type}":                               1,
		"apiguard_crowdsec_decisions_refused_total{reason=scope}":                              0,
		"apiguard_crowdsec_decisions_refused_total{reason=value}":                              0,
		"apiguard_crowdsec_decisions_refused_total{reason=duration}":                           0,
		"apiguard_crowdsec_reports_total{result=sent}":                                         6,
		"apiguard_crowdsec_reports_total{result=dropped}":                                      1,
		"apiguard_crowdsec_report_errors_total":                                                2,
		"apiguard_crowdsec_report_queue":                                                       3,
		"apiguard_access_log_lines_total{path=/var/log/nginx/access.log}":                      100,
		"apiguard_access_log_signals_total{path=/var/log/nginx/access.log}":                    9,
		"apiguard_access_log_ignored_total{path=/var/log/nginx/access.log,reason=stale}":       40,
		"apiguard_access_log_ignored_total{path=/var/log/nginx/access.log,reason=future}":      2,
		"apiguard_access_log_ignored_total{path=/var/log/nginx/access.log,reason=all_trusted}": 3,
		"apiguard_access_log_ignored_total{path=/var/log/nginx/access.log,reason=bad_hop}":     4,
		"apiguard_reports_total":                                                               5,
		"apiguard_synproxy_handshakes_total{result=cookie_ok}":                                 20,
		"apiguard_synproxy_handshakes_total{result=kernel_cookie}":                             1,
		"apiguard_synproxy_handshakes_total{result=accepted}":                                  19,
		"apiguard_synproxy_handshakes_total{result=accept_failed}":                             2,
		"apiguard_synproxy_handshakes_total{result=unavailable}":                               4,
		"apiguard_synproxy_auto_on_total":                                                      3,
		"apiguard_synproxy_proven_total":                                                       18,
		"apiguard_synproxy_on{service=api}":                                                    1,
		"apiguard_synproxy_on{service=admin}":                                                  0,
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("missing %s", k)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	// every (action, reason) pair is exported, so rate() starts from zero
	n := 0
	for k := range got {
		if strings.HasPrefix(k, "apiguard_packets_total{") {
			n++
		}
	}
	if n != 3*len(loader.Reasons()) {
		t.Errorf("%d packet series, want %d", n, 3*len(loader.Reasons()))
	}
	for _, k := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := got[k]; !ok {
			t.Errorf("missing %s (Go and process collectors)", k)
		}
	}
}

// No label may carry a client address, and every family stays small.
func TestLabelsBounded(t *testing.T) {
	got := sample(t, newTestRegistry(t, fakeSources()))
	ip := regexp.MustCompile(`=\d+\.\d+\.\d+\.\d+|=[0-9a-f]*:[0-9a-f:]*`)
	perFamily := map[string]int{}
	for k := range got {
		if ip.MatchString(k) {
			t.Errorf("address in a label: %s", k)
		}
		perFamily[strings.SplitN(k, "{", 2)[0]]++
	}
	for fam, n := range perFamily {
		if strings.HasPrefix(fam, "apiguard_") && n > 3*len(loader.Reasons()) {
			t.Errorf("%s has %d series", fam, n)
		}
	}
}

func TestLint(t *testing.T) {
	c, err := NewCollector(fakeSources())
	if err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func scrape(t *testing.T, reg *prometheus.Registry) (int, []byte) {
	t.Helper()
	srv := httptest.NewServer(Handler(reg, nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestScrapePassesPromtool(t *testing.T) {
	code, body := scrape(t, newTestRegistry(t, fakeSources()))
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	for _, want := range []string{
		"# HELP apiguard_packets_total Packets the datapath judged",
		"# TYPE apiguard_packets_total counter",
		`apiguard_packets_total{action="drop",reason="client_pps"} 1500`,
		"# TYPE apiguard_bans_active gauge",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	promcheck.Metrics(t, body)
}

// A failing map read is logged and counted; the rest of the scrape is served.
func TestScrapeSurvivesReadError(t *testing.T) {
	src := fakeSources()
	src.Datapath.(*fakeDatapath).usageErr = errors.New("map gone")
	reg := newTestRegistry(t, src)
	code, body := scrape(t, reg)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if !strings.Contains(string(body), `apiguard_packets_total{action="drop",reason="client_pps"} 1500`) {
		t.Fatal("the rest of the scrape was lost")
	}
	if strings.Contains(string(body), "apiguard_map_entries{") {
		t.Fatal("map entries reported despite the error")
	}
	if !strings.Contains(string(body), "apiguard_scrape_errors_total 1") {
		t.Fatalf("scrape error not counted:\n%s", body)
	}
}

func TestOptionalSources(t *testing.T) {
	if _, err := NewCollector(Sources{}); err == nil {
		t.Fatal("collector without a datapath")
	}
	src := fakeSources()
	src.Events, src.Fanout, src.Detector, src.Daemon = nil, nil, nil, nil
	got := sample(t, newTestRegistry(t, src))
	for k := range got {
		for _, absent := range []string{"apiguard_events_total", "apiguard_clients_flagged_total", "apiguard_attach_info", "apiguard_bans_total"} {
			if strings.HasPrefix(k, absent) {
				t.Errorf("%s reported without its source", k)
			}
		}
	}
	if got["apiguard_packets_total{action=drop,reason=client_pps}"] != 1500 {
		t.Fatal("datapath metrics missing")
	}
}

func TestHandlerIndex(t *testing.T) {
	srv := httptest.NewServer(Handler(prometheus.NewRegistry(), nil))
	defer srv.Close()
	for path, want := range map[string]int{"/": 200, "/nope": 404, "/healthz": 404} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

type fakeSynProxy struct{}

func (fakeSynProxy) SynProxyStats() (loader.SynProxyStats, error) {
	return loader.SynProxyStats{CookieOK: 20, KernelCookie: 1, Accepted: 19, AcceptFailed: 2, AutoOn: 3, Proven: 18, Unavailable: 4}, nil
}

func (fakeSynProxy) SynProxyServicesOn() (map[string]bool, error) {
	return map[string]bool{"api": true, "admin": false}, nil
}
