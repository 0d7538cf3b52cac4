package policy

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// unitKind is what a limit counts.
type unitKind int

const (
	unitPackets unitKind = iota
	unitBytes
	unitConns
)

func (k unitKind) String() string {
	return [...]string{"packets", "bytes", "connections"}[k]
}

// minBurst is the smallest useful burst: one unit, or one full frame of bytes.
func (k unitKind) minBurst() uint64 {
	if k == unitBytes {
		return MinBytesBurst
	}
	return 1
}

// byteUnits are the size suffixes a bytes rate or burst may carry. Bits are
// deliberately absent: the datapath counts bytes, and a silent factor of eight
// is the worst kind of mistake a limit can have.
var byteUnits = map[string]uint64{
	"B":   1,
	"KB":  1000,
	"kB":  1000,
	"MB":  1000 * 1000,
	"GB":  1000 * 1000 * 1000,
	"KiB": 1 << 10,
	"MiB": 1 << 20,
	"GiB": 1 << 30,
}

// bitUnits are recognised only to say why they are refused, and what they mean in bytes.
var bitUnits = map[string]uint64{
	"b": 1, "bit": 1, "bps": 1,
	"Kb": 1000, "kb": 1000, "Kbit": 1000, "kbit": 1000, "Kbps": 1000, "kbps": 1000,
	"Mb": 1000 * 1000, "mb": 1000 * 1000, "Mbit": 1000 * 1000, "mbit": 1000 * 1000, "Mbps": 1000 * 1000, "mbps": 1000 * 1000,
	"Gb": 1000 * 1000 * 1000, "gb": 1000 * 1000 * 1000, "Gbit": 1000 * 1000 * 1000, "gbit": 1000 * 1000 * 1000, "Gbps": 1000 * 1000 * 1000, "gbps": 1000 * 1000 * 1000,
}

// splitNumber splits "2.5MB" into "2.5" and "MB".
func splitNumber(s string) (num, unit string) {
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	return s[:i], strings.TrimSpace(s[i:])
}

// parseNumber reads a plain decimal ("200", "1.5") exactly.
func parseNumber(s string) (*big.Rat, bool) {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Count(s, ".") > 1 {
		return nil, false
	}
	r, ok := new(big.Rat).SetString(s)
	return r, ok
}

// wholeUint64 is r as a uint64 when it is a whole number that fits.
func wholeUint64(r *big.Rat) (uint64, bool) {
	if !r.IsInt() || r.Sign() < 0 || !r.Num().IsUint64() {
		return 0, false
	}
	return r.Num().Uint64(), true
}

// parseQuantity reads a count of kind k: a plain number, or for bytes a number
// with a size unit. It returns the value as an exact rational.
// whole is the text to quote in errors (the full rate for a rate's amount).
func parseQuantity(s, whole string, k unitKind) (*big.Rat, error) {
	s = strings.TrimSpace(s)
	num, unit := splitNumber(s)
	r, ok := parseNumber(num)
	if !ok {
		return nil, fmt.Errorf("%q does not start with a number", whole)
	}
	if unit == "" {
		return r, nil
	}
	if k != unitBytes {
		return nil, fmt.Errorf("%q: %s are counted without a unit", whole, k)
	}
	if mul, ok := byteUnits[unit]; ok {
		return r.Mul(r, new(big.Rat).SetInt64(int64(mul))), nil
	}
	if mul, ok := bitUnits[unit]; ok {
		bytes := new(big.Rat).Mul(r, new(big.Rat).SetFrac64(int64(mul), 8))
		return nil, &bitsError{text: whole, bytes: formatBytesRat(bytes)}
	}
	return nil, fmt.Errorf("%q: unknown unit %q (use B, KB, MB, GB, KiB, MiB or GiB)", whole, unit)
}

// bitsError is a quantity written in bits; a rate adds its period to the advice.
type bitsError struct {
	text, bytes, period string
}

func (e *bitsError) Error() string {
	return fmt.Sprintf("%q is in bits; apiguard limits bytes (that is %s%s)", e.text, e.bytes, e.period)
}

// parseRate reads "200/s", "12000/m" or, for bytes, "2MB/s". A rate that is
// a whole number per second comes back as PerSecond; one that is not, but is
// a whole number per minute (30/m, 90/m, 0.5/s), as PerMinute. The kernel's
// limiter keeps nanoseconds per unit in 48.16 fixed point, which holds one
// packet or connection a minute with room to spare; byte rates stay at 1 B/s
// or more, since a packet's byte cost multiplies the interval.
func parseRate(s string, k unitKind) (Rate, error) {
	amount, period, found := strings.Cut(s, "/")
	if !found {
		example := "200/s"
		if k == unitBytes {
			example = "2MB/s"
		}
		if _, err := parseQuantity(s, s, k); err == nil {
			example = strings.TrimSpace(s) + "/s"
		}
		return Rate{}, fmt.Errorf("%q has no period: write it like %s (per second) or with /m (per minute)", s, example)
	}
	q, err := parseQuantity(amount, s, k)
	if be, ok := err.(*bitsError); ok {
		be.period = "/" + strings.TrimSpace(period)
		return Rate{}, be
	}
	if err != nil {
		return Rate{}, err
	}
	var secs int64
	switch strings.TrimSpace(period) {
	case "s":
		secs = 1
	case "m":
		secs = 60
	default:
		return Rate{}, fmt.Errorf("%q: unknown period %q (use s or m)", s, strings.TrimSpace(period))
	}
	if q.Sign() == 0 {
		return Rate{}, fmt.Errorf("%q is zero; leave the limit out for no limit", s)
	}
	perSec := new(big.Rat).Quo(q, new(big.Rat).SetInt64(secs))
	if v, ok := wholeUint64(perSec); ok {
		return Rate{PerSecond: v}, nil
	}
	perMin := new(big.Rat).Mul(perSec, big.NewRat(60, 1))
	v, ok := wholeUint64(perMin)
	switch {
	case ok && k == unitBytes && v < 60:
		return Rate{}, fmt.Errorf("%q is below 1 B per second, the datapath's finest byte rate", s)
	case ok:
		return Rate{PerMinute: v}, nil
	case perMin.Cmp(big.NewRat(1, 1)) < 0:
		return Rate{}, fmt.Errorf("%q is below 1 %s per minute, the datapath's finest rate", s, singular(k))
	case !perMin.IsInt():
		return Rate{}, fmt.Errorf("%q is %s %s per minute; the datapath counts whole %s per minute", s, perMin.FloatString(2), k, k)
	}
	return Rate{}, fmt.Errorf("%q is too large", s)
}

func singular(k unitKind) string {
	return strings.TrimSuffix(k.String(), "s")
}

// parseBurst reads a burst: a count, or for bytes a size.
func parseBurst(s string, k unitKind) (uint64, error) {
	q, err := parseQuantity(s, s, k)
	if err != nil {
		return 0, err
	}
	v, ok := wholeUint64(q)
	if !ok {
		if !q.IsInt() {
			return 0, fmt.Errorf("%q is not a whole number of %s", s, k)
		}
		return 0, fmt.Errorf("%q is too large", s)
	}
	return v, nil
}

// parseDuration reads a Go duration ("90s", "10m", "1h30m") and also whole days ("7d").
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err == nil {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, fmt.Errorf("%q needs a unit, like %ss or %sm", s, s, s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write it like 30s, 10m, 24h or 7d)", s)
	}
	return d, nil
}

// formatBytes prints a byte count with the largest unit that divides it exactly,
// preferring the 1000-based units people usually write.
func formatBytes(n uint64) string {
	if n == 0 {
		return "0B"
	}
	for _, u := range []struct {
		name string
		mul  uint64
	}{{"GB", 1e9}, {"GiB", 1 << 30}, {"MB", 1e6}, {"MiB", 1 << 20}, {"KB", 1e3}, {"KiB", 1 << 10}} {
		if n%u.mul == 0 {
			return strconv.FormatUint(n/u.mul, 10) + u.name
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}

func formatBytesRat(r *big.Rat) string {
	if v, ok := wholeUint64(r); ok {
		return formatBytes(v)
	}
	return r.FloatString(1) + "B"
}

// formatAmount prints a count of kind k.
func formatAmount(n uint64, k unitKind) string {
	if k == unitBytes {
		return formatBytes(n)
	}
	return strconv.FormatUint(n, 10)
}

// formatRate prints a rate the way a policy would write it; the burst is shown
// only when it differs from the default.
func formatRate(r Rate, k unitKind) string {
	var s string
	switch {
	case r.PerSecond != 0:
		s = formatAmount(r.PerSecond, k) + "/s"
	case r.PerMinute != 0:
		s = formatAmount(r.PerMinute, k) + "/m"
	default:
		return "unlimited"
	}
	if r.Burst != defaultBurst(r, k) {
		s += " burst " + formatAmount(r.Burst, k)
	}
	return s
}

// defaultBurst is one second's worth at the rate (rounded up), and never
// below the minimum: 30/m gets a burst of 1.
func defaultBurst(r Rate, k unitKind) uint64 {
	if r.PerSecond == 0 {
		// rounded up without r.PerMinute+59, which wraps near 2^64
		perSec := r.PerMinute / 60
		if r.PerMinute%60 != 0 {
			perSec++
		}
		return max(perSec, k.minBurst())
	}
	return max(r.PerSecond, k.minBurst())
}
