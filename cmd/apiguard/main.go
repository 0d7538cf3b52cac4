// Command apiguard runs the apiguard daemon and talks to it: one binary for
// `apiguard daemon`, policy and ban changes on a running host, status and top
// clients. Read commands print tables, or JSON with -o json.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if err := run(); err != nil {
		var quiet *exitError
		if !errors.As(err, &quiet) {
			fmt.Fprintln(os.Stderr, "apiguard:", err)
		}
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return newRootCmd().ExecuteContext(ctx)
}

// exitError makes the command exit non-zero after it printed what went wrong
// itself (policy validate prints each problem on its own line).
type exitError struct{ msg string }

func (e *exitError) Error() string { return e.msg }
