package loader

import "testing"

// Every reason and event type the C side defines has a stable name: metric
// labels and CLI output depend on them.
func TestEveryReasonHasAName(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		name := r.String()
		if name == "" || name[0] == 'r' && len(name) > 7 && name[:7] == "reason(" {
			t.Errorf("reason %d has no name", r)
		}
		if seen[name] {
			t.Errorf("reason name %q used twice", name)
		}
		seen[name] = true
	}
	for _, e := range EventTypes() {
		if n := e.String(); len(n) > 6 && n[:6] == "event(" {
			t.Errorf("event type %d has no name", e)
		}
	}
	if len(EventTypes()) != int(GuardAgEventTypeAG_EV_MAX)-1 {
		t.Errorf("%d event types named, the C side defines %d", len(EventTypes()), GuardAgEventTypeAG_EV_MAX-1)
	}
}
