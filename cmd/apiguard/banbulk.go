package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"strings"
	"unicode/utf8"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/safefile"
	"github.com/spf13/cobra"
)

// banSources are what `ban flush --source` takes.
var banSources = []string{control.FlushManual, control.FlushDetector, control.FlushAll}

// maxImportFile bounds a ban import file: 200k IPv6 CIDRs with reasons.
const maxImportFile = 32 << 20

// importLine is one ban of an import file, with where it came from.
type importLine struct {
	line int
	req  control.BanRequest
}

// parseBanList reads an import file: one address or CIDR per line, then
// optionally a TTL ("1h"; "-" for the default), then a reason to the end of
// the line. '#' starts a comment; blank lines are skipped. Every bad line is
// reported with its number and nothing is imported: a file half-applied is
// worse than one refused. What an error quotes is clipped: the file may be
// anything the caller points at.
func parseBanList(name string, data []byte, ttl, reason string, force bool) ([]importLine, error) {
	var out []importLine
	var problems []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 4096)
	n := 0
	for sc.Scan() {
		n++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		bad := func(format string, args ...any) {
			if len(problems) < 20 {
				problems = append(problems, fmt.Sprintf("%s:%d: %s", name, n, fmt.Sprintf(format, args...)))
			} else if len(problems) == 20 {
				problems = append(problems, "... (more lines are wrong)")
			}
		}
		if !utf8.ValidString(text) {
			bad("not UTF-8 text")
			continue
		}
		p, err := control.ParsePrefix(f[0])
		if err != nil {
			// quoted only when it looks like an address: the file may be
			// anything the caller pointed at (a key, a password file)
			if addressish(f[0]) {
				bad("not an address or CIDR: %q", clipText(f[0]))
			} else {
				bad("not an address or CIDR (a word of %d bytes)", len(f[0]))
			}
			continue
		}
		req := control.BanRequest{Prefix: p.String(), TTL: ttl, Reason: reason, Force: force}
		if len(f) > 1 && f[1] != "-" {
			req.TTL = f[1]
		}
		if len(f) > 2 {
			req.Reason = strings.Join(f[2:], " ")
		}
		out = append(out, importLine{line: n, req: req})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w (a line is at most 4 KiB)", name, n+1, err)
	}
	if len(problems) > 0 {
		return nil, &exitError{msg: fmt.Sprintf("%s: nothing imported:\n  %s", name, strings.Join(problems, "\n  ")), code: exitInvalid}
	}
	if len(out) > control.MaxImportBans {
		return nil, &exitError{msg: fmt.Sprintf("%s: %d bans; at most %d in one import", name, len(out), control.MaxImportBans), code: exitInvalid}
	}
	return out, nil
}

// addressish: only the characters of addresses and CIDRs.
func addressish(s string) bool {
	return strings.Trim(s, "0123456789abcdefABCDEF.:/") == ""
}

func clipText(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func newBanImportCmd(g *globals) *cobra.Command {
	var (
		ttl, reason string
		force       bool
	)
	cmd := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Ban every address or CIDR of a file (one per line; - reads standard input)",
		Long: `Ban every address or CIDR of a file, one per line, optionally followed by a
TTL (10m, 2h; - for --ttl) and a reason to the end of the line:

  203.0.113.7
  198.51.100.0/24  24h  scanner   # comment

A line that is not an address or CIDR refuses the whole file (every bad line is
listed, nothing is banned). Bans the daemon refuses (an address that is never
banned, an allow-listed one, a range broader than /16 or /32 without --force)
are listed and the others are made; the exit code is then 5. The ban book is synced once for the whole file.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var data []byte
			var err error
			if name == "-" {
				data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxImportFile+1))
				if err == nil && len(data) > maxImportFile {
					err = fmt.Errorf("standard input is larger than %s", safefile.Size(maxImportFile))
				}
				name = "stdin"
			} else {
				data, err = safefile.Read(name, maxImportFile)
			}
			if err != nil {
				return fmt.Errorf("ban import: %w", err)
			}
			lines, err := parseBanList(name, data, ttl, reason, force)
			if err != nil {
				return err
			}
			in := control.BanImport{Bans: make([]control.BanRequest, len(lines))}
			for i, l := range lines {
				in.Bans[i] = l.req
			}
			c, ctx, done := g.client(cmd)
			defer done()
			res, err := c.ImportBans(ctx, in)
			if err != nil {
				return err
			}
			if g.output == outputJSON {
				if err := printJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else {
				for _, r := range res.Refused {
					line := 0
					if r.Index >= 0 && r.Index < len(lines) {
						line = lines[r.Index].line
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "%s:%d: %s: not banned: %s\n", name, line, r.Prefix, r.Error)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "banned %d of %d from %s\n", res.Added, len(lines), name)
			}
			if len(res.Refused) > 0 {
				return &exitError{msg: fmt.Sprintf("%d bans refused", len(res.Refused)), code: exitRefused}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ttl, "ttl", "", "how long each ban lasts unless its line says (default: the policy's bans.ttl; 0: until removed)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, unless its line says")
	cmd.Flags().BoolVar(&force, "force", false, "ban even addresses that are never banned (the host's own, its gateway, ...)")
	return cmd
}

func newBanFlushCmd(g *globals) *cobra.Command {
	var source string
	cmd := &cobra.Command{
		Use:   "flush --source manual|detector|all",
		Short: "Lift every ban of a source: made by hand, by the detector, or both",
		Long: `Lift every ban made by hand (manual), by the detector, or both (all).
CrowdSec's bans follow the LAPI's decisions and are left alone: delete them
there (cscli decisions delete).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch source {
			case control.FlushManual, control.FlushDetector, control.FlushAll:
			default:
				return usagef("--source %q: want manual, detector or all", source)
			}
			c, ctx, done := g.client(cmd)
			defer done()
			res, err := c.FlushBans(ctx, source)
			if err != nil {
				return err
			}
			if g.output == outputJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lifted %d bans (%s)\n", res.Removed, res.Source)
			return nil
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "whose bans: manual, detector or all (CrowdSec's stay)")
	if err := cmd.MarkFlagRequired("source"); err != nil {
		panic(err)
	}
	return cmd
}
