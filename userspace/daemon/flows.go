package daemon

import (
	"context"
	"time"

	"github.com/apiguard/apiguard/loader"
)

// DefaultFlowSweepEvery is how often the flow sweeper runs. Closed flows linger
// 10s by default, so a sweep a second keeps the table close to what is live.
const DefaultFlowSweepEvery = time.Second

// Flow table sizes (docs/conntrack.md: about 216 bytes per connection at most,
// and 32 bytes per slot allocated at load).
const (
	DefaultFlowCapacity = loader.DefaultFlowCapacity
	MinFlowCapacity     = 1 << 10
	MaxFlowCapacity     = 1 << 24
)

// sweepFlows runs the kernel's flow sweeper (loader.SweepFlows): it releases
// the connection-cap slots of flows idle past their timeout that no packet came
// back to, and deletes closed flows after their linger. Without it the
// datapath still releases idle flows when a packet finds them; the table
// fills with closed ones instead.
func (d *Daemon) sweepFlows(ctx context.Context) error {
	every := d.cfg.FlowSweepEvery
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s, err := d.dp.SweepFlows()
			if err != nil {
				// a failed sweep only delays releases; try again next tick
				d.log.Warn("flow sweep failed", "err", err)
				continue
			}
			if s.Expired > 0 || s.Deleted > 0 {
				d.log.Debug("flow sweep", "walked", s.Walked, "expired", s.Expired, "deleted", s.Deleted)
			}
		}
	}
}
