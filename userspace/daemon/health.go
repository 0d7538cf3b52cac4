package daemon

import (
	"fmt"
	"time"

	"github.com/apiguard/apiguard/userspace/metrics"
)

// Health is the daemon's state for /healthz on the metrics server, read from
// the kernel where the kernel knows: the event reader runs, a policy is in
// force and the kernel took the latest one, and every interface this run
// attached to still runs the guard. A failing check is one a restart can fix
// (the reader, the hooks) or that an operator must see (the kernel refusing
// policy writes); a policy file refused for its own mistakes is not one: the
// policy in force stays and protects.
func (d *Daemon) Health() []metrics.Check {
	return []metrics.Check{d.eventsHealth(), d.policyHealth(), d.attachHealth()}
}

func (d *Daemon) eventsHealth() metrics.Check {
	c := metrics.Check{Name: "events"}
	switch r := d.tel.reader; {
	case r == nil:
		c.Detail = "the ring-buffer reader is not running"
	case !r.Alive():
		c.Detail = "the ring-buffer reader stopped"
		if err := r.Err(); err != nil {
			c.Detail += ": " + err.Error()
		}
	default:
		c.OK = true
	}
	return c
}

func (d *Daemon) policyHealth() metrics.Check {
	c := metrics.Check{Name: "policy"}
	d.polMu.Lock()
	defer d.polMu.Unlock()
	switch {
	case d.pol == nil:
		c.Detail = "no policy in force"
	case d.applyErr != nil:
		c.Detail = fmt.Sprintf("generation %d is in force, but the kernel refused the latest policy: %v", d.pol.generation, d.applyErr)
	default:
		c.OK = true
		c.Detail = fmt.Sprintf("%s, generation %d, applied %s", d.pol.pol.Name, d.pol.generation, d.pol.appliedAt.UTC().Format(time.RFC3339))
	}
	return c
}

func (d *Daemon) attachHealth() metrics.Check {
	c := metrics.Check{Name: "attachments"}
	if len(d.attachments) == 0 {
		c.Detail = "attached to no interface"
		return c
	}
	var bad []string
	for _, a := range d.attachments {
		if err := d.dp.CheckAttachment(a); err != nil {
			bad = append(bad, err.Error())
		}
	}
	if len(bad) > 0 {
		c.Detail = fmt.Sprintf("%d of %d: %v", len(bad), len(d.attachments), bad)
		return c
	}
	c.OK = true
	c.Detail = fmt.Sprintf("%d interfaces", len(d.attachments))
	return c
}
