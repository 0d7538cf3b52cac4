package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/spf13/cobra"
)

func newBanCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ban",
		Short: "Add, remove and list bans",
	}
	cmd.AddCommand(newBanAddCmd(g), newBanRmCmd(g), newBanLsCmd(g), newBanImportCmd(g), newBanFlushCmd(g))
	return cmd
}

func newBanAddCmd(g *globals) *cobra.Command {
	var (
		ttl, reason string
		force       bool
	)
	cmd := &cobra.Command{
		Use:   "add ADDR|CIDR",
		Short: "Drop all traffic from an address or CIDR (a bare address is a /32 or /128)",
		Long: `Drop all traffic from an address or CIDR until the ban expires or is removed.
Without --ttl the ban lasts the policy's bans.ttl; --ttl 0 bans until removed.
The kernel checks the expiry itself: a ban lapses on time even without the daemon.
A ban covering an address that is never banned (the host's own addresses, its
default gateways and resolvers, the CrowdSec LAPI, trusted proxies, the policy's
neverBan list) is refused unless --force is given.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// checked here too, so a typo is reported without a daemon
			p, err := control.ParsePrefix(args[0])
			if err != nil {
				return fmt.Errorf("ban add: %w", err)
			}
			c, ctx, done := g.client(cmd)
			defer done()
			b, err := c.AddBan(ctx, control.BanRequest{Prefix: p.String(), TTL: ttl, Reason: reason, Force: force})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.output == outputJSON {
				return printJSON(out, b)
			}
			if b.Expires == nil {
				fmt.Fprintf(out, "banned %s until removed\n", b.Prefix)
			} else {
				fmt.Fprintf(out, "banned %s until %s (%s)\n", b.Prefix, b.Expires.Local().Format(time.RFC3339), time.Until(*b.Expires).Round(time.Second))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ttl, "ttl", "", "how long the ban lasts, e.g. 10m or 2h (default: the policy's bans.ttl; 0: until removed)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown by 'ban ls'")
	cmd.Flags().BoolVar(&force, "force", false, "ban even an address that is never banned (the host's own, its gateway, ...)")
	return cmd
}

func newBanRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ADDR|CIDR",
		Aliases: []string{"remove", "del"},
		Short:   "Lift the ban on exactly this address or CIDR",
		Args:    cobra.ExactArgs(1),
		// the bans in force, from the daemon
		ValidArgsFunction: completeBans,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := control.ParsePrefix(args[0])
			if err != nil {
				return fmt.Errorf("ban rm: %w", err)
			}
			c, ctx, done := g.client(cmd)
			defer done()
			if err := c.RemoveBan(ctx, p.String()); err != nil {
				return err
			}
			if g.output == outputJSON {
				return printJSON(cmd.OutOrStdout(), map[string]string{"unbanned": p.String()})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "unbanned %s\n", p)
			return nil
		},
	}
}

func newBanLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the bans in force",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done := g.client(cmd)
			defer done()
			bans, err := c.Bans(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.output == outputJSON {
				if bans == nil {
					bans = []control.Ban{}
				}
				return printJSON(out, bans)
			}
			if len(bans) == 0 {
				fmt.Fprintln(out, "no bans")
				return nil
			}
			return banTable(out, bans, time.Now())
		},
	}
}

func banTable(w io.Writer, bans []control.Ban, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tSOURCE\tEXPIRES\tCREATED\tREASON")
	for _, b := range bans {
		expires := "never"
		if b.Expires != nil {
			expires = "in " + b.Expires.Sub(now).Round(time.Second).String()
		}
		created := "-"
		if b.Created != nil {
			created = b.Created.Local().Format(time.DateTime)
		}
		reason := b.Reason
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Prefix, b.Source, expires, created, reason)
	}
	return tw.Flush()
}
