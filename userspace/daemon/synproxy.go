package daemon

import (
	"fmt"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/control"
)

// The SYN proxy (docs/synproxy.md): a policy that turns it on for a service
// is applied only where the host can run it, and the datapath gets the host's
// TCP settings before the policy: its SYN-ACKs must agree with them.

// proxied lists the services of p whose proxy the kernel runs (not in
// monitor mode), and their ports.
func proxied(p *loader.Policy) (svcs []loader.Service, ports []loader.PortRange) {
	if p == nil || p.Monitor {
		return nil, nil
	}
	for _, s := range p.Services {
		if s.SynProxy != loader.SynProxyOff && !s.Monitor {
			svcs = append(svcs, s)
			ports = append(ports, s.Ports...)
		}
	}
	return svcs, ports
}

// prepareSynProxy checks the host for a policy with a proxied service and
// loads its TCP settings, read afresh at each apply (a SIGHUP after a sysctl
// change picks it up). Called under polMu, in the daemon's network namespace,
// which is the guarded interfaces'.
func (d *Daemon) prepareSynProxy(p *loader.Policy) error {
	svcs, ports := proxied(p)
	if len(svcs) == 0 {
		return nil
	}
	host, err := loader.CheckSynProxy(d.cfg.Ifaces, ports)
	if err != nil {
		return fmt.Errorf("service %s has synProxy %s, which this host cannot run: %w", svcs[0].Name, svcs[0].SynProxy, err)
	}
	if err := d.dp.SetSynProxyHost(host); err != nil {
		return err
	}
	d.log.Info("SYN proxy ready", "services", len(svcs), "mss4", host.MSS4, "mss6", host.MSS6,
		"wscale", host.WindowScale, "sack", host.SACK, "timestamps", host.Timestamps)
	return nil
}

// synProxyStatus is the proxy's part of `apiguard status`; nil when no
// service of the policy in force has one.
func (d *Daemon) synProxyStatus() (*control.SynProxyStatus, error) {
	d.polMu.Lock()
	var compiled *loader.Policy
	if d.pol != nil {
		compiled = d.pol.compiled
	}
	d.polMu.Unlock()
	svcs, _ := proxied(compiled)
	if len(svcs) == 0 {
		return nil, nil
	}
	ids := make([]uint32, 0, len(svcs))
	for _, s := range svcs {
		if s.SynProxy == loader.SynProxyAuto {
			ids = append(ids, s.ID)
		}
	}
	on, err := d.dp.SynProxyOn(ids)
	if err != nil {
		return nil, err
	}
	stats, err := d.dp.SynProxyStats()
	if err != nil {
		return nil, err
	}
	st := &control.SynProxyStatus{CookieOK: stats.CookieOK, KernelCookie: stats.KernelCookie,
		Accepted: stats.Accepted, AcceptFailed: stats.AcceptFailed, AutoOn: stats.AutoOn, Proven: stats.Proven}
	for _, s := range svcs {
		ss := control.SynProxyService{Service: s.Name, Mode: s.SynProxy.String(), On: s.SynProxy == loader.SynProxyAlways}
		if until := on[s.ID]; !until.IsZero() && until.After(time.Now()) {
			ss.On, ss.Until = true, until
		}
		st.Services = append(st.Services, ss)
	}
	return st, nil
}

// SynProxyStats is the proxy's counters (metrics.SynProxy).
func (d *Daemon) SynProxyStats() (loader.SynProxyStats, error) { return d.dp.SynProxyStats() }

// SynProxyServicesOn says, for each service of the policy in force with
// synProxy, whether its SYNs are answered now (metrics.SynProxy).
func (d *Daemon) SynProxyServicesOn() (map[string]bool, error) {
	st, err := d.synProxyStatus()
	if err != nil || st == nil {
		return nil, err
	}
	out := make(map[string]bool, len(st.Services))
	for _, s := range st.Services {
		out[s.Service] = s.On
	}
	return out, nil
}
