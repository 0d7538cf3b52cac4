package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.output == outputJSON {
				return printJSON(cmd.OutOrStdout(), map[string]string{"version": version, "go": runtime.Version()})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "apiguard %s (%s)\n", version, runtime.Version())
			return nil
		},
	}
}
