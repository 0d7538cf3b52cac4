package detect_test

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/detect"
	"github.com/apiguard/apiguard/userspace/events"
)

// mixedStream is raw records as an attack mix would produce them: limited
// clients, a scan, random-source SYNs against a service total, deny hits and
// invalid flags.
func mixedStream(n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 1))
	out := make([][]byte, n)
	for i := range out {
		ev := loader.Event{Family: 4, Proto: loader.ProtoTCP, Count: uint64(i), Service: 1, Dport: 443, Action: uint8(loader.ActionDrop)}
		var a [4]byte
		switch x := rng.IntN(10); {
		case x < 4: // 5000 clients over their own limits
			c := rng.IntN(5000)
			a = [4]byte{192, 0, byte(c >> 8), byte(c)}
			ev.Type, ev.Reason = uint8(loader.GuardAgEventTypeAG_EV_LIMITED), uint8(loader.GuardAgReasonAG_R_CLIENT_PPS)
		case x < 6: // a scanner per 256 addresses, random ports
			c := rng.IntN(256)
			a = [4]byte{203, 0, 113, byte(c)}
			ev.Type, ev.Reason = uint8(loader.GuardAgEventTypeAG_EV_NO_SERVICE), uint8(loader.GuardAgReasonAG_R_NO_SERVICE)
			ev.Dport = uint16(rng.IntN(65535) + 1)
		case x < 8: // random sources against the service's connection total
			a = [4]byte{10, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
			ev.Type, ev.Reason = uint8(loader.GuardAgEventTypeAG_EV_SYN_LIMITED), uint8(loader.GuardAgReasonAG_R_SERVICE_CPS)
		case x < 9:
			a = [4]byte{198, 51, 100, byte(rng.IntN(256))}
			ev.Type, ev.Reason = uint8(loader.GuardAgEventTypeAG_EV_DENY_HIT), uint8(loader.GuardAgReasonAG_R_DENY)
		default:
			a = [4]byte{198, 18, byte(rng.IntN(256)), byte(rng.IntN(256))}
			ev.Type, ev.Reason = uint8(loader.GuardAgEventTypeAG_EV_BAD_FLAGS), uint8(loader.GuardAgReasonAG_R_TCP_FLAGS)
			ev.TcpFlags = 0x29
		}
		ev.Addr = netip.AddrFrom4(a).As16()
		out[i] = events.Encode(&ev)
	}
	return out
}

// BenchmarkDecodeDetect is the userspace half of the pipeline: decode a raw
// record and feed it to the detector, with the default rules, at a kernel
// timeline of 100,000 events a second (20 times the kernel's default budget).
func BenchmarkDecodeDetect(b *testing.B) {
	raw := mixedStream(1 << 16)
	bans := 0
	d, err := detect.New(detect.DefaultConfig(), detect.Options{
		Banner: detect.BanFunc(func(netip.Prefix, time.Duration, detect.Reason, string) error { bans++; return nil }),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Wall:   func(mono uint64) time.Time { return time.Unix(0, int64(mono)) },
	})
	if err != nil {
		b.Fatal(err)
	}
	base := uint64(1000 * time.Second)
	var ev loader.Event
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := events.Decode(raw[i&(len(raw)-1)], &ev); err != nil {
			b.Fatal(err)
		}
		ev.Ts = base + uint64(i)*10000
		d.Observe(&ev)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	tot := d.Totals()
	if b.N > 1200000 && (tot.Flagged[detect.Flood] == 0 || tot.Flagged[detect.Scan] == 0) {
		b.Fatalf("the stream should flag floods and scans: %+v", tot)
	}
}
