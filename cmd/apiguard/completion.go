package main

import (
	"context"
	"net"
	"strings"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/attack"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/daemon"
	"github.com/spf13/cobra"
)

// fixed returns a completion function offering exactly vals.
func fixed(vals ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(vals, cobra.ShellCompDirectiveNoFileComp)
}

// reportReasons are the words an application would use for `apiguard
// report`, one per API rule (detect.ReportReason takes the rule names too;
// TestReportReasonsCoverRules keeps this list in step with the rules).
var reportReasons = []string{"failed-login", "authz-failure", "throttled", "server-error", "injection", "sensitive-file", "scanner"}

// injectionClasses are what `apiguard report --class` takes.
func injectionClasses() []string {
	var out []string
	for _, c := range attack.Classes() {
		out = append(out, c.String())
	}
	return out
}

// completeIfaces offers the host's interfaces and auto.
func completeIfaces(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	out := []cobra.Completion{cobra.CompletionWithDesc(daemon.AutoIface, "the interfaces of the default routes")}
	ifs, err := net.Interfaces()
	if err != nil {
		return out, cobra.ShellCompDirectiveNoFileComp
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			out = append(out, i.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeBans offers the bans in force, asked of the daemon (briefly: a
// shell waits for this).
func completeBans(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	socket, _ := cmd.Flags().GetString("socket")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := control.NewClient(socket)
	defer c.Close()
	bans, err := c.Bans(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	out := make([]cobra.Completion, 0, len(bans))
	for _, b := range bans {
		out = append(out, cobra.CompletionWithDesc(b.Prefix, strings.TrimSpace(b.Source+" "+b.Reason)))
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeServices offers the services of the policy in force.
func completeServices(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	socket, _ := cmd.Flags().GetString("socket")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := control.NewClient(socket)
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	out := make([]cobra.Completion, 0, len(st.Services))
	for _, s := range st.Services {
		out = append(out, cobra.CompletionWithDesc(s.Name, s.Protocol+" "+s.Ports+", "+s.Mode))
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeFlags registers the completions of flag values (and arguments
// that are words from a fixed set), wherever the flag is defined.
func completeFlags(root *cobra.Command) {
	flags := map[string]cobra.CompletionFunc{
		"output":     fixed(outputText, outputJSON),
		"attach":     fixed(string(loader.AttachNative), string(loader.AttachGeneric), string(loader.AttachTCX), string(loader.AttachTC)),
		"class":      fixed(injectionClasses()...),
		"by":         fixed(string(control.ByPackets), string(control.ByBytes), string(control.ByDrops)),
		"iface":      completeIfaces,
		"log-format": fixed("text", "json"),
		"log-level":  fixed("debug", "info", "warn", "error"),
		"source":     fixed(banSources...),
		"service":    completeServices,
		"ttl":        fixed("10m", "1h", "24h", "168h", "0"),
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for name, fn := range flags {
			if c.LocalNonPersistentFlags().Lookup(name) != nil || c == root && c.PersistentFlags().Lookup(name) != nil {
				if err := c.RegisterFlagCompletionFunc(name, fn); err != nil {
					panic(err) // registering twice is a bug in this file
				}
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
