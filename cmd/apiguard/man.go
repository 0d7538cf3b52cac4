package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newManCmd writes a man page per command. It is hidden: `make install` and
// the .deb run it, so the pages always describe the binary they ship with.
func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the man pages of every command to DIR (section 1)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			hdr := &doc.GenManHeader{Title: "APIGUARD", Section: "1", Source: "apiguard " + readBuildInfo().Version, Manual: "apiguard manual"}
			// reproducible pages: the date is SOURCE_DATE_EPOCH's, else the commit's
			if t, ok := manDate(); ok {
				hdr.Date = &t
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			return nil
		},
	}
}

func manDate() (time.Time, bool) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC(), true
		}
	}
	if t, err := time.Parse(time.RFC3339, readBuildInfo().Date); err == nil {
		return t.UTC(), true
	}
	return time.Time{}, false
}
