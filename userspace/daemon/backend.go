package daemon

import (
	"cmp"
	"context"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/policy"
)

// The daemon is the control server's backend.
var _ control.Backend = (*Daemon)(nil)

// Status gathers the daemon's state from memory and the kernel's maps.
func (d *Daemon) Status(context.Context) (*control.Status, error) {
	st := &control.Status{
		Version:   d.cfg.Version,
		PID:       os.Getpid(),
		StartedAt: d.started,
		PinDir:    d.cfg.PinDir,
		Adopted:   d.dp.Adopted(),
	}
	if d.pinWarning != "" {
		st.Warnings = append(st.Warnings, d.pinWarning)
	}
	st.Warnings = append(st.Warnings, d.attachWarnings...)
	if w := d.trialWarning(); w != "" {
		st.Warnings = append(st.Warnings, w)
	}
	for _, a := range d.attachments {
		st.Interfaces = append(st.Interfaces, control.Interface{Name: a.Iface, Mode: string(a.Mode), Adopted: a.Adopted})
	}
	d.polMu.Lock()
	if d.pol != nil {
		st.Policy = control.PolicySummary{Name: d.pol.pol.Name, Generation: d.pol.generation, AppliedAt: d.pol.appliedAt}
	}
	d.polMu.Unlock()

	counters, err := d.dp.Counters()
	if err != nil {
		return nil, err
	}
	for _, c := range counters {
		if c.Packets > 0 {
			st.Counters = append(st.Counters, control.Counter{Action: c.Action.String(), Reason: c.Reason.String(), Packets: c.Packets, Bytes: c.Bytes})
		}
	}
	usage, err := d.dp.Usage()
	if err != nil {
		return nil, err
	}
	for _, u := range usage {
		st.Maps = append(st.Maps, control.MapUsage{Name: u.Name, Entries: u.Entries, Capacity: u.Capacity})
	}
	stats, err := d.dp.Stats()
	if err != nil {
		return nil, err
	}
	st.Datapath = control.DatapathStats{
		ClientInserts: stats.ClientInserts, ClientInsertFailures: stats.ClientInsertFailures,
		PrefixInserts: stats.PrefixInserts, PrefixInsertFailures: stats.PrefixInsertFailures,
		EventsSent: stats.EventsSent, EventsSuppressed: stats.EventsSuppressed, EventsLost: stats.EventsLost,
		FlowsNew: stats.FlowsNew, FlowsAdopted: stats.FlowsAdopted, FlowsExpired: stats.FlowsExpired, FlowTableFull: stats.FlowTableFull,
		ProvenSYNs: stats.ProvenSYNs,
	}
	conns, err := d.dp.ServiceConns()
	if err != nil {
		return nil, err
	}
	for _, c := range conns {
		st.Datapath.ConnsEstablished += uint64(c.Established)
		st.Datapath.ConnsHalfOpen += uint64(c.HalfOpen)
	}
	bans, err := d.listBans(time.Now())
	if err != nil {
		return nil, err
	}
	st.Bans = len(bans)
	st.CrowdSec = d.crowdSecStatus()
	if st.Services, err = d.serviceStats(); err != nil {
		return nil, err
	}
	if err := d.addServiceCounters(st.Services); err != nil {
		return nil, err
	}
	st.Confirm = d.pendingConfirm()
	st.AccessLogs = accessLogStatus(d.accessLogStats())
	if st.SynProxy, err = d.synProxyStatus(); err != nil {
		return nil, err
	}
	return st, nil
}

// Policy returns the policy in force and its text.
func (d *Daemon) Policy(context.Context) (*control.PolicyInfo, error) {
	d.polMu.Lock()
	defer d.polMu.Unlock()
	if d.pol == nil {
		return nil, control.NotFoundf("no policy applied yet")
	}
	return &control.PolicyInfo{
		PolicySummary: control.PolicySummary{Name: d.pol.pol.Name, Generation: d.pol.generation, AppliedAt: d.pol.appliedAt},
		Path:          d.pol.path,
		Source:        string(d.pol.source),
	}, nil
}

// ApplyPolicy validates an uploaded policy and makes it the policy in force.
// It lasts until the next SIGHUP or restart, which read the --policy file.
func (d *Daemon) ApplyPolicy(_ context.Context, up *control.PolicyUpload) (*control.ApplyResult, error) {
	p, err := parseUpload(up)
	if err == nil {
		var res *control.ApplyResult
		if res, err = d.applyUpload(p, up); err == nil {
			return res, nil
		}
	}
	d.logPolicyRefusal(up.Name, err)
	return nil, err
}

// DiffPolicy says what applying an uploaded policy would change.
func (d *Daemon) DiffPolicy(_ context.Context, up *control.PolicyUpload) (*control.DiffResult, error) {
	p, err := parseUpload(up)
	if err != nil {
		return nil, err
	}
	d.polMu.Lock()
	var old *policy.Policy
	if d.pol != nil {
		old = d.pol.pol
	}
	changes := policy.Diff(old, p.pol)
	d.polMu.Unlock()
	res := &control.DiffResult{Name: p.pol.Name, Changes: changes, Warnings: []string{}}
	for _, w := range p.pol.Warnings {
		res.Warnings = append(res.Warnings, w.Error())
	}
	if res.Changes == nil {
		res.Changes = []string{}
	}
	return res, nil
}

// Bans lists the bans in force.
func (d *Daemon) Bans(context.Context) ([]control.Ban, error) {
	return d.listBans(time.Now())
}

// AddBan bans an address or CIDR by hand. Without a TTL it takes the policy's
// first-offence ban TTL.
func (d *Daemon) AddBan(_ context.Context, nb control.NewBan) (*control.Ban, error) {
	if why, ok := d.neverBan(nb.Prefix); ok && !nb.Force {
		return nil, control.Refusedf("%v covers an address that is never banned: %s; --force (\"force\": true) bans it anyway", nb.Prefix.Masked(), why)
	}
	ttl := nb.TTL
	if nb.DefaultTTL {
		d.polMu.Lock()
		if d.pol != nil {
			ttl = d.pol.pol.Spec.Bans.TTL
		}
		d.polMu.Unlock()
	}
	b, err := d.Ban(nb.Prefix, ttl, nb.Reason, SourceManual)
	if err != nil {
		return nil, err
	}
	d.tel.manualBans.Add(1)
	return &b, nil
}

// RemoveBan lifts a ban.
func (d *Daemon) RemoveBan(_ context.Context, p netip.Prefix) error {
	return d.Unban(p)
}

// TopClients sums the kernel's per-client, per-service state by client key and
// returns the n largest by the given key.
func (d *Daemon) TopClients(ctx context.Context, n int, by control.SortKey, service string) (*control.TopClients, error) {
	var only uint32
	if service != "" {
		id, err := d.serviceID(service)
		if err != nil {
			return nil, err
		}
		only = id
	}
	sums := map[netip.Prefix]*control.ClientSummary{}
	err := d.dp.Clients(func(c loader.Client) error {
		if err := ctx.Err(); err != nil {
			return err // the caller went away: stop walking a large table
		}
		if only != 0 && c.Service != only {
			return nil
		}
		s, ok := sums[c.Addr]
		if !ok {
			s = &control.ClientSummary{Addr: c.Addr.String(), FirstSeen: c.FirstSeen, LastSeen: c.LastSeen}
			sums[c.Addr] = s
		}
		s.Packets += c.Packets
		s.Bytes += c.Bytes
		s.Drops += c.Drops
		s.Services++
		if c.FirstSeen.Before(s.FirstSeen) {
			s.FirstSeen = c.FirstSeen
		}
		if c.LastSeen.After(s.LastSeen) {
			s.LastSeen = c.LastSeen
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	all := make([]*control.ClientSummary, 0, len(sums))
	for _, s := range sums {
		all = append(all, s)
	}
	key := func(s *control.ClientSummary) uint64 {
		switch by {
		case control.ByBytes:
			return s.Bytes
		case control.ByDrops:
			return s.Drops
		}
		return s.Packets
	}
	slices.SortFunc(all, func(a, b *control.ClientSummary) int {
		if c := cmp.Compare(key(b), key(a)); c != 0 {
			return c
		}
		return cmp.Compare(a.Addr, b.Addr)
	})
	top := &control.TopClients{By: by, Service: service, Tracked: len(all), Clients: make([]control.ClientSummary, 0, min(n, len(all)))}
	for _, s := range all[:min(n, len(all))] {
		top.Clients = append(top.Clients, *s)
	}
	return top, nil
}
