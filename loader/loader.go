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
	defaultClientCapacity  = 1 << 17
	defaultPrefixCapacity  = 1 << 16
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
		o.FlowCapacity = defaultFlowCapacity
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
}

// Load loads the datapath. With a PinDir, maps already pinned there are adopted
// (their state and the policy in force carry over) and new ones are pinned.
func Load(opts Options) (*Datapath, error) {
	opts.setDefaults()
	spec, err := LoadGuard()
	if err != nil {
		return nil, fmt.Errorf("read embedded BPF object: %w", err)
	}
	if err := prepare(spec, opts); err != nil {
		return nil, err
	}

	if opts.PinDir != "" {
		if _, err := EnsureBPFFS(opts.PinDir); err != nil {
			return nil, err
		}
	}
	replacements, err := pinnedMaps(spec, opts.PinDir)
	if err != nil {
		return nil, err
	}
	d := &Datapath{opts: opts, adopted: len(replacements) > 0, links: map[string]link.Link{}}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: replacements})
	for _, m := range replacements {
		// the collection holds its own reference; ours is no longer needed
		m.Close()
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
		if err := d.pinMaps(replacements); err != nil {
			d.objs.Close()
			return nil, err
		}
	}
	if err := d.readSlots(); err != nil {
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

// pinnedMaps opens every map already pinned under pinDir, so the new programs
// share the old state. A pinned map whose layout differs is an error: silently
// replacing it would drop bans and client state.
func pinnedMaps(spec *ebpf.CollectionSpec, pinDir string) (map[string]*ebpf.Map, error) {
	out := map[string]*ebpf.Map{}
	if pinDir == "" {
		return out, nil
	}
	for name, ms := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(pinDir, mapsDir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("open pinned map %s: %w", path, err)
		}
		if err := ms.Compatible(m); err != nil {
			m.Close()
			closeAll(out)
			return nil, fmt.Errorf("pinned map %s does not match this build (run 'apiguard detach' to start afresh): %w", path, err)
		}
		out[name] = m
	}
	return out, nil
}

func closeAll(ms map[string]*ebpf.Map) {
	for _, m := range ms {
		m.Close()
	}
}

func (d *Datapath) pinMaps(adopted map[string]*ebpf.Map) error {
	dir := filepath.Join(d.opts.PinDir, mapsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory %s: %w", dir, err)
	}
	for name, m := range d.namedMaps() {
		if _, ok := adopted[name]; ok {
			continue
		}
		if err := m.Pin(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	return nil
}

func (d *Datapath) namedMaps() map[string]*ebpf.Map {
	m := &d.objs.GuardMaps
	return map[string]*ebpf.Map{
		GuardMapActive: m.Active, GuardMapConfig: m.Config, GuardMapPorts: m.Ports,
		GuardMapServices: m.Services, GuardMapServiceState: m.ServiceState,
		GuardMapLists40: m.Lists40, GuardMapLists41: m.Lists41,
		GuardMapLists60: m.Lists60, GuardMapLists61: m.Lists61,
		GuardMapBans4: m.Bans4, GuardMapBans6: m.Bans6,
		GuardMapClients: m.Clients, GuardMapPrefixes: m.Prefixes,
		GuardMapCounters: m.Counters, GuardMapStats: m.Stats, GuardMapEvents: m.Events,
		GuardMapEventThrottle: m.EventThrottle, GuardMapEventBudgets: m.EventBudgets, GuardMapRefusals: m.Refusals,
		// connection filtering (ct_scratch is per-packet scratch: not pinned)
		GuardMapAcl: m.Acl, GuardMapConnServices: m.ConnServices, GuardMapFlows: m.Flows,
		GuardMapConnClients: m.ConnClients, GuardMapConnTotals: m.ConnTotals,
		// clients with a proven handshake (proven.h)
		GuardMapProven: m.Proven,
		// sources proven by a completed handshake, and the handshakes
		// awaiting their last ACK (proof.go)
		GuardMapProvenSources: m.ProvenSources, GuardMapHandshakes: m.Handshakes,
		// fragments (frag.h): later fragments keep following their first across restarts
		GuardMapFrags: m.Frags, GuardMapFragBudget: m.FragBudget,
		// the interfaces attached, for the egress hook's test of forwarded segments (egress.go)
		GuardMapGuardedIfaces: m.GuardedIfaces,
	}
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
