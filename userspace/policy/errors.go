package policy

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Error is one problem in a policy file or a list file it names.
type Error struct {
	File  string
	Line  int
	Field string // e.g. spec.services[0].ports[1]
	Msg   string
}

func (e Error) Error() string {
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
}

// maxMsg bounds a message: one that quotes a value quotes a short excerpt of
// it. Without it a megabyte-long name, aliased a hundred times, would be
// quoted in full in a hundred errors.
const maxMsg = 400

// clipped is e fit for a terminal and a log line: messages at most maxMsg
// bytes, and no control character in the message or the file name (a name
// with a newline in it would forge a line of the "file:line: field:
// message" output).
func (e Error) clipped() Error {
	e.File = printable(e.File, 4*maxMsg)
	e.Field = printable(e.Field, maxMsg)
	e.Msg = printable(e.Msg, maxMsg)
	return e
}

func printable(s string, limit int) string {
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// Errors is every problem found, in file order.
type Errors []Error

// Error prints one problem per line as "file:line: field: message".
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}
