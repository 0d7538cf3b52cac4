package main

import (
	"errors"
	"fmt"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/spf13/cobra"
)

// Exit codes, for scripts (the man pages and README list them).
const (
	exitOK = 0
	// exitFailure: anything else went wrong (and `policy diff --exit-code`
	// found changes, as diff(1) says so).
	exitFailure = 1
	// exitUsage: a bad command line: unknown command or flag, wrong arguments.
	exitUsage = 2
	// exitNotRunning: no daemon answers on the control socket.
	exitNotRunning = 3
	// exitInvalid: a policy (or a ban import file) did not validate, here
	// or at the daemon; nothing changed.
	exitInvalid = 4
	// exitRefused: a safety check refused the change (it would cut the
	// caller's own session or the gateway, or ban a never-ban address);
	// --force overrides it. Nothing changed.
	exitRefused = 5
)

// usageError is a command line the command cannot run with.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// exitError makes the command exit with code after it printed what went
// wrong itself (policy validate prints each problem on its own line).
type exitError struct {
	msg  string
	code int
}

func (e *exitError) Error() string { return e.msg }

// exitCode is the process's exit code for what run returned.
func exitCode(err error) int {
	var (
		ee *exitError
		ue *usageError
		pe *control.PolicyError
		ae *control.APIError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		if ee.code == 0 {
			return exitFailure
		}
		return ee.code
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, control.ErrNotRunning):
		return exitNotRunning
	case errors.As(err, &pe):
		return exitInvalid
	case errors.As(err, &ae) && ae.Status == 409:
		return exitRefused
	}
	return exitFailure
}

// strictUsage makes every command's usage mistakes usage errors: flag and
// argument errors, and a command group run without (or with an unknown)
// subcommand, which cobra otherwise answers with its help and exit 0.
func strictUsage(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch {
		case c.HasAvailableSubCommands() && c.Run == nil && c.RunE == nil:
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					cmd.SetOut(cmd.ErrOrStderr())
					_ = cmd.Help()
					return usagef("%s needs a command", cmd.CommandPath())
				}
				return usagef("unknown command %q for %q (see '%s --help')", args[0], cmd.CommandPath(), cmd.CommandPath())
			}
		case c.Args != nil:
			args := c.Args
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return &usageError{err: err}
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
