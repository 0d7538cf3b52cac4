package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/spf13/cobra"
)

func newEventsCmd(g *globals) *cobra.Command {
	var (
		n      int
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "events [--follow] [-n N]",
		Short: "The datapath's latest events: limits tripped, deny and ban hits, scans",
		Long: `Print the latest events the datapath reported (the kernel sends one per client
and kind of event per second at most). With --follow, keep printing new ones
until interrupted. -o json prints one JSON object per line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 0 || n > control.MaxEvents {
				return fmt.Errorf("-n %d: want 0 to %d", n, control.MaxEvents)
			}
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			emit := eventPrinter(out, errOut, g.output == outputJSON)
			if follow {
				// no call timeout: a follow lasts until interrupted
				c := control.NewClient(g.socket)
				defer c.Close()
				err := c.FollowEvents(cmd.Context(), n, emit)
				if errors.Is(err, context.Canceled) {
					return nil
				}
				return err
			}
			c, ctx, done := g.client(cmd)
			defer done()
			evs, err := c.Events(ctx, n)
			if err != nil {
				return err
			}
			if len(evs) == 0 && g.output != outputJSON {
				fmt.Fprintln(out, "no events yet")
			}
			for _, ev := range evs {
				if err := emit(ev); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&n, "n", "n", control.DefaultEvents, "how many of the latest events to print first")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	return cmd
}

// eventPrinter prints one event per line: a readable line, or compact JSON.
// Missed events are reported on stderr in text mode and as their own line in JSON.
func eventPrinter(out, errOut io.Writer, asJSON bool) func(control.Event) error {
	enc := json.NewEncoder(out)
	return func(ev control.Event) error {
		if asJSON {
			if err := enc.Encode(ev); err != nil {
				return fmt.Errorf("write JSON: %w", err)
			}
			return nil
		}
		if ev.Type == control.MissedEvent {
			fmt.Fprintf(errOut, "apiguard: missed %d events (reading too slowly)\n", ev.Count)
			return nil
		}
		if _, err := fmt.Fprintln(out, ev.String()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
}

func newClientsFlaggedCmd(g *globals) *cobra.Command {
	var active bool
	cmd := &cobra.Command{
		Use:   "flagged [--active]",
		Short: "Clients the detector flagged, with reason, evidence and ban",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done := g.client(cmd)
			defer done()
			flags, err := c.Flagged(ctx, active)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.output == outputJSON {
				return printJSON(out, flags)
			}
			if len(flags) == 0 {
				fmt.Fprintln(out, "no flagged clients")
				return nil
			}
			return flagTable(out, flags, time.Now())
		},
	}
	cmd.Flags().BoolVar(&active, "active", false, "only clients whose behaviour is still going on")
	return cmd
}

func flagTable(w io.Writer, flags []control.Flag, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tREASON\tACTIVE\tPROVEN\tFIRST SEEN\tLAST SEEN\tTIMES\tOUTCOME\tEVIDENCE")
	for _, f := range flags {
		act := "no"
		if f.Active {
			act = "yes"
		}
		// a source proves itself with a completed TCP handshake; a service
		// (many sources) is no source
		proven := "unproven"
		switch {
		case !f.Prefix.IsValid():
			proven = "-"
		case f.Proven:
			proven = "proven"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%s ago\t%d\t%s\t%s\n", f.Subject(), f.Reason, act, proven,
			ago(now, f.FirstSeen), ago(now, f.LastSeen), f.Episodes, outcome(f, now), f.Evidence.Summary)
	}
	return tw.Flush()
}

// outcome is the ban column: short enough for a table.
func outcome(f control.Flag, now time.Time) string {
	b := f.Ban
	switch {
	case b.Banned && b.Expires.After(now):
		return fmt.Sprintf("banned %v (%s left)", b.TTL, b.Expires.Sub(now).Round(time.Second))
	case b.Banned:
		return fmt.Sprintf("was banned %v", b.TTL)
	case b.Error != "":
		return "ban failed: " + b.Error
	case b.Skipped != "":
		return "not banned: " + strings.TrimSpace(b.Skipped)
	}
	return "flagged"
}
