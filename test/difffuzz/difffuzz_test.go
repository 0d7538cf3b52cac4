package difffuzz

import (
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
)

// TestDifferential runs random frames under random policies through the
// kernel program (BPF_PROG_TEST_RUN) and through the model, and fails on the
// first frames whose verdicts differ: the XDP action and the one (action,
// reason) counter each frame must move.
func TestDifferential(t *testing.T) {
	testenv.RequireRoot(t)
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -difffuzz.seed %d)", seed, seed)
	d, err := loader.Load(loader.Options{})
	if err != nil {
		t.Fatalf("load the datapath: %v", err)
	}
	defer d.Close()

	h := &harness{t: t, d: d, gen: NewGen(seed), counts: map[Verdict]uint64{}}
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
	t.Logf("%d frames in %d rounds (%d policies) in %v; %d disagreements", h.frames, h.rounds, h.policies,
		time.Since(start).Round(time.Millisecond), h.reports)
	var lines []string
	for v, n := range h.counts {
		lines = append(lines, fmt.Sprintf("%s/%s %d", v.Action, v.Reason, n))
	}
	slices.Sort(lines)
	t.Logf("verdicts: %s", strings.Join(lines, ", "))
}

type harness struct {
	t        *testing.T
	d        *loader.Datapath
	gen      *Gen
	model    *Model
	yaml     string
	prev     *loader.Policy
	bans     []Ban
	counts   map[Verdict]uint64 // every verdict the model gave, since the start
	frames   int
	rounds   int
	policies int
	reports  int
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
	if _, err := h.d.Apply(lp); err != nil {
		h.t.Fatalf("apply:\n%s\n%v", h.yaml, err)
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
		if err := h.d.Unban(b.Prefix); err != nil {
			h.t.Fatalf("unban %v: %v", b.Prefix, err)
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
		if err := h.d.Ban(lb); err != nil {
			h.t.Fatalf("ban %v: %v", b.Prefix, err)
		}
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
	before, err := h.d.Counter(a, r)
	if err != nil {
		h.t.Fatal(err)
	}
	ret, err := h.d.XDP().Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		h.t.Fatalf("prog.Run on %d bytes: %v", len(frame), err)
	}
	after, err := h.d.Counter(a, r)
	if err != nil {
		h.t.Fatal(err)
	}
	wantRet := uint32(xdpPass)
	if want.Action == "drop" {
		wantRet = xdpDrop
	}
	if ret == wantRet && after.Packets == before.Packets+1 {
		return
	}
	h.report(frame, want, fmt.Sprintf("the kernel returned %s and moved %s", xdpName(ret), h.whatMoved(frame)))
}

// whatMoved runs the frame again and says which counter it moves (the
// second run sees the state the first left, which is what the first saw
// for everything but the fragment table).
func (h *harness) whatMoved(frame []byte) string {
	before, err := h.d.Counters()
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.d.XDP().Run(&ebpf.RunOptions{Data: frame}); err != nil {
		h.t.Fatal(err)
	}
	after, err := h.d.Counters()
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
	cs, err := h.d.Counters()
	if err != nil {
		h.t.Fatal(err)
	}
	if h.reports > 0 {
		return // the second runs of reported frames moved counters too
	}
	for _, c := range cs {
		want := h.counts[Verdict{c.Action.String(), c.Reason.String()}]
		if c.Packets != want {
			h.t.Errorf("counter %v/%v is %d, the model counted %d", c.Action, c.Reason, c.Packets, want)
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

func xdpName(ret uint32) string {
	switch ret {
	case xdpDrop:
		return "XDP_DROP"
	case xdpPass:
		return "XDP_PASS"
	}
	return fmt.Sprintf("XDP action %d", ret)
}
