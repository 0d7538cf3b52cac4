package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/policy"
	"github.com/apiguard/apiguard/userspace/session"
	"github.com/spf13/cobra"
)

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Validate, apply, show and diff policy files",
	}
	cmd.AddCommand(newPolicyValidateCmd(g), newPolicyApplyCmd(g), newPolicyConfirmCmd(g), newPolicyShowCmd(g), newPolicyDiffCmd(g))
	return cmd
}

// validation is policy validate's JSON output.
type validation struct {
	File     string            `json:"file"`
	Valid    bool              `json:"valid"`
	Name     string            `json:"name,omitempty"`
	Problems []control.Problem `json:"problems"`
	Warnings []control.Problem `json:"warnings"`
}

func problems(es policy.Errors) []control.Problem {
	out := make([]control.Problem, 0, len(es))
	for _, e := range es {
		out = append(out, control.Problem{File: e.File, Line: e.Line, Field: e.Field, Message: e.Msg})
	}
	return out
}

func newPolicyValidateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check policy files (no daemon needed); exit 4 with every problem found",
		Long: `Check policy files without a daemon: each is parsed, validated and compiled,
and every problem is printed as file:line: field: message. The exit code is 4
when any file has a problem. With -o json, one file prints one object and
several print a list.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			var all []validation
			bad := 0
			for _, file := range args {
				v, pol, err := validateFile(file)
				if err != nil {
					return err // the file itself could not be read
				}
				if !v.Valid {
					bad++
				}
				all = append(all, v)
				if g.output == outputJSON {
					continue
				}
				for _, p := range v.Problems {
					fmt.Fprintf(stderr, "%s\n", p)
				}
				for _, w := range v.Warnings {
					fmt.Fprintf(stderr, "warning: %s\n", w)
				}
				if v.Valid {
					sp := pol.Spec
					fmt.Fprintf(out, "%s: policy %q is valid: %d services, %d allow and %d deny entries, mode %s\n",
						file, pol.Name, len(sp.Services), len(sp.Allow), len(sp.Deny), sp.Mode)
				}
			}
			if g.output == outputJSON {
				var err error
				if len(all) == 1 {
					err = printJSON(out, all[0])
				} else {
					err = printJSON(out, all)
				}
				if err != nil {
					return err
				}
			}
			switch {
			case bad == 0:
				return nil
			case len(args) == 1:
				return &exitError{msg: fmt.Sprintf("%s has %d problems", args[0], len(all[0].Problems)), code: exitInvalid}
			}
			return &exitError{msg: fmt.Sprintf("%d of %d policies have problems", bad, len(args)), code: exitInvalid}
		},
	}
}

// validateFile validates one policy file; err is only for a file that
// cannot be read.
func validateFile(file string) (validation, *policy.Policy, error) {
	pol, err := policy.LoadFile(file)
	var errs policy.Errors
	if err != nil && !errors.As(err, &errs) {
		return validation{}, nil, err
	}
	v := validation{File: file, Valid: err == nil, Problems: problems(errs), Warnings: []control.Problem{}}
	if pol != nil {
		v.Name = pol.Name
		v.Warnings = problems(pol.Warnings)
	}
	return v, pol, nil
}

// readUpload reads a policy file and the list files it names, so the daemon
// can validate exactly what the caller sees, whatever its own file system holds.
func readUpload(file string) (*control.PolicyUpload, error) {
	data, err := policy.ReadFile(file)
	if err != nil {
		return nil, err
	}
	up := &control.PolicyUpload{Name: file, Source: string(data), Files: map[string]string{}}
	read := policy.ListReader(filepath.Dir(file))
	// Parsed here only to learn which list files the policy names; the daemon
	// validates the upload and reports every problem itself.
	_, _ = policy.Parse(file, data, func(p string) ([]byte, error) {
		b, err := read(p)
		if err == nil {
			up.Files[p] = string(b)
		}
		return b, err
	})
	return up, nil
}

func newPolicyApplyCmd(g *globals) *cobra.Command {
	var (
		force   bool
		confirm time.Duration
	)
	cmd := &cobra.Command{
		Use:   "apply FILE",
		Short: "Make a policy file the policy in force on the running daemon",
		Long: `Send a policy file (and the list files it names) to the daemon, which validates
it and applies it atomically. A policy with errors is refused and the policy in
force stays. The change lasts until the daemon re-reads its --policy file (on
SIGHUP or a restart): edit that file too to keep it.

A policy that would drop your own session (SSH_CONNECTION, or the inbound TCP
connection of the nearest process above this command that holds one, such as
sshd) or the host's default gateways is refused (exit 5) unless --force.

--confirm 60s puts the policy on trial: unless 'apiguard policy confirm' comes
within 60 seconds, the policy in force before comes back by itself. A restart
of the daemon applies its --policy file, trial or not.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if confirm != 0 && (confirm < control.MinConfirm || confirm > control.MaxConfirm) {
				return usagef("--confirm %v: want %v to %v", confirm, control.MinConfirm, control.MaxConfirm)
			}
			up, err := readUpload(args[0])
			if err != nil {
				return err
			}
			up.Force = force
			if confirm > 0 {
				up.Confirm = confirm.String()
			}
			flows, err := session.Find(os.Environ(), "/proc", os.Getpid())
			if err != nil {
				return fmt.Errorf("find your session: %w", err)
			}
			for _, f := range flows[:min(len(flows), control.MaxProtect)] {
				up.Protect = append(up.Protect, control.Flow{Src: f.Src.String(), Proto: "tcp", Port: f.LocalPort, What: f.What})
			}
			c, ctx, done := g.client(cmd)
			defer done()
			res, err := c.ApplyPolicy(ctx, up)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.output == outputJSON {
				return printJSON(out, res)
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			for _, f := range res.Forced {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: --force: the policy drops %s\n", f)
			}
			switch {
			case !res.Changed:
				fmt.Fprintf(out, "policy %q unchanged (generation %d)\n", res.Name, res.Generation)
			case !res.KernelChanged:
				// only settings the daemon reads (detection, bans) changed
				fmt.Fprintf(out, "applied policy %q: generation %d (datapath unchanged), %d changes\n",
					res.Name, res.Generation, len(res.Changes))
			default:
				fmt.Fprintf(out, "applied policy %q: generation %d, %d changes in %s\n",
					res.Name, res.Generation, len(res.Changes), time.Duration(res.TookSeconds*float64(time.Second)).Round(time.Microsecond))
			}
			if len(res.Kept) > 0 {
				fmt.Fprintf(out, "still reachable: %s\n", strings.Join(res.Kept, "; "))
			}
			if res.ConfirmBy != nil {
				fmt.Fprintf(out, "ON TRIAL: it reverts at %s (in %s) unless you run 'apiguard policy confirm'\n",
					res.ConfirmBy.Local().Format(time.TimeOnly), time.Until(*res.ConfirmBy).Round(time.Second))
			}
			const show = 50
			printLines(out, res.Changes[:min(len(res.Changes), show)])
			if len(res.Changes) > show {
				fmt.Fprintf(out, "... and %d more (-o json lists them all)\n", len(res.Changes)-show)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "apply even a policy that drops your own session or the default gateway")
	cmd.Flags().DurationVar(&confirm, "confirm", 0, "put the policy on trial: it reverts after this long (e.g. 60s) unless 'apiguard policy confirm'")
	return cmd
}

func newPolicyConfirmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "confirm",
		Short: "Keep the policy on trial (applied with --confirm) in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done := g.client(cmd)
			defer done()
			res, err := c.ConfirmPolicy(ctx)
			if err != nil {
				return err
			}
			if g.output == outputJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "confirmed policy %q (generation %d): it stays in force\n", res.Policy, res.Generation)
			return nil
		},
	}
}

func newPolicyShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Print the policy in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done := g.client(cmd)
			defer done()
			p, err := c.Policy(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.output == outputJSON {
				return printJSON(out, p)
			}
			fmt.Fprintf(out, "# policy %q from %s, generation %d, applied %s\n", p.Name, p.Path, p.Generation, p.AppliedAt.Format(time.RFC3339))
			_, err = io.WriteString(out, p.Source)
			return err
		},
	}
}

func newPolicyDiffCmd(g *globals) *cobra.Command {
	var exitCodeFlag bool
	cmd := &cobra.Command{
		Use:   "diff FILE",
		Short: "Show what applying a policy file would change",
		Long: `Show what applying a policy file would change on the running daemon. With
--exit-code it exits 1 when there are changes and 0 when there are none, as
diff(1) does (other failures keep their codes: 3 no daemon, 4 invalid).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			up, err := readUpload(args[0])
			if err != nil {
				return err
			}
			c, ctx, done := g.client(cmd)
			defer done()
			res, err := c.DiffPolicy(ctx, up)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			changed := error(nil)
			if exitCodeFlag && len(res.Changes) > 0 {
				changed = &exitError{msg: fmt.Sprintf("%d changes", len(res.Changes)), code: exitFailure}
			}
			if g.output == outputJSON {
				if err := printJSON(out, res); err != nil {
					return err
				}
				return changed
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			if len(res.Changes) == 0 {
				fmt.Fprintln(out, "no changes")
				return nil
			}
			printLines(out, res.Changes)
			return changed
		},
	}
	cmd.Flags().BoolVar(&exitCodeFlag, "exit-code", false, "exit 1 when applying the file would change anything")
	return cmd
}

func printLines(w io.Writer, lines []string) {
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
