package applog

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/apiguard/apiguard/userspace/detect"
)

// A line is dated by its own time field, never by when it is read: after a
// restart, a rotation while the daemon was down, or with fromStart, hours of
// ordinary 401s and 404s must not land in one instant. The time is parsed
// only for lines that may count for a rule (4xx and 5xx), so the parsers stay
// as fast as before for the rest.

// errBadTime wraps every time that does not parse.
var errBadTime = malformed("time does not parse")

// ParseTime reads a logged time in any of the forms nginx and common JSON
// logs write:
//
//   - $time_local, "27/Nov/2026:10:22:02 +0000" (also in a JSON field);
//   - RFC 3339 ($time_iso8601), with or without a fraction of a second;
//   - a Unix time as a number ($msec "1700000000.123"): seconds, or, when
//     too large to be seconds (more than 11 integer digits), milliseconds,
//     microseconds or nanoseconds by its size.
//
// An error says what the field is not, never what it holds (it is logged, and
// the policy may name any file as an access log).
func ParseTime(b []byte) (time.Time, error) {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == len("27/Nov/2026:10:22:02 +0000") && b[2] == '/':
		return parseTimeLocal(b)
	case len(b) > 0 && (b[0] >= '0' && b[0] <= '9') && bytes.IndexByte(b, '-') > 0:
		t, err := time.Parse(time.RFC3339Nano, string(b))
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: a %d-byte time is not RFC 3339", errBadTime, len(b))
		}
		return t, nil
	default:
		return parseUnixTime(b)
	}
}

var months = [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// parseTimeLocal reads "02/Jan/2006:15:04:05 -0700" without allocating.
func parseTimeLocal(b []byte) (time.Time, error) {
	num := func(s []byte) int {
		n := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return -1
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	if b[2] != '/' || b[6] != '/' || b[11] != ':' || b[14] != ':' || b[17] != ':' || b[20] != ' ' ||
		(b[21] != '+' && b[21] != '-') {
		return time.Time{}, fmt.Errorf("%w: a %d-byte time is not dd/Mon/yyyy:hh:mm:ss +zzzz", errBadTime, len(b))
	}
	mon := -1
	for i, m := range months {
		if string(b[3:6]) == m {
			mon = i + 1
		}
	}
	day, year, hh, mm, ss := num(b[0:2]), num(b[7:11]), num(b[12:14]), num(b[15:17]), num(b[18:20])
	zh, zm := num(b[22:24]), num(b[24:26])
	if mon < 0 || day < 1 || day > 31 || year < 0 || hh < 0 || hh > 23 || mm < 0 || mm > 59 || ss < 0 || ss > 60 ||
		zh < 0 || zh > 14 || zm < 0 || zm > 59 {
		return time.Time{}, fmt.Errorf("%w: a %d-byte time is not a date", errBadTime, len(b))
	}
	date := time.Date(year, time.Month(mon), day, 0, 0, 0, 0, time.UTC)
	if date.Day() != day {
		return time.Time{}, fmt.Errorf("%w: a %d-byte time is not a date", errBadTime, len(b)) // 31/Feb
	}
	off := time.Duration(zh)*time.Hour + time.Duration(zm)*time.Minute
	if b[21] == '-' {
		off = -off
	}
	// the local time is UTC plus the offset; a leap second (:60) is the
	// next minute's first
	return date.Add(time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute + time.Duration(ss)*time.Second - off), nil
}

// parseUnixTime reads seconds since 1970 with an optional fraction, or a
// larger unit recognised by its number of integer digits: up to 11 are
// seconds (until the year 5138), 12–14 milliseconds, 15–17 microseconds, 18
// and 19 nanoseconds. Digits only: no sign, no exponent.
func parseUnixTime(b []byte) (time.Time, error) {
	intPart, frac, _ := bytes.Cut(b, []byte{'.'})
	if len(intPart) == 0 || len(intPart) > 19 || !allDigits(intPart) || !allDigits(frac) {
		return time.Time{}, fmt.Errorf("%w: a %d-byte time is neither a date nor a Unix time", errBadTime, len(b))
	}
	var n uint64
	for _, c := range intPart {
		n = n*10 + uint64(c-'0')
	}
	unit := time.Second
	switch {
	case len(intPart) >= 18:
		unit = time.Nanosecond
	case len(intPart) >= 15:
		unit = time.Microsecond
	case len(intPart) >= 12:
		unit = time.Millisecond
	}
	if n >= uint64(math.MaxInt64/int64(unit)) { // with any fraction, past int64
		return time.Time{}, fmt.Errorf("%w: a %d-byte time is too far in the future", errBadTime, len(b))
	}
	ns := int64(n) * int64(unit)
	// the fraction, in the unit, to the nanosecond
	scale := int64(unit) / 10
	for _, c := range frac {
		if scale == 0 {
			break
		}
		ns += int64(c-'0') * scale
		scale /= 10
	}
	return time.Unix(0, ns), nil
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Windows are the API rules' windows, as the policy sets them: a line older
// than its rule's window can no longer count for it.
type Windows struct {
	AuthFailures, Enumeration, AppThrottled, ErrorBurst time.Duration
	InjectionProbe, SensitiveFiles, ScannerAgent        time.Duration
}

// For is the longest window of the rules a line may count for: the rule its
// status counts for (as detect.ObserveSignal maps them; a status no such
// rule counts is given the longest of them, so that only lines no rule
// could use are called stale), sensitive-files for a 4xx, and injection-probe
// and scanner-agent when the line carried what they look for.
func (w Windows) For(status int, carried bool) time.Duration {
	var d time.Duration
	switch {
	case status == 401:
		d = w.AuthFailures
	case status == 403 || status == 404:
		d = w.Enumeration
	case status == 429:
		d = w.AppThrottled
	case status >= 500 && status <= 599:
		d = w.ErrorBurst
	default:
		d = max(w.AuthFailures, w.Enumeration, w.AppThrottled, w.ErrorBurst)
	}
	if detect.Refused(status) {
		d = max(d, w.SensitiveFiles)
	}
	if carried {
		d = max(d, w.InjectionProbe, w.ScannerAgent)
	}
	return d
}

// MaxSkew is how far in the future a line's time may be: log shippers and
// hosts a little off each other's clocks. A line within it is counted as if
// written now; a line beyond it is ignored and counted (a clock that jumped,
// or a time field that is not the request's).
const MaxSkew = 10 * time.Second
