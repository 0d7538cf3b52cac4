package difffuzz

import (
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/policy"
	"github.com/cilium/ebpf"
)

var (
	framesFlag   = flag.Int("difffuzz.frames", 20000, "frames to run (make test)")
	durationFlag = flag.Duration("difffuzz.duration", 0, "run for this long instead (make fuzz)")
	seedFlag     = flag.Uint64("difffuzz.seed", 0, "seed to replay a run (0: a new one)")
)

const (
	// datagrams entered this recently are surely still in the kernel's
	// fragment table (16,384 entries, an LRU)
	fragTableSure  = 2048
	framesPerRound = 400
	maxReports     = 10
	xdpDrop        = 1
	xdpPass        = 2
	tcOK           = 0
	tcShot         = 2
)

// hook is one entry point of the datapath under test, with a datapath of its
// own: each sees the frames once, in the same order, so both hold the state
// the model holds (the few frames TC cannot be handed, tcRunnable, carry no
// state: no IPv4 or IPv6 header). prog.Run hands TC the frame as it is (no tag moved out of
// it, as the live receive path does), which is what the model reads.
type hook struct {
	name       string
	d          *loader.Datapath
	prog       func() *ebpf.Program
	drop, pass uint32
	// every verdict the model gave for a frame this hook ran
	counts map[Verdict]uint64
}

// TestDifferential runs random frames under random policies through the
// kernel programs (BPF_PROG_TEST_RUN), XDP and TC, and through the model, and
// fails on the first frames whose verdicts differ: each program's action and
// the one (action, reason) counter each frame must move.
func TestDifferential(t *testing.T) {
	testenv.RequireRoot(t)
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -difffuzz.seed %d)", seed, seed)
	h := &harness{t: t, gen: NewGen(seed), counts: map[Verdict]uint64{}}
	for _, name := range []string{"xdp", "tc"} {
		d, err := loader.Load(loader.Options{})
		if err != nil {
			t.Fatalf("load the datapath: %v", err)
		}
		defer d.Close()
		hk := hook{name: name, d: d, prog: d.XDP, drop: xdpDrop, pass: xdpPass, counts: map[Verdict]uint64{}}
		if name == "tc" {
			hk.prog, hk.drop, hk.pass = d.TC, tcShot, tcOK
		}
		h.hooks = append(h.hooks, hk)
	}
	deadline := time.Now().Add(*durationFlag)
	more := func() bool {
		if *durationFlag > 0 {
			return time.Now().Before(deadline)
		}
		return h.frames < *framesFlag
	}
	start := time.Now()
	for more() && h.reports < maxReports {
		h.round()
	}
	h.checkAllCounters()
	t.Logf("%d frames through XDP and %d of them through TC, in %d rounds (%d policies) in %v; %d disagreements",
		h.frames, h.frames-h.skippedTC, h.rounds, h.policies, time.Since(start).Round(time.Millisecond), h.reports)
	var lines []string
	for v, n := range h.counts {
		lines = append(lines, fmt.Sprintf("%s/%s %d", v.Action, v.Reason, n))
	}
	slices.Sort(lines)
	t.Logf("verdicts: %s", strings.Join(lines, ", "))
}

type harness struct {
	t      *testing.T
	hooks  []hook
	gen    *Gen
	model  *Model
	yaml   string
	prev   *loader.Policy
	bans   []Ban
	counts map[Verdict]uint64 // every verdict the model gave, since the start
	frames int
	// frames BPF_PROG_TEST_RUN refuses to hand TC (tcRunnable): XDP alone judged them
	skippedTC int
	rounds    int
	policies  int
	reports   int
}

// round draws a policy and bans, applies them, and runs a batch of frames;
// now and then the policy changes in the middle (later fragments then meet
// the new one).
func (h *harness) round() {
	h.rounds++
	h.apply(h.gen.Policy())
	h.setBans(h.gen.Bans())
	for i := 0; i < framesPerRound && h.reports < maxReports; i++ {
		if i == framesPerRound/2 && h.gen.chance(0.3) {
			h.apply(h.gen.Policy())
		}
		if (i == framesPerRound/4 || i == 3*framesPerRound/4) && h.gen.chance(0.4) {
			h.changeBans()
		}
		h.one()
	}
}

func (h *harness) apply(p Policy) {
	h.t.Helper()
	h.policies++
	h.yaml = p.YAML()
	h.gen.Use(p)
	parsed, err := policy.Parse("difffuzz.yaml", []byte(h.yaml), nil)
	if err != nil {
		h.t.Fatalf("a drawn policy was refused (the generator or the validator is wrong):\n%s\n%v", h.yaml, err)
	}
	lp, err := parsed.Compile(h.prev)
	if err != nil {
		h.t.Fatalf("compile:\n%s\n%v", h.yaml, err)
	}
	for _, hk := range h.hooks {
		if _, err := hk.d.Apply(lp); err != nil {
			h.t.Fatalf("apply (%s):\n%s\n%v", hk.name, h.yaml, err)
		}
	}
	h.prev = lp
	if h.model == nil {
		h.model = NewModel(p, nil)
	}
	h.model.Policy = p
}

func (h *harness) setBans(bans []Ban) {
	h.t.Helper()
	for _, b := range h.bans {
		for _, hk := range h.hooks {
			if err := hk.d.Unban(b.Prefix); err != nil {
				h.t.Fatalf("unban %v: %v", b.Prefix, err)
			}
		}
	}
	h.bans = h.bans[:0]
	seen := map[string]bool{}
	for _, b := range bans {
		if seen[b.Prefix.String()] { // one ban per prefix: the last drawn wins
			continue
		}
		seen[b.Prefix.String()] = true
		lb := loader.Ban{Prefix: b.Prefix}
		if b.Expired {
			lb.Expires = time.Now().Add(-time.Minute)
		}
		for _, hk := range h.hooks {
			if err := hk.d.Ban(lb); err != nil {
				h.t.Fatalf("ban %v: %v", b.Prefix, err)
			}
		}
		h.bans = append(h.bans, b)
	}
	h.model.Bans = h.bans
}

// changeBans changes the bans while frames flow, as the daemon does: the
// sweeper frees the expired ones (which rebuilds the ban prefilters, clearing
// bits), one ban in force may be lifted (which clears none), and new ones
// are added (each sets its bits before its entry).
func (h *harness) changeBans() {
	h.t.Helper()
	now := time.Now()
	for _, hk := range h.hooks {
		if _, err := hk.d.SweepBans(now); err != nil {
			h.t.Fatalf("sweep bans (%s): %v", hk.name, err)
		}
	}
	kept := h.bans[:0]
	for _, b := range h.bans {
		if !b.Expired {
			kept = append(kept, b)
		}
	}
	h.bans = kept
	if len(h.bans) > 0 && h.gen.chance(0.5) {
		i := h.gen.pick(len(h.bans))
		for _, hk := range h.hooks {
			if err := hk.d.Unban(h.bans[i].Prefix); err != nil {
				h.t.Fatalf("unban %v: %v", h.bans[i].Prefix, err)
			}
		}
		h.bans = append(h.bans[:i], h.bans[i+1:]...)
	}
	for _, b := range h.gen.Bans() {
		lb := loader.Ban{Prefix: b.Prefix}
		if b.Expired {
			lb.Expires = now.Add(-time.Minute)
		}
		for _, hk := range h.hooks {
			if err := hk.d.Ban(lb); err != nil {
				h.t.Fatalf("ban %v: %v", b.Prefix, err)
			}
		}
		// one ban per prefix: this one replaced any drawn before
		h.bans = slices.DeleteFunc(h.bans, func(o Ban) bool { return o.Prefix == b.Prefix })
		h.bans = append(h.bans, b)
	}
	h.model.Bans = h.bans
}

// one runs a frame through both and compares.
func (h *harness) one() {
	h.t.Helper()
	var frame []byte
	for {
		frame = h.gen.Frame()
		// the kernel's clock and this one may disagree at the table's
		// timeout, and its LRU may have let old datagrams go
		if !h.model.Ambiguous(frame, time.Now(), 5*time.Second, fragTableSure) {
			break
		}
	}
	want := h.model.Judge(frame, time.Now())
	h.counts[want]++
	h.frames++
	a, r, ok := names(want)
	if !ok {
		h.report(frame, want, "the model gave a verdict the datapath has no counter for")
		return
	}
	for _, hk := range h.hooks {
		if hk.name == "tc" && !tcRunnable(frame) {
			h.skippedTC++
			continue
		}
		before, err := hk.d.Counter(a, r)
		if err != nil {
			h.t.Fatal(err)
		}
		ret, err := hk.prog().Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			h.t.Fatalf("prog.Run (%s) on %d bytes: %v", hk.name, len(frame), err)
		}
		after, err := hk.d.Counter(a, r)
		if err != nil {
			h.t.Fatal(err)
		}
		wantRet := hk.pass
		if want.Action == "drop" {
			wantRet = hk.drop
		}
		hk.counts[want]++
		if ret != wantRet || after.Packets != before.Packets+1 {
			h.report(frame, want, fmt.Sprintf("%s returned %s and moved %s", hk.name, hk.retName(ret), h.whatMoved(hk, frame)))
			return
		}
	}
}

// whatMoved runs the frame again and says which counter it moves (the
// second run sees the state the first left, which is what the first saw
// for everything but the fragment table).
func (h *harness) whatMoved(hk hook, frame []byte) string {
	before, err := hk.d.Counters()
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := hk.prog().Run(&ebpf.RunOptions{Data: frame}); err != nil {
		h.t.Fatal(err)
	}
	after, err := hk.d.Counters()
	if err != nil {
		h.t.Fatal(err)
	}
	var moved []string
	for i := range after {
		if after[i].Packets != before[i].Packets {
			moved = append(moved, after[i].Action.String()+"/"+after[i].Reason.String())
		}
	}
	return strings.Join(moved, ", ") + " (on a second run)"
}

func (h *harness) report(frame []byte, want Verdict, got string) {
	h.t.Helper()
	h.reports++
	var bans []string
	for _, b := range h.bans {
		s := b.Prefix.String()
		if b.Expired {
			s += " (expired)"
		}
		bans = append(bans, s)
	}
	h.t.Errorf("frame %d: the model says %s/%s, %s\nframe: %s\nbans: %v\npolicy:\n%s",
		h.frames, want.Action, want.Reason, got, hex.EncodeToString(frame), bans, h.yaml)
}

// checkAllCounters compares every counter with the model's tally: no frame
// moved a counter besides its own.
func (h *harness) checkAllCounters() {
	h.t.Helper()
	if h.reports > 0 {
		return // the second runs of reported frames moved counters too
	}
	for _, hk := range h.hooks {
		cs, err := hk.d.Counters()
		if err != nil {
			h.t.Fatal(err)
		}
		for _, c := range cs {
			want := hk.counts[Verdict{c.Action.String(), c.Reason.String()}]
			if c.Packets != want {
				h.t.Errorf("%s: counter %v/%v is %d, the model counted %d", hk.name, c.Action, c.Reason, c.Packets, want)
			}
		}
	}
}

// names maps a verdict's labels to the datapath's action and reason.
func names(v Verdict) (loader.Action, loader.Reason, bool) {
	var a loader.Action
	switch v.Action {
	case "pass":
		a = loader.ActionPass
	case "drop":
		a = loader.ActionDrop
	case "monitor":
		a = loader.ActionMonitor
	default:
		return 0, 0, false
	}
	for _, r := range loader.Reasons() {
		if r.String() == v.Reason {
			return a, r, true
		}
	}
	return 0, 0, false
}

// tcRunnable says whether BPF_PROG_TEST_RUN takes frame for a TC program: it
// refuses an untagged IPv4 frame without a whole IPv4 header and an IPv6 one
// without a whole IPv6 header (EINVAL), which the live receive path hands TC
// all the same; XDP judges those.
func tcRunnable(frame []byte) bool {
	switch binary.BigEndian.Uint16(frame[12:]) {
	case etherIPv4:
		return len(frame) >= 14+20
	case etherIPv6:
		return len(frame) >= 14+40
	}
	return true
}

func (hk hook) retName(ret uint32) string {
	switch {
	case hk.name == "xdp" && ret == xdpDrop:
		return "XDP_DROP"
	case hk.name == "xdp" && ret == xdpPass:
		return "XDP_PASS"
	case hk.name == "tc" && ret == tcShot:
		return "TC_ACT_SHOT"
	case hk.name == "tc" && ret == tcOK:
		return "TC_ACT_OK"
	}
	return fmt.Sprintf("action %d", ret)
}
