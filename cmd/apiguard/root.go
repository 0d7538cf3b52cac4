package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/spf13/cobra"
)

// globals are the flags every command has.
type globals struct {
	socket string
	output string
}

const (
	outputText = "text"
	outputJSON = "json"
)

// callTimeout bounds one call to the daemon; applying a large policy takes seconds.
const callTimeout = 2 * time.Minute

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "apiguard",
		Short: "Guard API servers at the NIC with XDP/TC: rate limits, allow/deny lists and bans",
		Long: `apiguard guards the API servers of a Linux host at the network interface.
'apiguard daemon' loads the eBPF datapath and enforces a policy file; the other
commands change policy and bans on the running daemon through its control socket.`,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			// usage problems print the usage; cobra checks required flags only
			// after this hook, so check them here
			if g.output != outputText && g.output != outputJSON {
				return usagef("-o %q: want text or json", g.output)
			}
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return &usageError{err: err}
			}
			// from here on an error is about the work, not the command line
			cmd.SilenceUsage = true
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.socket, "socket", control.DefaultSocket, "the daemon's control socket")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", outputText, "output format: text or json")
	root.AddCommand(
		newDaemonCmd(g),
		newDetachCmd(g),
		newPolicyCmd(g),
		newBanCmd(g),
		newClientsCmd(g),
		newEventsCmd(g),
		newReportCmd(g),
		newStatusCmd(g),
		newVersionCmd(g),
		newManCmd(),
	)
	strictUsage(root)
	completeFlags(root)
	return root
}

// client returns a control client and a context bounded by callTimeout.
func (g *globals) client(cmd *cobra.Command) (*control.Client, context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
	c := control.NewClient(g.socket)
	return c, ctx, func() { cancel(); c.Close() }
}

// printJSON writes v indented, for scripts.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}
