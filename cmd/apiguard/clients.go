package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/spf13/cobra"
)

func newClientsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "clients",
		Short: "Look at the clients the datapath tracks",
	}
	cmd.AddCommand(newClientsTopCmd(g), newClientsFlaggedCmd(g))
	return cmd
}

func newClientsTopCmd(g *globals) *cobra.Command {
	var (
		n       int
		by      string
		service string
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "The busiest clients, summed over all services or for one (--service)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 || n > control.MaxTopN {
				return fmt.Errorf("-n %d: want 1 to %d", n, control.MaxTopN)
			}
			key, err := control.ParseSortKey(by)
			if err != nil {
				return fmt.Errorf("--by: %w", err)
			}
			c, ctx, done := g.client(cmd)
			defer done()
			top, err := c.TopClients(ctx, n, key, service)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.output == outputJSON {
				return printJSON(out, top)
			}
			if len(top.Clients) == 0 {
				fmt.Fprintln(out, "no clients tracked")
				return nil
			}
			return clientTable(out, top, time.Now())
		},
	}
	cmd.Flags().IntVarP(&n, "n", "n", control.DefaultTopN, "how many clients")
	cmd.Flags().StringVar(&by, "by", string(control.ByPackets), "sort by packets, bytes or drops")
	cmd.Flags().StringVar(&service, "service", "", "only this service of the policy (drops of a monitor-mode service are those it would have made)")
	return cmd
}

func clientTable(w io.Writer, top *control.TopClients, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tPACKETS\tBYTES\tDROPS\tSERVICES\tLAST SEEN")
	for _, c := range top.Clients {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%s ago\n", c.Addr, c.Packets, humanBytes(c.Bytes), c.Drops, c.Services, ago(now, c.LastSeen))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	of := "tracked clients"
	if top.Service != "" {
		of = "clients of service " + top.Service
	}
	fmt.Fprintf(w, "%d of %d %s, by %s\n", len(top.Clients), top.Tracked, of, top.By)
	return nil
}

// humanBytes prints a byte count in binary units.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func ago(now, t time.Time) time.Duration {
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second)
}
