package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/crowdsec"
	"github.com/spf13/cobra"
)

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Interfaces, policy, counters and map fill levels of the running daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done := g.client(cmd)
			defer done()
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if g.output == outputJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			return statusText(cmd.OutOrStdout(), st, time.Now())
		},
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func statusText(w io.Writer, st *control.Status, now time.Time) error {
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "WARNING: %s\n\n", warn)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "daemon:\tapiguard %s, pid %d, up %s\n", st.Version, st.PID, ago(now, st.StartedAt))
	pins := st.PinDir
	if st.Adopted {
		pins += " (adopted from an earlier run)"
	}
	fmt.Fprintf(tw, "pins:\t%s\n", pins)
	if st.Policy.Generation == 0 {
		fmt.Fprintf(tw, "policy:\tnone applied\n")
	} else {
		fmt.Fprintf(tw, "policy:\t%q, generation %d, applied %s ago\n", st.Policy.Name, st.Policy.Generation, ago(now, st.Policy.AppliedAt))
	}
	if t := st.Confirm; t != nil {
		fmt.Fprintf(tw, "ON TRIAL:\tpolicy %q reverts to %q in %s unless 'apiguard policy confirm'\n",
			t.Policy, t.RevertTo, max(t.Deadline.Sub(now), 0).Round(time.Second))
	}
	fmt.Fprintf(tw, "bans:\t%d\n", st.Bans)
	d := st.Datapath
	fmt.Fprintf(tw, "datapath:\tclient inserts %d (%d failed), prefix inserts %d (%d failed)\n",
		d.ClientInserts, d.ClientInsertFailures, d.PrefixInserts, d.PrefixInsertFailures)
	fmt.Fprintf(tw, "events:\t%d sent, %d suppressed, %d lost\n", d.EventsSent, d.EventsSuppressed, d.EventsLost)
	fmt.Fprintf(tw, "connections:\t%d established, %d half-open to capped services; flows %d new, %d picked up, %d timed out, %d refused for room\n",
		d.ConnsEstablished, d.ConnsHalfOpen, d.FlowsNew, d.FlowsAdopted, d.FlowsExpired, d.FlowTableFull)
	fmt.Fprintf(tw, "proven:\t%d SYNs of proven clients skipped a shared connection limit\n", d.ProvenSYNs)
	if sp := st.SynProxy; sp != nil {
		synProxyText(tw, sp, now)
	}
	if cs := st.CrowdSec; cs != nil {
		crowdSecText(tw, cs, now)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tMODE\tADOPTED")
	for _, i := range st.Interfaces {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", i.Name, i.Mode, yesNo(i.Adopted))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if len(st.Services) > 0 {
		fmt.Fprintln(w)
		if err := servicesText(w, st.Services); err != nil {
			return err
		}
	}

	fmt.Fprintln(w)
	if len(st.Counters) == 0 {
		fmt.Fprintln(w, "no packets counted yet")
	} else {
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "ACTION\tREASON\tPACKETS\tBYTES")
		for _, c := range st.Counters {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", c.Action, c.Reason, c.Packets, humanBytes(c.Bytes))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "MAP\tENTRIES\tCAPACITY\tFILL")
	for _, m := range st.Maps {
		fill := 0.0
		if m.Capacity > 0 {
			fill = 100 * float64(m.Entries) / float64(m.Capacity)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f%%\n", m.Name, m.Entries, m.Capacity, fill)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.AccessLogs) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCESS LOG\tFORMAT\tLINES\tPARSE ERRORS\tSIGNALS\tLAG\tLAST LINE\tPROBLEM")
	for _, l := range st.AccessLogs {
		last := "never"
		if !l.LastLine.IsZero() {
			last = ago(now, l.LastLine).String() + " ago"
		}
		problem := l.Error
		if problem == "" {
			problem = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", l.Path, l.Format, l.Lines, l.ParseErrors, l.Signals,
			humanBytes(uint64(max(l.LagBytes, 0))), last, problem)
	}
	return tw.Flush()
}

// servicesText is a line per service: the kernel's per-service counters of
// what it passed and dropped (or in monitor mode would have dropped), then
// the clients it tracks for the service now and how many of them saw drops.
func servicesText(w io.Writer, svcs []control.ServiceStatus) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tPORTS\tMODE\tPASSED\tPASSED BYTES\tDROPPED\tDROPPED BYTES\tCLIENTS\tCLIENTS DROPPED")
	var monitored []string
	for _, s := range svcs {
		if s.Mode == "monitor" {
			monitored = append(monitored, s.Name)
		}
		drops, dropBytes := dropsText(s)
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\n", s.Name, s.Protocol, s.Ports, s.Mode,
			s.Passed.Packets, humanBytes(s.Passed.Bytes), drops, dropBytes, s.Clients, s.ClientsDropped)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(monitored) > 0 {
		fmt.Fprintf(w, "monitor mode: %s count what enforcing would drop and pass it; 'apiguard clients top --service NAME --by drops' shows whom\n",
			strings.Join(monitored, ", "))
	}
	return nil
}

// dropsText is a service's drops and their bytes: in monitor mode those
// enforcing would have made ("N would"), and any drop on top; a service
// back in enforce mode keeps the would-drops of its trial beside its drops.
func dropsText(s control.ServiceStatus) (packets, bytes string) {
	var ps, bs []string
	if s.Mode != "monitor" || s.Dropped.Packets > 0 {
		ps = append(ps, fmt.Sprint(s.Dropped.Packets))
		bs = append(bs, humanBytes(s.Dropped.Bytes))
	}
	if s.Mode == "monitor" || s.WouldDrop.Packets > 0 {
		ps = append(ps, fmt.Sprintf("%d would", s.WouldDrop.Packets))
		bs = append(bs, humanBytes(s.WouldDrop.Bytes)+" would")
	}
	return strings.Join(ps, " + "), strings.Join(bs, " + ")
}

// synProxyText is the SYN proxy's lines of `apiguard status`: whether each
// proxied service answers SYNs now, and what the handshakes did.
func synProxyText(tw io.Writer, sp *control.SynProxyStatus, now time.Time) {
	var svcs []string
	for _, s := range sp.Services {
		state := "off"
		switch {
		case s.On && !s.Until.IsZero():
			state = fmt.Sprintf("ON for %s more (connection limit exhausted)", s.Until.Sub(now).Round(time.Second))
		case s.On:
			state = "on"
		}
		svcs = append(svcs, fmt.Sprintf("%s %s: %s", s.Service, s.Mode, state))
	}
	fmt.Fprintf(tw, "synproxy:\t%s\n", strings.Join(svcs, "; "))
	fmt.Fprintf(tw, "synproxy:\t%d valid cookies (%d proved their source), %d of the kernel's; %d handed over, %d refused by the kernel; auto turned on %d times\n",
		sp.CookieOK, sp.Proven, sp.KernelCookie, sp.Accepted, sp.AcceptFailed, sp.AutoOn)
	if sp.AcceptFailed > 0 {
		fmt.Fprintf(tw, "synproxy:\tWARNING: the kernel refused handshakes (an MPTCP listener, or a TCP sysctl changed since the policy was applied: reload it)\n")
	}
}

// crowdSecText is the CrowdSec lines of `apiguard status`.
func crowdSecText(tw io.Writer, cs *control.CrowdSec, now time.Time) {
	if cs.Error != "" {
		fmt.Fprintf(tw, "crowdsec:\t%s: NOT RUNNING: %s\n", cs.LAPI, cs.Error)
		return
	}
	if b := cs.Bouncer; b != nil {
		state := "reachable"
		switch {
		case b.Pulls == 0:
			state = "not pulled yet"
		case !b.Reachable:
			state = "UNREACHABLE (bans in the kernel stay until they expire): " + b.LastError
		}
		last := "never"
		if !b.LastSuccess.IsZero() {
			last = ago(now, b.LastSuccess).String() + " ago"
		}
		fmt.Fprintf(tw, "crowdsec:\t%s %s; last good pull %s; %d decisions on %d prefixes; %d pull errors, %d outages\n",
			cs.LAPI, state, last, b.Decisions, b.Active, b.PullErrors, b.Outages)
	} else {
		fmt.Fprintf(tw, "crowdsec:\t%s (reporting only)\n", cs.LAPI)
	}
	if cs.Insecure {
		fmt.Fprintf(tw, "crowdsec:\tWARNING: plain HTTP to a LAPI that is not this host (keys readable, decisions injectable on the path)\n")
	}
	if b := cs.Bouncer; b != nil && len(b.Refused) > 0 {
		var parts []string
		for _, r := range crowdsec.RefusedReasons {
			if n := b.Refused[r]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, strings.ReplaceAll(r, "_", " ")))
			}
		}
		fmt.Fprintf(tw, "crowdsec:\tdecisions refused: %s\n", strings.Join(parts, ", "))
	}
	if cs.MapFull > 0 {
		fmt.Fprintf(tw, "crowdsec:\t%d decisions NOT ENFORCED: the kernel's ban map is full\n", cs.MapFull)
	}
	if r := cs.Reporter; r != nil {
		line := fmt.Sprintf("%d sent, %d queued, %d dropped, %d errors as machine %s", r.Sent, r.Queued, r.Dropped, r.Errors, r.MachineID)
		if r.LastError != "" {
			line += "; last error: " + r.LastError
		}
		fmt.Fprintf(tw, "crowdsec reports:\t%s\n", line)
	}
}
