package main

import (
	"fmt"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/spf13/cobra"
)

func newReportCmd(g *globals) *cobra.Command {
	var weight uint32
	var path, class string
	cmd := &cobra.Command{
		Use:   "report ADDR REASON",
		Short: "Report a client to the API detectors (failed-login, authz-failure, throttled, server-error, injection, ...)",
		Long: `Report what the application knows about a client: a failed login, an
authorization failure, its own throttling, a server error, an injection attempt
its validation caught, a request for a sensitive file, a scanner. Reports count
for the API detectors (auth-failures, enumeration, app-throttled, error-burst,
injection-probe, sensitive-files, scanner-agent) like the access logs' lines; a
client over a threshold is flagged and banned. See docs/api-signals.md.`,
		Args: cobra.ExactArgs(2),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) == 1 {
				return reportReasons, cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			rep := control.Report{Client: args[0], Reason: args[1], Weight: weight, Path: path, Class: class}
			// checked here too, so a typo is reported without a daemon
			if _, err := rep.Signal(); err != nil {
				return fmt.Errorf("report: %w", err)
			}
			c, ctx, done := g.client(cmd)
			defer done()
			res, err := c.Report(ctx, rep)
			if err != nil {
				return err
			}
			if g.output == outputJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			if res.Counted {
				fmt.Fprintf(cmd.OutOrStdout(), "reported %s: counts for %s\n", res.Client, res.Reason)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "reported %s: %s is disabled in the policy, not counted\n", res.Client, res.Reason)
			}
			return nil
		},
	}
	cmd.Flags().Uint32Var(&weight, "weight", 0, "count as this many reports (at most 1000; default 1)")
	cmd.Flags().StringVar(&path, "path", "", "the object refused, for authz-failure (repeats of one path count once); the request's path and query, for injection")
	cmd.Flags().StringVar(&class, "class", "", "for injection: sql, xss, command, traversal or template (found in --path when left out)")
	return cmd
}
