package attack

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sanitize makes what a request carried fit to quote in evidence, a log
// line, a table or a terminal: at most about max bytes (then "..."),
// printable characters kept, everything else escaped — control characters,
// invalid UTF-8 and invisible formatting (bidirectional overrides,
// zero-width characters) included, so that a log line cannot rewrite the
// screen or hide what it holds. A backslash is doubled, so that an escape
// in the output always means one in the input.
func Sanitize(b []byte, max int) string {
	var sb strings.Builder
	sb.Grow(min(len(b), max) + 8)
	for len(b) > 0 {
		if sb.Len() >= max {
			sb.WriteString("...")
			break
		}
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&sb, `\x%02x`, b[0])
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&sb, `\x%02x`, r)
		case r == '\\':
			sb.WriteString(`\\`)
		case r >= 0x80 && !unicode.IsPrint(r):
			fmt.Fprintf(&sb, `\u%04x`, r)
		default:
			sb.WriteRune(r)
		}
		b = b[n:]
	}
	return sb.String()
}

// SanitizeString is Sanitize for a string.
func SanitizeString(s string, max int) string {
	// every input byte gives at least one output byte: only the first
	// max+4 can be written before the bound
	return Sanitize([]byte(s[:min(len(s), max+4)]), max)
}
