// Package metrics exposes apiguard to Prometheus. A custom Collector reads the
// datapath's maps and the daemon's counters when Prometheus scrapes, so there
// is no polling loop and no copy to keep in sync. Labels are bounded sets
// (actions, reasons, event types, map names, interfaces): never a client address.
package metrics

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/crowdsec"
	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/apiguard/apiguard/userspace/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is where the daemon serves /metrics unless told otherwise:
// loopback, because the figures describe who attacks the host.
const DefaultAddr = "127.0.0.1:9470"

// Datapath is what the collector reads from the kernel (loader.Datapath).
type Datapath interface {
	Counters() ([]loader.Counter, error)
	Stats() (loader.Stats, error)
	Usage() ([]loader.MapUsage, error)
	Bans() ([]loader.Ban, error)
	Generation() uint32
}

// EventReader is the ring-buffer reader (events.Reader).
type EventReader interface{ Stats() events.Stats }

// Fanout is the subscriber hub (events.Hub).
type Fanout interface{ Dropped() uint64 }

// Detector is the detector (detect.Detector).
type Detector interface{ Totals() detect.Totals }

// Daemon is what only the daemon knows.
type Daemon interface {
	// ReloadErrors counts policy reloads that were refused.
	ReloadErrors() uint64
	// ManualBans counts bans made by hand (the control API).
	ManualBans() uint64
	// Attachments lists the interfaces the guard is attached to.
	Attachments() []loader.Attachment
	// NeverBanEntries is the size of the never-ban set; NeverBanCrowdSec
	// counts the CrowdSec decisions skipped because they covered it.
	NeverBanEntries() int
	NeverBanCrowdSec() uint64
}

// CrowdSec is the daemon's link to a CrowdSec LAPI. Either stats may be nil:
// that role is not configured.
type CrowdSec interface {
	CrowdSecStats() (*crowdsec.BouncerStats, *crowdsec.ReporterStats)
}

// AccessLog is one followed access log's counters.
type AccessLog struct {
	Path                        string
	Lines, ParseErrors, Signals uint64
	LagBytes                    int64
	// 4xx/5xx lines held against nobody, by why (access_log_ignored_total)
	Stale, Future, AllTrusted, BadHops uint64
	// Problems counts the problems met opening or reading it; Readable is
	// false while one lasts.
	Problems uint64
	Readable bool
}

// SynProxy is the SYN proxy (docs/synproxy.md): its counters, and for each
// service with synProxy whether it answers SYNs now.
type SynProxy interface {
	SynProxyStats() (loader.SynProxyStats, error)
	SynProxyServicesOn() (map[string]bool, error)
}

// Signals is the API layer's input: access logs and the application's reports.
type Signals interface {
	AccessLogs() []AccessLog
	Reports() uint64
}

// ServiceStat is one service of the policy in force and the kernel's
// per-client state summed for it (control.ServiceStatus).
type ServiceStat struct {
	Name, Protocol, Ports string
	Monitor               bool
	Clients               int
	Packets, Bytes, Drops uint64
}

// Services lists the policy's services with their tracked clients' figures.
// They come from a walk of the clients map, so they are read with the other
// walks, at most every WalkEvery.
type Services interface {
	ServiceStats() ([]ServiceStat, error)
}

// ServiceCounter is the kernel's packets and bytes for one service, verdict
// and reason (loader.ServiceCounter).
type ServiceCounter = loader.ServiceCounter

// ServiceCounters is the hook for a datapath that counts packets by service
// as well as by verdict and reason: loader.Datapath does (a per-CPU array
// indexed by service id, action and reason, 64 x 3 x reasons counters,
// bounded by the policy's 63 services and loader.NoService). The collector
// exports apiguard_service_packets_total and
// apiguard_service_bytes_total{service, action, reason} from it.
type ServiceCounters interface {
	ServiceCounters() ([]ServiceCounter, error)
}

// Sources are the collector's inputs. Only Datapath is required: a missing
// source leaves its metrics out rather than reporting made-up zeros.
type Sources struct {
	Datapath Datapath
	Events   EventReader
	Fanout   Fanout
	Detector Detector
	Daemon   Daemon
	CrowdSec CrowdSec
	Signals  Signals
	Services Services
	SynProxy SynProxy
	// Now decides which bans are still active (default time.Now).
	Now func() time.Time
	// WalkEvery is how long the walks of the datapath's maps (entries per
	// map, active bans) are reused: one scrape walks, those within WalkEvery
	// after it reuse its figures. Zero means DefaultWalkEvery; negative, a
	// walk on every scrape.
	WalkEvery time.Duration
}

// DefaultWalkEvery bounds the map walks to one per 5 seconds however often
// the metrics are scraped: with 100k clients and 100k bans a walk reads 300k
// entries (tens of milliseconds of the daemon's CPU), and anyone who can
// reach the metrics address may scrape.
const DefaultWalkEvery = 5 * time.Second

// walk is what one walk of the maps found.
type walk struct {
	at         time.Time
	usage      []loader.MapUsage
	bansActive int
	services   []ServiceStat
	servicesOK bool
}

// Collector reads everything at scrape time; the map walks at most every
// Sources.WalkEvery.
type Collector struct {
	src          Sources
	scrapeErrors atomic.Uint64

	// walkMu is held during a walk: scrapes that come meanwhile wait for it
	// and use its figures rather than walk too.
	walkMu sync.Mutex
	last   *walk
}

const ns = "apiguard"

// names lists every metric the collector exports, for Names.
var names []string

func desc(name, help string, labels ...string) *prometheus.Desc {
	fq := prometheus.BuildFQName(ns, "", name)
	names = append(names, fq)
	return prometheus.NewDesc(fq, help, labels, nil)
}

// Names lists the metrics the collector exports (without the Go and process
// collectors'), so that dashboards and alerting rules can be checked against them.
func Names() []string { return append([]string(nil), names...) }

var (
	descPackets          = desc("packets_total", "Packets the datapath judged, by verdict and reason.", "action", "reason")
	descBytes            = desc("bytes_total", "Bytes of the packets the datapath judged, by verdict and reason.", "action", "reason")
	descEvents           = desc("events_total", "Events read from the ring buffer and decoded, by type.", "type")
	descEventsSent       = desc("events_sent_total", "Events the datapath wrote to the ring buffer.")
	descEventsLost       = desc("events_lost_total", "Events lost: the ring buffer was full (stage ringbuf) or the daemon's queue was (stage queue).", "stage")
	descEventsSuppressed = desc("events_suppressed_total", "Events the datapath held back by its per-client and global throttles.")
	descUndecodable      = desc("events_undecodable_total", "Ring-buffer records that did not decode.")
	descSubscriberDrops  = desc("events_subscriber_dropped_total", "Events that slow followers (apiguard events --follow) missed.")
	descFlagged          = desc("clients_flagged_total", "Flags raised by the detector, by reason.", "reason")
	descBansActive       = desc("bans_active", "Bans in force in the datapath.")
	descBans             = desc("bans_total", "Bans made, by who made them.", "source")
	descBanErrors        = desc("ban_errors_total", "Bans the detector decided but could not apply.")
	descBansWithheld     = desc("bans_withheld_total", "Episodes of ban rules the detector did not ban for, by why: the source never completed a TCP handshake (unproven), it is in the never-ban set (never_ban), the ban-rate cap was reached (rate_cap).", "why")
	descNeverBan         = desc("never_ban_entries", "Prefixes no ban may cover: the host's addresses, gateways and resolvers, the CrowdSec LAPI, trusted proxies, spec.neverBan.")
	descNeverBanCS       = desc("crowdsec_never_ban_skipped_total", "CrowdSec decisions not enforced because they covered the never-ban set.")
	descTracked          = desc("detector_tracked", "What the detector keeps state for, by kind.", "kind")
	descMapEntries       = desc("map_entries", "Entries in the datapath maps that can fill up.", "map")
	descMapCapacity      = desc("map_capacity", "Capacity of the datapath maps that can fill up.", "map")
	descMapInserts       = desc("map_inserts_total", "New entries in the per-client, per-prefix and fragment state maps.", "map")
	descMapInsertFails   = desc("map_insert_failures_total", "Refused inserts into the state maps: those packets skipped that level's limits.", "map")
	descCASContended     = desc("limiter_cas_contended_total", "Limiter updates that gave up after bounded compare-and-swap retries.")
	descProvenSYNs       = desc("proven_syns_total", "SYNs of clients with a completed handshake that skipped their service's shared new-connection limits.")
	descGeneration       = desc("policy_generation", "Generation of the policy in force (0: none applied).")
	descReloadErrors     = desc("policy_reload_errors_total", "Policy reloads refused (the policy in force stayed).")
	descAttach           = desc("attach_info", "The guard's attachments: 1 per interface and mode.", "iface", "mode")
	descScrapeErrors     = desc("scrape_errors_total", "Reads from the datapath that failed during a scrape.")

	descCSUp          = desc("crowdsec_lapi_up", "1 when the latest pull from the CrowdSec LAPI succeeded.")
	descCSPulls       = desc("crowdsec_pulls_total", "Pulls of the CrowdSec LAPI's decision stream, by result.", "result")
	descCSOutages     = desc("crowdsec_outages_total", "Times the CrowdSec LAPI became unreachable (bans in the kernel stayed).")
	descCSLastSuccess = desc("crowdsec_last_pull_success_timestamp_seconds", "When the latest successful pull ended (0: never).")
	descCSActive      = desc("crowdsec_bans_active", "Prefixes banned for CrowdSec decisions.")
	descCSDecisions   = desc("crowdsec_decisions_active", "CrowdSec decisions those bans stand for.")
	descCSChanges     = desc("crowdsec_decision_changes_total", "Kernel writes for CrowdSec decisions (applied, removed) and decisions not enforced (ignored).", "change")
	descCSRefused     = desc("crowdsec_decisions_refused_total", "CrowdSec decisions refused, by reason: too_broad (a range broader than the bouncer's minimum prefix), type (not a ban), scope, value, duration.", "reason")
	descCSReports     = desc("crowdsec_reports_total", "Detector bans reported to the CrowdSec LAPI, by result (sent; dropped: the queue was full or the ban ran out first).", "result")
	descCSReportErrs  = desc("crowdsec_report_errors_total", "Failed attempts to send reports (retried with back-off).")
	descCSQueue       = desc("crowdsec_report_queue", "Reports waiting for the CrowdSec LAPI.")
	// The access logs are the policy's (at most 64): the path is a bounded label.
	descLogLines       = desc("access_log_lines_total", "Lines read from an access log.", "path")
	descLogParseErrors = desc("access_log_parse_errors_total", "Access log lines skipped as malformed or too long.", "path")
	descLogSignals     = desc("access_log_signals_total", "Access log lines that counted for an API detector.", "path")
	descLogLag         = desc("access_log_lag_bytes", "What an access log holds beyond what was read.", "path")
	descLogIgnored     = desc("access_log_ignored_total", "Access log 4xx/5xx lines held against nobody, by reason: stale (older than their rule's window), future (dated beyond the allowed skew), all_trusted (only trusted proxies in the chain), bad_hop (a forwarded hop that does not parse).", "path", "reason")
	descLogProblems    = desc("access_log_errors_total", "Problems opening or reading an access log (missing, no permission, not a regular file), each counted once while it lasts.", "path")
	descLogReadable    = desc("access_log_readable", "1 while an access log is open and read, 0 while it cannot be: the API detectors are blind to it.", "path")
	descReports        = desc("reports_total", "Reports received from the application on the control socket.")

	// Per service: the policy's services (at most 63) are a bounded label.
	descServiceInfo    = desc("service_info", "The policy's services: 1 per service, with its protocol, ports and mode (enforce or monitor).", "service", "protocol", "ports", "mode")
	descServiceClients = desc("service_tracked_clients", "Clients the kernel tracks for a service now.", "service")
	descServicePackets = desc("service_tracked_packets", "Packets of the clients tracked for a service now (a gauge: evicted clients leave the sum).", "service")
	descServiceBytes   = desc("service_tracked_bytes", "Bytes of the clients tracked for a service now.", "service")
	descServiceDrops   = desc("service_tracked_drops", "Drops of the clients tracked for a service now; in monitor mode, the drops enforcing would have made.", "service", "mode")
	// The kernel's counters by service: exported from a datapath that
	// implements ServiceCounters (loader.Datapath does).
	descServiceKPackets = desc("service_packets_total", "Packets the datapath judged for a service, by verdict and reason.", "service", "action", "reason")
	descServiceKBytes   = desc("service_bytes_total", "Bytes of the packets the datapath judged for a service, by verdict and reason.", "service", "action", "reason")
	descSPHandshakes    = desc("synproxy_handshakes_total", "Handshakes of proxied services by result: a valid cookie let on (cookie_ok) or one of the kernel's (kernel_cookie); handed to the listener (accepted), refused by the kernel (accept_failed), or not handed over because the kernel lacks bpf_sk_assign_tcp_reqsk (unavailable).", "result")
	descSPAutoOn        = desc("synproxy_auto_on_total", "Times a synProxy auto service's proxy turned on: its total connection limit ran out.")
	descSPProven        = desc("synproxy_proven_total", "Sources proven by a valid SYN cookie with timestamps.")
	descSPOn            = desc("synproxy_on", "1 while the service's SYNs are answered by the SYN proxy.", "service")
)

// PendingNames are metrics the collector describes but the daemon's sources
// cannot export: the kernel's per-service counters, should loader.Datapath
// stop implementing ServiceCounters. Dashboards and rules need not use them,
// and the metric table says they are pending. The answer follows the loader:
// it implements the hook, so the list is empty.
func PendingNames() []string {
	if _, ok := any((*loader.Datapath)(nil)).(ServiceCounters); ok {
		return nil
	}
	return []string{ns + "_service_packets_total", ns + "_service_bytes_total"}
}

// NewCollector checks the sources and returns the collector.
func NewCollector(src Sources) (*Collector, error) {
	if src.Datapath == nil {
		return nil, fmt.Errorf("metrics: a datapath source is required")
	}
	if src.Now == nil {
		src.Now = time.Now
	}
	if src.WalkEvery == 0 {
		src.WalkEvery = DefaultWalkEvery
	}
	return &Collector{src: src}, nil
}

// Describe sends every descriptor the collector may send.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descPackets, descBytes, descEvents, descEventsSent, descEventsLost, descEventsSuppressed,
		descUndecodable, descSubscriberDrops, descFlagged, descBansActive, descBans, descBanErrors, descBansWithheld, descNeverBan, descNeverBanCS,
		descTracked, descMapEntries, descMapCapacity, descMapInserts, descMapInsertFails,
		descCASContended, descProvenSYNs, descGeneration, descReloadErrors, descAttach, descScrapeErrors,
		descCSUp, descCSPulls, descCSOutages, descCSLastSuccess, descCSActive, descCSDecisions, descCSChanges, descCSRefused,
		descCSReports, descCSReportErrs, descCSQueue,
		descLogLines, descLogParseErrors, descLogSignals, descLogLag, descLogIgnored, descLogProblems, descLogReadable, descReports,
		descServiceInfo, descServiceClients, descServicePackets, descServiceBytes, descServiceDrops, descServiceKPackets, descServiceKBytes,
		descSPHandshakes, descSPAutoOn, descSPProven, descSPOn,
	} {
		ch <- d
	}
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// fail reports a failed read: the scrape goes on with the rest, the failure is
// counted and logged, and the metric shows up as an error in the registry.
func (c *Collector) fail(ch chan<- prometheus.Metric, d *prometheus.Desc, what string, err error) {
	c.scrapeErrors.Add(1)
	slog.Warn("metrics: read failed", "what", what, "err", err)
	ch <- prometheus.NewInvalidMetric(d, fmt.Errorf("read %s: %w", what, err))
}

// Collect reads the sources.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	dp := c.src.Datapath
	if cs, err := dp.Counters(); err != nil {
		c.fail(ch, descPackets, "counters", err)
	} else {
		for _, k := range cs {
			counter(ch, descPackets, k.Packets, k.Action.String(), k.Reason.String())
			counter(ch, descBytes, k.Bytes, k.Action.String(), k.Reason.String())
		}
	}

	ks, kerr := dp.Stats()
	if kerr != nil {
		c.fail(ch, descEventsSent, "datapath stats", kerr)
	} else {
		counter(ch, descEventsSent, ks.EventsSent)
		counter(ch, descEventsSuppressed, ks.EventsSuppressed)
		counter(ch, descEventsLost, ks.EventsLost, "ringbuf")
		counter(ch, descMapInserts, ks.ClientInserts, "clients")
		counter(ch, descMapInserts, ks.PrefixInserts, "prefixes")
		counter(ch, descMapInserts, ks.FragInserts, "fragments")
		counter(ch, descMapInsertFails, ks.ClientInsertFailures, "clients")
		counter(ch, descMapInsertFails, ks.PrefixInsertFailures, "prefixes")
		counter(ch, descCASContended, ks.CASContended)
		counter(ch, descProvenSYNs, ks.ProvenSYNs)
	}
	if r := c.src.Events; r != nil {
		s := r.Stats()
		for _, t := range loader.EventTypes() {
			counter(ch, descEvents, s.ByType[t], t.String())
		}
		counter(ch, descEventsLost, s.Dropped, "queue")
		counter(ch, descUndecodable, s.Undecodable)
	}
	if f := c.src.Fanout; f != nil {
		counter(ch, descSubscriberDrops, f.Dropped())
	}

	if w := c.walked(ch); w != nil {
		for _, u := range w.usage {
			gauge(ch, descMapEntries, float64(u.Entries), u.Name)
			gauge(ch, descMapCapacity, float64(u.Capacity), u.Name)
		}
		gauge(ch, descBansActive, float64(w.bansActive))
		if w.servicesOK {
			for _, sv := range w.services {
				mode := "enforce"
				if sv.Monitor {
					mode = "monitor"
				}
				gauge(ch, descServiceInfo, 1, sv.Name, sv.Protocol, sv.Ports, mode)
				gauge(ch, descServiceClients, float64(sv.Clients), sv.Name)
				gauge(ch, descServicePackets, float64(sv.Packets), sv.Name)
				gauge(ch, descServiceBytes, float64(sv.Bytes), sv.Name)
				gauge(ch, descServiceDrops, float64(sv.Drops), sv.Name, mode)
			}
		}
	}
	if sc, ok := dp.(ServiceCounters); ok {
		if cs, err := sc.ServiceCounters(); err != nil {
			c.fail(ch, descServiceKPackets, "service counters", err)
		} else {
			for _, k := range cs {
				counter(ch, descServiceKPackets, k.Packets, k.Service, k.Action.String(), k.Reason.String())
				counter(ch, descServiceKBytes, k.Bytes, k.Service, k.Action.String(), k.Reason.String())
			}
		}
	}

	if det := c.src.Detector; det != nil {
		t := det.Totals()
		for _, r := range detect.Reasons() {
			counter(ch, descFlagged, t.Flagged[r], string(r))
		}
		counter(ch, descBans, t.Bans, "detector")
		counter(ch, descBanErrors, t.BanErrors)
		counter(ch, descBansWithheld, t.Unproven, "unproven")
		counter(ch, descBansWithheld, t.NeverBan, "never_ban")
		counter(ch, descBansWithheld, t.Capped, "rate_cap")
		gauge(ch, descTracked, float64(t.Clients), "clients")
		gauge(ch, descTracked, float64(t.Prefixes), "prefixes")
		gauge(ch, descTracked, float64(t.Flags), "flags")
	}
	gauge(ch, descGeneration, float64(dp.Generation()))
	if dm := c.src.Daemon; dm != nil {
		counter(ch, descBans, dm.ManualBans(), "manual")
		counter(ch, descReloadErrors, dm.ReloadErrors())
		gauge(ch, descNeverBan, float64(dm.NeverBanEntries()))
		counter(ch, descNeverBanCS, dm.NeverBanCrowdSec())
		seen := map[loader.Attachment]bool{}
		for _, a := range dm.Attachments() {
			a.Adopted = false
			if seen[a] {
				continue
			}
			seen[a] = true
			gauge(ch, descAttach, 1, a.Iface, string(a.Mode))
		}
	}
	if sp := c.src.SynProxy; sp != nil {
		c.collectSynProxy(ch, sp)
	}
	if cs := c.src.CrowdSec; cs != nil {
		collectCrowdSec(ch, cs)
	}
	if sg := c.src.Signals; sg != nil {
		counter(ch, descReports, sg.Reports())
		for _, l := range sg.AccessLogs() {
			counter(ch, descLogLines, l.Lines, l.Path)
			counter(ch, descLogParseErrors, l.ParseErrors, l.Path)
			counter(ch, descLogSignals, l.Signals, l.Path)
			gauge(ch, descLogLag, float64(l.LagBytes), l.Path)
			counter(ch, descLogIgnored, l.Stale, l.Path, "stale")
			counter(ch, descLogIgnored, l.Future, l.Path, "future")
			counter(ch, descLogIgnored, l.AllTrusted, l.Path, "all_trusted")
			counter(ch, descLogIgnored, l.BadHops, l.Path, "bad_hop")
			counter(ch, descLogProblems, l.Problems, l.Path)
			readable := 0.0
			if l.Readable {
				readable = 1
			}
			gauge(ch, descLogReadable, readable, l.Path)
		}
	}
	counter(ch, descScrapeErrors, c.scrapeErrors.Load())
}

// walked returns the latest walk of the maps, walking again when it is older
// than WalkEvery. A failed walk is reported (and not kept): nil.
func (c *Collector) walked(ch chan<- prometheus.Metric) *walk {
	c.walkMu.Lock()
	defer c.walkMu.Unlock()
	now := c.src.Now()
	if c.last != nil && c.src.WalkEvery > 0 && now.Sub(c.last.at) < c.src.WalkEvery && !now.Before(c.last.at) {
		return c.last
	}
	dp := c.src.Datapath
	us, err := dp.Usage()
	if err != nil {
		c.fail(ch, descMapEntries, "map usage", err)
		return nil
	}
	bans, err := dp.Bans()
	if err != nil {
		c.fail(ch, descBansActive, "bans", err)
		return nil
	}
	w := &walk{at: now, usage: us}
	for _, b := range bans {
		if b.Expires.IsZero() || b.Expires.After(now) {
			w.bansActive++
		}
	}
	if sv := c.src.Services; sv != nil {
		// a failed service walk costs its metrics, not the rest of the walk
		if w.services, err = sv.ServiceStats(); err != nil {
			c.fail(ch, descServiceClients, "service stats", err)
		} else {
			w.servicesOK = true
		}
	}
	c.last = w
	return w
}

func collectCrowdSec(ch chan<- prometheus.Metric, cs CrowdSec) {
	b, r := cs.CrowdSecStats()
	if b != nil {
		up := 0.0
		if b.Reachable {
			up = 1
		}
		gauge(ch, descCSUp, up)
		counter(ch, descCSPulls, b.Pulls-b.PullErrors, "ok")
		counter(ch, descCSPulls, b.PullErrors, "error")
		counter(ch, descCSOutages, b.Outages)
		last := 0.0
		if !b.LastSuccess.IsZero() {
			last = float64(b.LastSuccess.UnixNano()) / 1e9
		}
		gauge(ch, descCSLastSuccess, last)
		gauge(ch, descCSActive, float64(b.Active))
		gauge(ch, descCSDecisions, float64(b.Decisions))
		counter(ch, descCSChanges, b.Applied, "applied")
		counter(ch, descCSChanges, b.Removed, "removed")
		counter(ch, descCSChanges, b.Ignored, "ignored")
		// every reason, zeros included: an alert on increase() needs the series
		for _, r := range crowdsec.RefusedReasons {
			counter(ch, descCSRefused, b.Refused[r], r)
		}
	}
	if r != nil {
		counter(ch, descCSReports, r.Sent, "sent")
		counter(ch, descCSReports, r.Dropped, "dropped")
		counter(ch, descCSReportErrs, r.Errors)
		gauge(ch, descCSQueue, float64(r.Queued))
	}
}

// NewRegistry registers the collector with the Go runtime and process collectors.
func NewRegistry(c *Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, col := range []prometheus.Collector{
		c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register metrics collector: %w", err)
		}
	}
	return reg, nil
}

type slogPrinter struct{}

func (slogPrinter) Println(v ...any) { slog.Warn("metrics: " + fmt.Sprint(v...)) }

// Check is one part of the daemon's health (/healthz).
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// HealthFunc reports the daemon's health, one Check per part.
type HealthFunc func() []Check

// healthReport is /healthz's JSON answer.
type healthReport struct {
	Status string  `json:"status"` // ok or failing
	Checks []Check `json:"checks"`
}

// Handler serves the registry at /metrics and health's verdict at /healthz
// (200 when every check passes, 503 otherwise; a nil health serves no
// /healthz). A failed read is logged and the rest of the scrape is served, so
// one bad map never hides every metric.
func Handler(reg *prometheus.Registry, health HealthFunc) http.Handler {
	mux := http.NewServeMux()
	if health != nil {
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			rep := healthReport{Status: "ok", Checks: health()}
			code := http.StatusOK
			for _, c := range rep.Checks {
				if !c.OK {
					rep.Status, code = "failing", http.StatusServiceUnavailable
				}
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(code)
			if err := json.NewEncoder(w).Encode(rep); err != nil {
				slog.Debug("healthz: write the answer", "err", err)
			}
		})
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slogPrinter{},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "apiguard: metrics at /metrics, health at /healthz")
	})
	return mux
}

func (c *Collector) collectSynProxy(ch chan<- prometheus.Metric, sp SynProxy) {
	if st, err := sp.SynProxyStats(); err != nil {
		c.fail(ch, descSPHandshakes, "synproxy stats", err)
	} else {
		counter(ch, descSPHandshakes, st.CookieOK, "cookie_ok")
		counter(ch, descSPHandshakes, st.KernelCookie, "kernel_cookie")
		counter(ch, descSPHandshakes, st.Accepted, "accepted")
		counter(ch, descSPHandshakes, st.AcceptFailed, "accept_failed")
		counter(ch, descSPHandshakes, st.Unavailable, "unavailable")
		counter(ch, descSPAutoOn, st.AutoOn)
		counter(ch, descSPProven, st.Proven)
	}
	on, err := sp.SynProxyServicesOn()
	if err != nil {
		c.fail(ch, descSPOn, "synproxy services", err)
		return
	}
	for name, v := range on {
		b := 0.0
		if v {
			b = 1
		}
		gauge(ch, descSPOn, b, name)
	}
}
