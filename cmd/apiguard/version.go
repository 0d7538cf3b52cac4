package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/apiguard/apiguard/userspace/hostinfo"
	"github.com/spf13/cobra"
)

// Set at build time by the Makefile (and the Containerfile, the .deb):
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc... -X main.date=2026-01-02T03:04:05Z"
//
// Whatever is left empty comes from the Go build info: the module version of
// `go install ...@v1.2.3`, and the VCS stamp of a build in a git checkout.
var (
	version = ""
	commit  = ""
	date    = ""
)

// buildInfo is what `apiguard version` says of the binary.
type buildInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit"`
	Modified bool   `json:"modified,omitempty"` // built from a checkout with uncommitted changes
	Date     string `json:"date"`               // the commit's date unless the build said otherwise
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				b.Modified = s.Value == "true" && !strings.HasSuffix(b.Version, "-dirty")
			}
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

// versionReport is `apiguard version -o json`.
type versionReport struct {
	buildInfo
	Kernel hostinfo.Kernel `json:"kernel"`
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary and what the host's kernel offers",
		Long: `Print the version, commit and build date of this binary, the Go it was built
with, and what the running kernel offers apiguard: BTF, TCX (Linux 6.6+), and
for each interface whether its driver runs XDP natively (--attach native) or
only generic XDP works. It needs no daemon and no privileges.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep := versionReport{buildInfo: readBuildInfo(), Kernel: hostinfo.Read()}
			if g.output == outputJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			return versionText(cmd.OutOrStdout(), rep)
		},
	}
}

func versionText(w io.Writer, r versionReport) error {
	dirty := ""
	if r.Modified {
		dirty = " (uncommitted changes)"
	}
	fmt.Fprintf(w, "apiguard %s\n", r.Version)
	fmt.Fprintf(w, "  commit:   %s%s\n", r.Commit, dirty)
	fmt.Fprintf(w, "  date:     %s\n", r.Date)
	fmt.Fprintf(w, "  go:       %s %s\n", r.Go, r.Platform)
	k := r.Kernel
	fmt.Fprintf(w, "kernel %s\n", k.Release)
	fmt.Fprintf(w, "  BTF:      %s\n", yesNo(k.BTF))
	tcx := "yes (--attach tcx)"
	if !k.TCX {
		tcx = "no: Linux 6.6+ (--attach tc works)"
	}
	fmt.Fprintf(w, "  TCX:      %s\n", tcx)
	for _, i := range k.Interfaces {
		xdp := "unknown"
		if i.NativeXDP != nil {
			xdp = "generic only (--attach generic, or tcx)"
			if *i.NativeXDP {
				xdp = "native (--attach native)"
			}
		}
		fmt.Fprintf(w, "  %-9s %s\n", i.Name+":", "XDP "+xdp)
	}
	if k.XDPFeaturesError != "" {
		fmt.Fprintf(w, "  (native XDP unknown: %s)\n", k.XDPFeaturesError)
	}
	return nil
}
