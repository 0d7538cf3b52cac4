package crowdsec

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lapi"
)

// BenchmarkRealLAPIAddToDrop: from `cscli decisions add` returning to the
// first packet the XDP program drops, pulling as fast as possible. In service
// the pull comes every pollInterval, which adds up to that interval (half on
// average). cscli's own run (a process, a machine login) is reported apart.
func BenchmarkRealLAPIAddToDrop(b *testing.B) {
	d := loadDatapath(b)
	l := lapi.Start(b)
	bo, err := NewBouncer(BouncerConfig{URL: l.URL, APIKey: l.Key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, dpKernel{d})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := bo.Pull(ctx); err != nil {
		b.Fatal(err)
	}
	var cscliTime time.Duration
	var nPulls int
	i := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		i++
		addr := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		if verdict(b, d, addr.String()) != xdpPass {
			b.Fatalf("%v dropped before its decision", addr)
		}
		start := time.Now()
		l.CSCLI(b, "decisions", "add", "--ip", addr.String(), "--duration", "5m")
		cscliTime += time.Since(start)
		b.StartTimer()
		for n := 0; ; n++ {
			if n > 1000 {
				b.Fatalf("%v not dropped after 1000 pulls", addr)
			}
			if err := bo.Pull(ctx); err != nil {
				b.Fatal(err)
			}
			nPulls++
			if verdict(b, d, addr.String()) == xdpDrop {
				break
			}
		}
	}
	b.ReportMetric(float64(cscliTime.Microseconds())/float64(b.N)/1000, "ms-cscli/op")
	b.ReportMetric(float64(nPulls)/float64(b.N), "pulls/op")
}
