package loader

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/packet"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// One client's packets arrive on both CPUs at once; the shared GCRA word must
// admit no more than rate x time + burst, and — while the offered load is far
// above the limit — no less than 95% of it. The lower bound only holds when both
// CPUs keep offering packets: a thread descheduled for longer than the burst
// lets credit go unused, as it should. So the run is repeated (up to 3 times) on
// a busy machine until one run has both CPUs busy; the upper bound is checked on
// every run.
func TestLimitHoldsAcrossCPUs(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCPUs(t, 2)
	var last string
	for attempt := 1; attempt <= 3; attempt++ {
		passed, allowed, overLimit, info := twoCPUFlood(t)
		t.Logf("attempt %d: %s", attempt, info)
		if float64(passed) > allowed {
			t.Fatalf("%d packets passed, more than rate x time + burst = %.0f", passed, allowed)
		}
		if overLimit && float64(passed) >= 0.95*allowed {
			return
		}
		last = info
	}
	t.Fatalf("no run of 3 offered far more than the limit and admitted 95%% of it; last: %s", last)
}

func twoCPUFlood(t *testing.T) (passed uint64, allowed float64, overLimit bool, info string) {
	// The rate is low enough that even a slow, busy CI machine offers many
	// times it (a CI run offered 120k packets/s; 20k/s was too close).
	const rate, burst = 5000, 250
	d := newDatapath(t, Options{})
	mustApply(t, d, &Policy{Services: []Service{{ID: 1, Name: "udp", Proto: ProtoUDP,
		Ports: []PortRange{{9001, 9001}}, Client: Limits{Packets: Rate{PerSecond: rate, Burst: burst}}}}})
	frame := packet.Build(udp("10.8.0.1", 9001, 0))

	const runFor = time.Second
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for cpu := 0; cpu < 2; cpu++ {
		wg.Add(1)
		go func(cpu int) {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errs <- err
				return
			}
			for i := 0; i < 100000 && time.Since(start) < runFor; i++ {
				if _, err := d.XDP().Run(&ebpf.RunOptions{Data: frame, Repeat: 2000}); err != nil {
					errs <- err
					return
				}
			}
		}(cpu)
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	cs := counterMap(t, d)
	passed = cs[[2]uint8{uint8(ActionPass), uint8(GuardAgReasonAG_R_OK)}]
	dropped := cs[[2]uint8{uint8(ActionDrop), uint8(GuardAgReasonAG_R_CLIENT_PPS)}]
	allowed = rate*elapsed.Seconds() + burst
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// An offered load close to the limit says nothing about the lower bound.
	overLimit = dropped >= 3*passed
	return passed, allowed, overLimit, fmt.Sprintf("%.3fs: %d passed (%.1f%% of %.0f allowed), %d dropped; CAS gave up %d times",
		elapsed.Seconds(), passed, 100*float64(passed)/allowed, allowed, dropped, st.CASContended)
}
