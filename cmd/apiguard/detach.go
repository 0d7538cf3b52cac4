package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/daemon"
	"github.com/spf13/cobra"
)

func newDetachCmd(g *globals) *cobra.Command {
	var (
		pinDir string
		force  bool
	)
	cmd := &cobra.Command{
		Use:   "detach",
		Short: "Remove apiguard's programs from every interface and delete its pins",
		Long: `Detach the programs an apiguard daemon attached and delete the pinned maps:
enforcement stops and every ban and counter is gone. A running daemon is
refused unless --force is given (stop it first: it leaves everything pinned).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				if err := refuseIfRunning(cmd.Context(), g.socket, pinDir); err != nil {
					return err
				}
			}
			if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(cmd.OutOrStdout(), "nothing to detach: no pins at %s\n", pinDir)
				return nil
			}
			atts, err := loader.Attachments(pinDir)
			if err != nil {
				return err
			}
			if err := loader.Detach(pinDir); err != nil {
				return fmt.Errorf("detach: %w", err)
			}
			for _, a := range atts {
				fmt.Fprintf(cmd.OutOrStdout(), "detached from %s (%s)\n", a.Iface, a.Mode)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", pinDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&pinDir, "bpffs", loader.DefaultPinDir, "bpffs directory of the pins")
	cmd.Flags().BoolVar(&force, "force", false, "detach even while a daemon is running")
	return cmd
}

// refuseIfRunning fails when a daemon answers on the socket or holds the pin
// directory: detaching under it would leave it driving maps that are gone.
func refuseIfRunning(ctx context.Context, socket, pinDir string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c := control.NewClient(socket)
	defer c.Close()
	st, err := c.Status(ctx)
	switch {
	case err == nil:
		return fmt.Errorf("an apiguard daemon (pid %d) is running on %s: stop it first, or use --force", st.PID, socket)
	case !errors.Is(err, control.ErrNotRunning):
		return fmt.Errorf("cannot tell whether a daemon is running: %w", err)
	}
	inUse, err := daemon.PinDirInUse(pinDir)
	if err != nil {
		return err
	}
	if inUse {
		return fmt.Errorf("an apiguard daemon holds %s: stop it first, or use --force", pinDir)
	}
	return nil
}
