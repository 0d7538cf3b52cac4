package loader

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// MaxServices is how many services one policy may define (ids 1..MaxServices).
const MaxServices = 63

const portsPerProto = 65536

// Protocols a service can match.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Rate is a limit of PerSecond units with a burst of Burst units.
// A zero PerSecond means unlimited.
type Rate struct {
	PerSecond uint64
	Burst     uint64
}

// Limits bound packets, bytes and new TCP connections (SYN without ACK).
type Limits struct {
	Packets Rate
	Bytes   Rate
	Conns   Rate
}

// PortRange is an inclusive range of destination ports.
type PortRange struct {
	First, Last uint16
}

// Service is a protocol and a set of ports with limits at three levels.
type Service struct {
	// ID must be unique in the policy and in 1..MaxServices. Keep it stable for a
	// service across policy changes: the per-client and total state is keyed by it.
	ID      uint32
	Name    string
	Proto   uint8
	Ports   []PortRange
	Monitor bool
	Client  Limits
	Prefix  Limits
	Total   Limits
}

// Policy is everything the datapath enforces, as plain values.
type Policy struct {
	Monitor       bool
	DefaultDrop   bool
	TCPFlagSanity bool
	ClientBits4   uint8 // default 32
	ClientBits6   uint8 // default 64
	PrefixBits4   uint8 // default 24
	PrefixBits6   uint8 // default 48
	Allow         []netip.Prefix
	Deny          []netip.Prefix
	Services      []Service
}

// ApplyResult says what an Apply changed.
type ApplyResult struct {
	Generation uint32
	Changed    bool
	// Map entries written or deleted in the slot that became active.
	PrefixWrites, PortWrites, ServiceWrites int
	Took                                    time.Duration
}

// image is one policy slot's contents exactly as the kernel holds them.
type image struct {
	cfg      GuardAgConfig
	ports    map[uint32]uint32 // index within the slot -> service id
	services map[uint32]GuardAgService
	allow4   map[GuardAgLpm4]struct{}
	allow6   map[GuardAgLpm6]struct{}
	deny4    map[GuardAgLpm4]struct{}
	deny6    map[GuardAgLpm6]struct{}
}

func newImage() *image {
	return &image{
		ports:    map[uint32]uint32{},
		services: map[uint32]GuardAgService{},
		allow4:   map[GuardAgLpm4]struct{}{},
		allow6:   map[GuardAgLpm6]struct{}{},
		deny4:    map[GuardAgLpm4]struct{}{},
		deny6:    map[GuardAgLpm6]struct{}{},
	}
}

// gcraParams turns a rate and burst into the kernel's interval (ns per unit,
// 48.16 fixed point) and tolerance (ns).
func gcraParams(perSecond, burst uint64) (interval, tolerance uint64) {
	if perSecond == 0 {
		return 0, 0
	}
	interval = (uint64(time.Second) << 16) / perSecond
	if interval == 0 {
		interval = 1
	}
	hi, lo := bits.Mul64(burst, uint64(time.Second))
	if hi >= perSecond {
		return interval, math.MaxUint64 / 2
	}
	tolerance, _ = bits.Div64(hi, lo, perSecond)
	return interval, tolerance
}

func limitsFor(l Limits) [3]GuardAgLimit {
	var out [3]GuardAgLimit
	for i, r := range []Rate{l.Packets, l.Bytes, l.Conns} {
		out[i].Interval, out[i].Tolerance = gcraParams(r.PerSecond, r.Burst)
	}
	return out
}

func orDefault(v, def uint8) uint8 {
	if v == 0 {
		return def
	}
	return v
}

// compile checks the invariants the kernel relies on and builds the slot image.
// Richer validation (with file and line) is userspace/policy's job.
func compile(p *Policy) (*image, error) {
	img := newImage()
	b := func(v bool) uint8 {
		if v {
			return 1
		}
		return 0
	}
	img.cfg = GuardAgConfig{
		Monitor:       b(p.Monitor),
		DefaultDrop:   b(p.DefaultDrop),
		TcpFlagSanity: b(p.TCPFlagSanity),
		ClientBits4:   orDefault(p.ClientBits4, 32),
		ClientBits6:   orDefault(p.ClientBits6, 64),
		PrefixBits4:   orDefault(p.PrefixBits4, 24),
		PrefixBits6:   orDefault(p.PrefixBits6, 48),
	}
	if img.cfg.ClientBits4 > 32 || img.cfg.PrefixBits4 > 32 {
		return nil, fmt.Errorf("IPv4 key lengths must be at most 32 (client %d, prefix %d)", img.cfg.ClientBits4, img.cfg.PrefixBits4)
	}
	if img.cfg.ClientBits6 > 128 || img.cfg.PrefixBits6 > 128 {
		return nil, fmt.Errorf("IPv6 key lengths must be at most 128 (client %d, prefix %d)", img.cfg.ClientBits6, img.cfg.PrefixBits6)
	}
	for _, pfx := range p.Allow {
		if err := addPrefix(pfx, img.allow4, img.allow6); err != nil {
			return nil, fmt.Errorf("allow: %w", err)
		}
	}
	for _, pfx := range p.Deny {
		if err := addPrefix(pfx, img.deny4, img.deny6); err != nil {
			return nil, fmt.Errorf("deny: %w", err)
		}
	}
	for _, s := range p.Services {
		if s.ID == 0 || s.ID > MaxServices {
			return nil, fmt.Errorf("service %q: id %d outside 1..%d", s.Name, s.ID, MaxServices)
		}
		if _, dup := img.services[s.ID]; dup {
			return nil, fmt.Errorf("service %q: id %d used twice", s.Name, s.ID)
		}
		var base uint32
		switch s.Proto {
		case ProtoTCP:
		case ProtoUDP:
			base = portsPerProto
		default:
			return nil, fmt.Errorf("service %q: protocol %d is neither TCP nor UDP", s.Name, s.Proto)
		}
		svc := GuardAgService{Id: s.ID, Monitor: b(s.Monitor)}
		svc.Limits[0] = limitsFor(s.Client)
		svc.Limits[1] = limitsFor(s.Prefix)
		svc.Limits[2] = limitsFor(s.Total)
		img.services[s.ID] = svc
		for _, r := range s.Ports {
			if r.First == 0 || r.First > r.Last {
				return nil, fmt.Errorf("service %q: bad port range %d-%d", s.Name, r.First, r.Last)
			}
			for port := uint32(r.First); port <= uint32(r.Last); port++ {
				if other, taken := img.ports[base+port]; taken {
					return nil, fmt.Errorf("service %q: port %d already belongs to service id %d", s.Name, port, other)
				}
				img.ports[base+port] = s.ID
			}
		}
	}
	return img, nil
}

func addPrefix(p netip.Prefix, m4 map[GuardAgLpm4]struct{}, m6 map[GuardAgLpm6]struct{}) error {
	if !p.IsValid() {
		return fmt.Errorf("invalid prefix %v", p)
	}
	p = p.Masked()
	if p.Addr().Is4() {
		m4[lpm4(p)] = struct{}{}
		return nil
	}
	m6[lpm6(p)] = struct{}{}
	return nil
}

func lpm4(p netip.Prefix) GuardAgLpm4 {
	return GuardAgLpm4{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}
}

func lpm6(p netip.Prefix) GuardAgLpm6 {
	return GuardAgLpm6{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}

func (a *image) samePolicy(b *image) bool {
	ca, cb := a.cfg, b.cfg
	ca.Generation, cb.Generation = 0, 0
	return ca == cb && mapsEqual(a.ports, b.ports) && mapsEqual(a.services, b.services) &&
		setsEqual(a.allow4, b.allow4) && setsEqual(a.allow6, b.allow6) &&
		setsEqual(a.deny4, b.deny4) && setsEqual(a.deny6, b.deny6)
}

func mapsEqual[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func setsEqual[K comparable](a, b map[K]struct{}) bool { return mapsEqual(a, b) }

// Apply makes p the policy in force, atomically: it writes the inactive slot
// (only the entries that differ from what that slot holds), then flips one word.
// Applying the policy already in force writes nothing. On error the policy in
// force is untouched.
func (d *Datapath) Apply(p *Policy) (ApplyResult, error) {
	start := time.Now()
	img, err := compile(p)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("compile policy: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	cur := d.slots[d.active]
	if cur.samePolicy(img) && cur.cfg.Generation != 0 {
		return ApplyResult{Generation: cur.cfg.Generation, Took: time.Since(start)}, nil
	}
	target := 1 - d.active
	img.cfg.Generation = cur.cfg.Generation + 1
	// A packet that read the old active slot just before the last flip may still
	// be running; give it far more than a packet's lifetime before reusing the slot.
	if wait := applySettle - time.Since(d.lastFlip); wait > 0 {
		time.Sleep(wait)
	}
	res, err := d.writeSlot(target, d.slots[target], img)
	if err != nil {
		// what the inactive slot holds is now unknown: read it back
		if back, rerr := d.readSlot(target); rerr == nil {
			d.slots[target] = back
		}
		return ApplyResult{}, err
	}
	if err := d.objs.Active.Update(uint32(0), target, ebpf.UpdateAny); err != nil {
		return ApplyResult{}, fmt.Errorf("switch to policy slot %d: %w", target, err)
	}
	d.lastFlip = time.Now()
	d.active = target
	d.slots[target] = img
	res.Generation = img.cfg.Generation
	res.Changed = true
	res.Took = time.Since(start)
	return res, nil
}

// Generation is the generation of the policy in force (0: none applied yet).
func (d *Datapath) Generation() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.slots[d.active].cfg.Generation
}

func (d *Datapath) slotMaps(slot uint32) (allow4, allow6, deny4, deny6 *ebpf.Map) {
	m := &d.objs.GuardMaps
	if slot == 0 {
		return m.Allow40, m.Allow60, m.Deny40, m.Deny60
	}
	return m.Allow41, m.Allow61, m.Deny41, m.Deny61
}

func (d *Datapath) writeSlot(slot uint32, old, img *image) (ApplyResult, error) {
	var res ApplyResult
	allow4, allow6, deny4, deny6 := d.slotMaps(slot)
	for _, step := range []struct {
		name string
		fn   func() (int, error)
	}{
		{"allow4", func() (int, error) { return syncSet(allow4, old.allow4, img.allow4) }},
		{"allow6", func() (int, error) { return syncSet(allow6, old.allow6, img.allow6) }},
		{"deny4", func() (int, error) { return syncSet(deny4, old.deny4, img.deny4) }},
		{"deny6", func() (int, error) { return syncSet(deny6, old.deny6, img.deny6) }},
	} {
		n, err := step.fn()
		res.PrefixWrites += n
		if err != nil {
			return res, fmt.Errorf("write %s list of slot %d: %w", step.name, slot, err)
		}
	}

	n, err := d.syncPorts(slot, old.ports, img.ports)
	res.PortWrites = n
	if err != nil {
		return res, err
	}
	for id := uint32(0); id < uint32(MaxServices)+1; id++ {
		want := img.services[id]
		if have, ok := old.services[id]; ok && have == want || !ok && want == (GuardAgService{}) {
			continue
		}
		if err := d.objs.Services.Update(slot*(MaxServices+1)+id, want, ebpf.UpdateAny); err != nil {
			return res, fmt.Errorf("write service %d of slot %d: %w", id, slot, err)
		}
		res.ServiceWrites++
	}
	if err := d.objs.Config.Update(slot, img.cfg, ebpf.UpdateAny); err != nil {
		return res, fmt.Errorf("write config of slot %d: %w", slot, err)
	}
	return res, nil
}

func (d *Datapath) syncPorts(slot uint32, old, want map[uint32]uint32) (int, error) {
	var keys, vals []uint32
	for idx, id := range want {
		if old[idx] != id {
			keys = append(keys, slot*2*portsPerProto+idx)
			vals = append(vals, id)
		}
	}
	for idx := range old {
		if _, ok := want[idx]; !ok {
			keys = append(keys, slot*2*portsPerProto+idx)
			vals = append(vals, 0)
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	if _, err := d.objs.Ports.BatchUpdate(keys, vals, nil); err != nil {
		return 0, fmt.Errorf("write port table of slot %d: %w", slot, err)
	}
	return len(keys), nil
}

// syncSet makes an LPM trie hold exactly want, given that it holds have.
func syncSet[K comparable](m *ebpf.Map, have, want map[K]struct{}) (int, error) {
	var add, del []K
	for k := range want {
		if _, ok := have[k]; !ok {
			add = append(add, k)
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			del = append(del, k)
		}
	}
	for _, k := range del {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("delete %v: %w", k, err)
		}
	}
	if err := batchInsert(m, add); err != nil {
		return 0, err
	}
	return len(add) + len(del), nil
}

// batchInsert writes keys with value 1, in batches where the map supports it.
func batchInsert[K comparable](m *ebpf.Map, keys []K) error {
	const chunk = 8192
	ones := make([]uint32, min(chunk, len(keys)))
	for i := range ones {
		ones[i] = 1
	}
	for start := 0; start < len(keys); start += chunk {
		part := keys[start:min(start+chunk, len(keys))]
		_, err := m.BatchUpdate(part, ones[:len(part)], nil)
		if err == nil {
			continue
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("insert %d prefixes: %w", len(part), err)
		}
		for _, k := range part {
			if err := m.Update(k, uint32(1), ebpf.UpdateAny); err != nil {
				return fmt.Errorf("insert %v: %w", k, err)
			}
		}
	}
	return nil
}

// readSlots reads both policy slots back from the kernel, so a restarted daemon
// knows exactly what is in force and diffs against it.
func (d *Datapath) readSlots() error {
	var active uint32
	if err := d.objs.Active.Lookup(uint32(0), &active); err != nil {
		return fmt.Errorf("read active policy slot: %w", err)
	}
	d.active = active & 1
	for slot := uint32(0); slot < 2; slot++ {
		img, err := d.readSlot(slot)
		if err != nil {
			return err
		}
		d.slots[slot] = img
	}
	return nil
}

func (d *Datapath) readSlot(slot uint32) (*image, error) {
	img := newImage()
	if err := d.objs.Config.Lookup(slot, &img.cfg); err != nil {
		return nil, fmt.Errorf("read config of slot %d: %w", slot, err)
	}
	allow4, allow6, deny4, deny6 := d.slotMaps(slot)
	if err := readSet(allow4, img.allow4); err != nil {
		return nil, err
	}
	if err := readSet(allow6, img.allow6); err != nil {
		return nil, err
	}
	if err := readSet(deny4, img.deny4); err != nil {
		return nil, err
	}
	if err := readSet(deny6, img.deny6); err != nil {
		return nil, err
	}
	keys := make([]uint32, 2*portsPerProto)
	vals := make([]uint32, 2*portsPerProto)
	var cursor ebpf.MapBatchCursor
	// an array's batch cursor is an index: skip to this slot by reading the other first
	got := 0
	for got < int(slot+1)*2*portsPerProto {
		n, err := d.objs.Ports.BatchLookup(&cursor, keys, vals, nil)
		if n == 0 && err != nil {
			return nil, fmt.Errorf("read port table: %w", err)
		}
		for i := 0; i < n; i++ {
			if keys[i]/(2*portsPerProto) == slot && vals[i] != 0 {
				img.ports[keys[i]%(2*portsPerProto)] = vals[i]
			}
		}
		got += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
	}
	for id := uint32(1); id <= MaxServices; id++ {
		var svc GuardAgService
		if err := d.objs.Services.Lookup(slot*(MaxServices+1)+id, &svc); err != nil {
			return nil, fmt.Errorf("read service %d of slot %d: %w", id, slot, err)
		}
		if svc != (GuardAgService{}) {
			img.services[id] = svc
		}
	}
	return img, nil
}

func readSet[K comparable](m *ebpf.Map, into map[K]struct{}) error {
	var k K
	var v uint32
	it := m.Iterate()
	for it.Next(&k, &v) {
		into[k] = struct{}{}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %v: %w", m, err)
	}
	return nil
}
