package daemon

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/metrics"
)

// serviceStats sums the kernel's per-client state by service, for status
// and the metrics: one walk of the clients map, its cost that of
// `clients top` (tens of milliseconds per 100k clients).
func (d *Daemon) serviceStats() ([]control.ServiceStatus, error) {
	d.polMu.Lock()
	var comp *loader.Policy
	if d.pol != nil {
		comp = d.pol.compiled
	}
	d.polMu.Unlock()
	if comp == nil {
		return nil, nil
	}
	byID := make(map[uint32]*control.ServiceStatus, len(comp.Services))
	out := make([]control.ServiceStatus, len(comp.Services))
	for i, s := range comp.Services {
		mode := "enforce"
		if s.Monitor || comp.Monitor {
			mode = "monitor"
		}
		proto := "tcp"
		if s.Proto == loader.ProtoUDP {
			proto = "udp"
		}
		out[i] = control.ServiceStatus{Name: s.Name, ID: s.ID, Protocol: proto, Ports: portsText(s.Ports), Mode: mode}
		byID[s.ID] = &out[i]
	}
	err := d.dp.Clients(func(c loader.Client) error {
		s := byID[c.Service]
		if s == nil {
			return nil // state of a service the policy no longer has, until the LRU drops it
		}
		s.Clients++
		s.Packets += c.Packets
		s.Bytes += c.Bytes
		s.Drops += c.Drops
		if c.Drops > 0 {
			s.ClientsDropped++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b control.ServiceStatus) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// addServiceCounters adds the kernel's per-service counters (the ones the
// metrics export) to the services of status.
func (d *Daemon) addServiceCounters(svcs []control.ServiceStatus) error {
	if len(svcs) == 0 {
		return nil
	}
	cs, err := d.dp.ServiceCounters()
	if err != nil {
		return fmt.Errorf("read per-service counters: %w", err)
	}
	addServiceCounters(svcs, cs)
	return nil
}

// addServiceCounters sums cs into svcs by service name and action. The
// counters of (none) and of services the policy no longer has are left out:
// status speaks of the policy in force.
func addServiceCounters(svcs []control.ServiceStatus, cs []loader.ServiceCounter) {
	byName := make(map[string]*control.ServiceStatus, len(svcs))
	for i := range svcs {
		byName[svcs[i].Name] = &svcs[i]
	}
	for _, c := range cs {
		s := byName[c.Service]
		if s == nil {
			continue
		}
		var to *control.PacketCount
		switch c.Action {
		case loader.ActionPass:
			to = &s.Passed
		case loader.ActionDrop:
			to = &s.Dropped
		case loader.ActionMonitor:
			to = &s.WouldDrop
		default:
			continue // no other action exists; a new one needs a column first
		}
		to.Packets += c.Packets
		to.Bytes += c.Bytes
	}
}

func portsText(rs []loader.PortRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = strconv.Itoa(int(r.First))
		if r.Last != r.First {
			parts[i] += "-" + strconv.Itoa(int(r.Last))
		}
	}
	return strings.Join(parts, ",")
}

// serviceID finds a service of the policy in force by name.
func (d *Daemon) serviceID(name string) (uint32, error) {
	d.polMu.Lock()
	defer d.polMu.Unlock()
	if d.pol == nil {
		return 0, control.NotFoundf("no policy applied yet")
	}
	var names []string
	for _, s := range d.pol.compiled.Services {
		if s.Name == name {
			return s.ID, nil
		}
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return 0, control.NotFoundf("%s", fmt.Sprintf("no service %q in the policy in force (it has: %s)", name, strings.Join(names, ", ")))
}

// ServiceStats is serviceStats for the metrics.
func (d *Daemon) ServiceStats() ([]metrics.ServiceStat, error) {
	svcs, err := d.serviceStats()
	if err != nil {
		return nil, err
	}
	out := make([]metrics.ServiceStat, len(svcs))
	for i, s := range svcs {
		out[i] = metrics.ServiceStat{Name: s.Name, Protocol: s.Protocol, Ports: s.Ports, Monitor: s.Mode == "monitor",
			Clients: s.Clients, Packets: s.Packets, Bytes: s.Bytes, Drops: s.Drops}
	}
	return out, nil
}
