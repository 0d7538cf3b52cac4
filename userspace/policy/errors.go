package policy

import (
	"fmt"
	"strings"
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
