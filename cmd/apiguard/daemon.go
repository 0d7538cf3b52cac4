package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/daemon"
	"github.com/spf13/cobra"
)

func newDaemonCmd(g *globals) *cobra.Command {
	var (
		cfg       daemon.Config
		attach    string
		logFormat string
		logLevel  string
	)
	cmd := &cobra.Command{
		Use:   "daemon --iface IF [--iface IF2 ...] --policy FILE",
		Short: "Guard interfaces with a policy and serve the control socket",
		Long: `Load the datapath (or adopt the one an earlier run left pinned), apply the
policy file, attach to each interface and serve the control socket.

SIGHUP re-reads the policy file; a bad file is refused and the policy in force
stays. SIGINT and SIGTERM stop the daemon but leave the programs and maps
pinned and enforcing; the next start adopts them without a gap. 'apiguard
detach' removes them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logFormat, logLevel)
			if err != nil {
				return err
			}
			slog.SetDefault(log)
			mode, err := loader.ParseAttachMode(attach)
			if err != nil {
				return fmt.Errorf("--attach: %w", err)
			}
			cfg.Attach = mode
			cfg.Socket = g.socket
			cfg.Version = readBuildInfo().Version
			cfg.Log = log
			for _, p := range []*string{&cfg.Socket, &cfg.PinDir, &cfg.StateDir} {
				if *p, err = filepath.Abs(*p); err != nil {
					return err
				}
			}
			d, err := daemon.New(cfg)
			if err != nil {
				return err
			}
			return d.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&cfg.Ifaces, "iface", nil, "interface to guard (repeat for more), or auto: those of the default routes, native XDP falling back to generic")
	f.StringVar(&cfg.PolicyPath, "policy", "", "policy file (re-read on SIGHUP)")
	f.StringVar(&attach, "attach", string(loader.AttachNative), "attach mode: native, generic, tcx or tc")
	f.StringVar(&cfg.PinDir, "bpffs", loader.DefaultPinDir, "bpffs directory for the pinned programs and maps")
	f.StringVar(&cfg.StateDir, "state-dir", daemon.DefaultStateDir, "directory for ban reasons and the applied policy")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", daemon.DefaultMetricsAddr, "address of the Prometheus metrics server")
	f.Uint32Var(&cfg.FlowCapacity, "flow-capacity", daemon.DefaultFlowCapacity, "connections the flow table follows (services with maxConnections); changing it needs 'apiguard detach'")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	for _, req := range []string{"iface", "policy"} {
		if err := cmd.MarkFlagRequired(req); err != nil {
			panic(err) // a flag named here that does not exist is a bug in this file
		}
	}
	return cmd
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
