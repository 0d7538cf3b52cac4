package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// DefaultPinDir is where maps and links live so that enforcement outlives the daemon.
const DefaultPinDir = "/sys/fs/bpf/apiguard"

// Options are fixed when the programs load. Zero values take the defaults below.
type Options struct {
	// PinDir is the bpffs directory for maps and links; empty means nothing is
	// pinned and everything goes away with Close (tests, benchmarks).
	PinDir string
	// EventInterval is the least time between two events of one type for one client.
	EventInterval time.Duration
	// EventsPerSecond bounds each event type's events across all CPUs: the
	// ring buffer's input is at most that many per type (bpf/include/events.h).
	EventsPerSecond uint32
	// ClientCapacity and PrefixCapacity size the per-client and per-prefix LRU maps.
	ClientCapacity uint32
	PrefixCapacity uint32
	// FlowCapacity sizes the flow table of connections to capped services
	// (and the per-client connection counts); see docs/conntrack.md.
	FlowCapacity uint32
}

const (
	defaultEventInterval   = time.Second
	defaultEventsPerSecond = 5000
	defaultClientCapacity  = uint32(GuardAgConstAG_CLIENT_CAPACITY)
	defaultPrefixCapacity  = uint32(GuardAgConstAG_PREFIX_CAPACITY)
	mapsDir                = "maps"
	linksDir               = "links"
	applySettle            = 10 * time.Millisecond
)

func (o *Options) setDefaults() {
	if o.EventInterval == 0 {
		o.EventInterval = defaultEventInterval
	}
	if o.EventsPerSecond == 0 {
		o.EventsPerSecond = defaultEventsPerSecond
	}
	if o.ClientCapacity == 0 {
		o.ClientCapacity = defaultClientCapacity
	}
	if o.PrefixCapacity == 0 {
		o.PrefixCapacity = defaultPrefixCapacity
	}
	if o.FlowCapacity == 0 {
		o.FlowCapacity = DefaultFlowCapacity
	}
}

// Datapath is the loaded programs and maps. It is safe for concurrent use.
type Datapath struct {
	objs GuardObjects
	// byName is every map of objs by its name in the object
	byName  map[string]*ebpf.Map
	opts    Options
	adopted bool

	mu       sync.Mutex
	slots    [2]*image
	active   uint32
	lastFlip time.Time
	// mirrorDone is closed when the background update of the inactive slot ends.
	mirrorDone chan struct{}
	closed     bool
	links      map[string]link.Link // only when not pinned
	// svc names the kernel's per-service counters (svccount.go)
	svc svcCounts

	// banMu orders the writers of the ban tries and their prefilters
	// (prefilter.go); banPF is what the kernel's ban bitmaps hold.
	banMu sync.Mutex
	banPF [2]GuardAgPrefilter
}

// Load loads the datapath. With a PinDir, maps already pinned there are adopted
// (their state and the policy in force carry over) and new ones are pinned
// (pins.go).
func Load(opts Options) (*Datapath, error) {
	opts.setDefaults()
	spec, err := LoadGuard()
	if err != nil {
		return nil, fmt.Errorf("read embedded BPF object: %w", err)
	}
	return loadSpec(spec, opts)
}

// loadSpec loads the datapath from spec (the embedded object; a test changes
// it to play an older kernel).
func loadSpec(spec *ebpf.CollectionSpec, opts Options) (*Datapath, error) {
	if err := prepare(spec, opts); err != nil {
		return nil, err
	}
	if err := checkPinning(spec); err != nil {
		return nil, err
	}
	if opts.PinDir == "" {
		unpinned(spec)
	}
	d := &Datapath{opts: opts, links: map[string]link.Link{}}
	var (
		copts ebpf.CollectionOptions
		err   error
	)
	if opts.PinDir != "" {
		if _, err := EnsureBPFFS(opts.PinDir); err != nil {
			return nil, err
		}
		dir := filepath.Join(opts.PinDir, mapsDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory %s: %w", dir, err)
		}
		if d.adopted, err = checkPinnedLayouts(spec, dir); err != nil {
			return nil, err
		}
		copts.Maps.PinPath = dir
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, copts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("a map pinned under %s does not match this build (run 'apiguard detach' to start afresh): %w", copts.Maps.PinPath, err)
	}
	if err != nil {
		return nil, loadError(err)
	}
	d.byName = map[string]*ebpf.Map{}
	for name, m := range coll.Maps {
		if !strings.HasPrefix(name, ".") { // data sections: the programs hold them
			d.byName[name] = m
		}
	}
	if err := coll.Assign(&d.objs); err != nil {
		coll.Close()
		return nil, fmt.Errorf("assign BPF objects: %w", err)
	}
	coll.Close() // Assign took what it needs; the rest (rodata) is held by the programs
	if opts.PinDir != "" {
		if err := d.recordLayouts(spec); err != nil {
			d.objs.Close()
			return nil, err
		}
	}
	if err := d.readSlots(); err != nil {
		d.objs.Close()
		return nil, err
	}
	if err := d.rebuildPrefilters(); err != nil {
		d.objs.Close()
		return nil, err
	}
	if err := d.initSynProxyKeys(); err != nil {
		d.objs.Close()
		return nil, err
	}
	return d, nil
}

// prepare gives an object built from bpf/apiguard.c the load-time constants
// and map sizes of opts.
func prepare(spec *ebpf.CollectionSpec, opts Options) error {
	if err := setConstants(spec, opts); err != nil {
		return err
	}
	for name, size := range map[string]uint32{
		GuardMapClients: opts.ClientCapacity, GuardMapPrefixes: opts.PrefixCapacity,
		GuardMapFlows: opts.FlowCapacity, GuardMapConnClients: opts.FlowCapacity,
	} {
		ms, ok := spec.Maps[name]
		if !ok {
			return fmt.Errorf("BPF object has no map %s: it was built from other sources", name)
		}
		ms.MaxEntries = size
	}
	return nil
}

func setConstants(spec *ebpf.CollectionSpec, opts Options) error {
	v, ok := spec.Variables["consts"]
	if !ok {
		return errors.New("BPF object has no 'consts' variable: it was built from other sources")
	}
	interval, tolerance := gcraParams(uint64(opts.EventsPerSecond), uint64(opts.EventsPerSecond))
	c := GuardAgConsts{
		EventInterval:      uint64(opts.EventInterval.Nanoseconds()),
		EventRateInterval:  interval,
		EventRateTolerance: tolerance,
		NrCpus:             uint32(runtime.NumCPU()),
		ClientCapacity:     opts.ClientCapacity,
		PrefixCapacity:     opts.PrefixCapacity,
	}
	if possible, err := ebpf.PossibleCPU(); err == nil {
		c.NrCpus = uint32(possible)
	}
	if err := v.Set(c); err != nil {
		return fmt.Errorf("set load-time constants: %w", err)
	}
	return nil
}

// Adopted reports whether Load found pinned state from an earlier run.
func (d *Datapath) Adopted() bool { return d.adopted }

// XDP and TC expose the ingress programs for tests.
func (d *Datapath) XDP() *ebpf.Program { return d.objs.ApiguardXdp }
func (d *Datapath) TC() *ebpf.Program  { return d.objs.ApiguardTc }

// LoadAlongside loads the programs of spec that the datapath does not have,
// against its maps and load-time constants: spec is a test object that
// #includes bpf/apiguard.c (test/bench/guardbench), so its programs run the
// datapath's own code on the datapath's state, and the shipped object carries
// nothing for tests. Maps the datapath does not have are the object's own.
// The caller closes the collection.
func (d *Datapath) LoadAlongside(spec *ebpf.CollectionSpec) (*ebpf.Collection, error) {
	spec = spec.Copy()
	if err := prepare(spec, d.opts); err != nil {
		return nil, err
	}
	unpinned(spec) // the datapath's maps are shared below, the object's own are its own
	own, err := LoadGuard()
	if err != nil {
		return nil, fmt.Errorf("read embedded BPF object: %w", err)
	}
	for name := range own.Programs {
		delete(spec.Programs, name)
	}
	replace := map[string]*ebpf.Map{}
	for name, m := range d.byName {
		if _, ok := spec.Maps[name]; ok {
			replace[name] = m
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: replace})
	if err != nil {
		return nil, loadError(err)
	}
	return coll, nil
}

// EventsMap is the ring buffer that userspace/events reads.
func (d *Datapath) EventsMap() *ebpf.Map { return d.objs.Events }

// Close releases this process's handles. Pinned maps and links stay and keep
// enforcing; unpinned attachments are detached.
func (d *Datapath) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.waitMirror()
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for name, l := range d.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link %s: %w", name, err))
		}
	}
	d.links = map[string]link.Link{}
	if err := d.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close BPF objects: %w", err))
	}
	return errors.Join(errs...)
}

// loadError keeps the end of a verifier log, where the reason is, and wraps it.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return fmt.Errorf("load BPF programs: %w", err)
	}
	log := ve.Log
	const keep = 20
	if len(log) > keep {
		log = log[len(log)-keep:]
	}
	return fmt.Errorf("the kernel verifier rejected apiguard's programs (last %d log lines):\n%s\n%w",
		len(log), strings.Join(log, "\n"), err)
}
