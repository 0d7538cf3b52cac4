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

// Protocols a service can match.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Rate is a limit of PerSecond units per second with a burst of Burst units,
// or, when PerSecond is 0, of PerMinute units per minute: a rate that is not
// a whole number per second, such as 30/m. Both zero means unlimited.
type Rate struct {
	PerSecond uint64
	Burst     uint64
	PerMinute uint64
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
	// ACL, when not empty, is the only sources that may reach the service
	// (conntrack.go); others are dropped with reason acl.
	ACL []netip.Prefix
	// MaxConns caps concurrent TCP connections, followed in the kernel.
	MaxConns ConnLimits
	// Fragments bounds the IP fragments (first and later) of all the
	// service's clients together; zero is no budget (bpf/include/frag.h).
	Fragments Rate
	// SynProxy says when the datapath answers the service's SYNs with SYN
	// cookies (synproxy.go): never, while its total new-connection limit
	// is exhausted (auto), or always. TCP only, and inactive while the
	// service or the policy is monitored.
	SynProxy SynProxyMode
}

// SynProxyMode is when a service's SYNs are answered with SYN cookies.
type SynProxyMode uint8

const (
	SynProxyOff SynProxyMode = iota
	// SynProxyAuto: from the first SYN its total new-connection limit
	// would refuse until that limit has conformed for SynProxyHold (the
	// kernel decides, per SYN: bpf/include/synproxy.h synproxy_claims).
	SynProxyAuto
	SynProxyAlways
)

// SynProxyHold is how long auto stays on after the last SYN over the
// service's total new-connection limit (SP_AUTO_HOLD in synproxy.h).
const SynProxyHold = 10 * time.Second

func (m SynProxyMode) String() string {
	switch m {
	case SynProxyOff:
		return "off"
	case SynProxyAuto:
		return "auto"
	case SynProxyAlways:
		return "always"
	}
	return fmt.Sprintf("synproxy(%d)", m)
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
	// Conns is how connections to capped services are followed.
	Conns ConnTracking
	// ProvenTTL is how long a completed handshake lets a client skip its
	// TCP services' shared new-connection limits (prefix and total): the
	// server sent it a segment of an established connection, which a
	// spoofed source never gets. 0 turns it off.
	ProvenTTL time.Duration
	// ProveSources has the egress program record every source a TCP service
	// spoke to on a connection past its handshake (proof.go): the detector
	// bans on spoofable evidence only such a source.
	ProveSources bool
	// SynProxyAnswers bounds the SYN-ACKs the SYN proxy sends to one source
	// (its client key, ClientBits4/6): a SYN flood that spoofs a victim's
	// address is reflected at it at most at this rate. The zero Rate is
	// DefaultSynProxyAnswers; there is no unbounded setting.
	SynProxyAnswers Rate
}

// DefaultSynProxyAnswers is the bound on SYN-ACKs per source when the policy
// sets none: about 6 Mbit/s of SYN-ACKs toward one host. High on purpose: the
// proxy reflects one SYN-ACK per SYN (no amplification), while a spoofer who
// spends a host's bound denies that host its new connections, so the bound
// must cost a spoofer far more than it costs a victim (docs/synproxy.md).
var DefaultSynProxyAnswers = Rate{PerSecond: 10000, Burst: 20000}

// ApplyResult says what an Apply changed.
type ApplyResult struct {
	Generation uint32
	Changed    bool
	// Map entries written or deleted in the slot that became active.
	PrefixWrites, PortWrites, ServiceWrites int
	// ConnWrites are service ACL entries and connection settings.
	ConnWrites int
	// DeadDeny counts deny prefixes inside an allow prefix: allow is checked
	// first, so they can never match and are not loaded.
	DeadDeny int
	Took     time.Duration
}

// image is one policy slot's contents exactly as the kernel holds them.
type image struct {
	cfg      GuardAgConfig
	ports    map[uint32]uint32 // index within the slot -> service id
	services map[uint32]GuardAgService
	lists4   map[GuardAgLpm4]uint32 // prefix -> ag_list (allow or deny)
	lists6   map[GuardAgLpm6]uint32
	deadDeny int
	conns    map[uint32]GuardAgConnService // service ACLs and caps (conntrack.go)
	acl      map[aclEntry]struct{}
}

func newImage() *image {
	return &image{
		ports:    map[uint32]uint32{},
		services: map[uint32]GuardAgService{},
		lists4:   map[GuardAgLpm4]uint32{},
		lists6:   map[GuardAgLpm6]uint32{},
		conns:    map[uint32]GuardAgConnService{},
		acl:      map[aclEntry]struct{}{},
	}
}

// gcraParams turns a rate and burst into the kernel's interval (ns per unit,
// 48.16 fixed point) and tolerance (ns).
func gcraParams(perSecond, burst uint64) (interval, tolerance uint64) {
	return gcraPeriod(perSecond, time.Second, burst)
}

// gcraPeriod is gcraParams for count units per period. A minute's interval
// for one unit is 60e9 << 16, about 2^52: the kernel multiplies it by the
// cost of a packet (1 packet, 1 connection), so 48.16 holds rates down to
// one unit in 78 hours. Byte costs run to 64 KiB and more, which is why
// userspace/policy takes byte rates below 1 B/s nowhere.
func gcraPeriod(count uint64, period time.Duration, burst uint64) (interval, tolerance uint64) {
	if count == 0 {
		return 0, 0
	}
	hi, lo := bits.Mul64(uint64(period), 1<<16)
	if hi >= count {
		interval = math.MaxUint64 / 2
	} else {
		interval, _ = bits.Div64(hi, lo, count)
	}
	if interval == 0 {
		interval = 1
	}
	hi, lo = bits.Mul64(burst, uint64(period))
	if hi >= count {
		return interval, math.MaxUint64 / 2
	}
	tolerance, _ = bits.Div64(hi, lo, count)
	return interval, tolerance
}

// gcraRate is gcraParams for a Rate in either of its units.
func gcraRate(r Rate) (interval, tolerance uint64) {
	if r.PerSecond == 0 && r.PerMinute > 0 {
		return gcraPeriod(r.PerMinute, time.Minute, r.Burst)
	}
	return gcraParams(r.PerSecond, r.Burst)
}

func limitsFor(l Limits) [3]GuardAgLimit {
	var out [3]GuardAgLimit
	for i, r := range []Rate{l.Packets, l.Bytes, l.Conns} {
		out[i].Interval, out[i].Tolerance = gcraRate(r)
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
	if p.ProvenTTL < 0 {
		return nil, fmt.Errorf("proven-client TTL %v is negative", p.ProvenTTL)
	}
	img.cfg.ProvenTtl = uint64(p.ProvenTTL)
	if p.ProveSources {
		img.cfg.ProveSources = 1
	}
	answers := p.SynProxyAnswers
	if answers == (Rate{}) {
		answers = DefaultSynProxyAnswers
	}
	if answers.PerSecond == 0 && answers.PerMinute == 0 {
		return nil, fmt.Errorf("synProxy answers %+v: no rate (the bound cannot be turned off)", answers)
	}
	if answers.Burst == 0 {
		return nil, fmt.Errorf("synProxy answers %+v: a burst of 0 answers nothing", answers)
	}
	img.cfg.SynproxyAnswers.Interval, img.cfg.SynproxyAnswers.Tolerance = gcraRate(answers)
	if img.cfg.ClientBits4 > 32 || img.cfg.PrefixBits4 > 32 {
		return nil, fmt.Errorf("IPv4 key lengths must be at most 32 (client %d, prefix %d)", img.cfg.ClientBits4, img.cfg.PrefixBits4)
	}
	if img.cfg.ClientBits6 > 128 || img.cfg.PrefixBits6 > 128 {
		return nil, fmt.Errorf("IPv6 key lengths must be at most 128 (client %d, prefix %d)", img.cfg.ClientBits6, img.cfg.PrefixBits6)
	}
	for _, pfx := range p.Allow {
		if !pfx.IsValid() {
			return nil, fmt.Errorf("allow: invalid prefix %v", pfx)
		}
		img.setList(pfx.Masked(), listAllow)
	}
	allows := newPrefixSet(p.Allow)
	for _, pfx := range p.Deny {
		if !pfx.IsValid() {
			return nil, fmt.Errorf("deny: invalid prefix %v", pfx)
		}
		pfx = pfx.Masked()
		if allows.covers(pfx) {
			img.deadDeny++
			continue
		}
		img.setList(pfx, listDeny)
	}
	for _, s := range p.Services {
		if s.ID == 0 || s.ID > uint32(MaxServices) {
			return nil, fmt.Errorf("service %q: id %d outside 1..%d", s.Name, s.ID, MaxServices)
		}
		if s.Name == NoService {
			return nil, fmt.Errorf("service %q: the name is the label of packets to no service", s.Name)
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
		svc.Fragments.Interval, svc.Fragments.Tolerance = gcraRate(s.Fragments)
		img.services[s.ID] = svc
		// A proven client is not refused by the shared connection limits:
		// only where its own connection limit still bounds it.
		cps := GuardAgKindAG_KIND_CPS
		if p.ProvenTTL > 0 && s.Proto == ProtoTCP && svc.Limits[0][cps].Interval != 0 &&
			(svc.Limits[1][cps].Interval != 0 || svc.Limits[2][cps].Interval != 0) {
			img.cfg.ProvenServices |= 1 << s.ID
		}
		if s.SynProxy != SynProxyOff {
			if s.Proto != ProtoTCP {
				return nil, fmt.Errorf("service %q: synProxy needs a TCP service", s.Name)
			}
			if s.SynProxy > SynProxyAlways {
				return nil, fmt.Errorf("service %q: unknown synProxy mode %d", s.Name, s.SynProxy)
			}
			// auto turns on when the total connection budget runs out
			if s.SynProxy == SynProxyAuto && svc.Limits[2][cps].Interval == 0 {
				return nil, fmt.Errorf("service %q: synProxy auto needs a total connections limit to turn on", s.Name)
			}
			// monitor mode counts what would be dropped and lets it pass:
			// the SYNs reach the server as they would without the proxy
			if !s.Monitor && !p.Monitor {
				if s.SynProxy == SynProxyAlways {
					img.cfg.SynproxyServices |= 1 << s.ID
				} else {
					img.cfg.SynproxyAuto |= 1 << s.ID
				}
			}
		}
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
	if err := img.compileConns(p); err != nil {
		return nil, err
	}
	return img, nil
}

const (
	listAllow = uint32(GuardAgListAG_LIST_ALLOW)
	listDeny  = uint32(GuardAgListAG_LIST_DENY)
)

func (img *image) setList(p netip.Prefix, v uint32) {
	if p.Addr().Is4() {
		img.lists4[lpm4(p)] = v
		return
	}
	img.lists6[lpm6(p)] = v
}

// prefixSet answers "is p inside one of these prefixes" with one map lookup
// per distinct prefix length in the set, not per bit.
type prefixSet struct {
	members map[netip.Prefix]struct{}
	lens4   []int
	lens6   []int
}

func newPrefixSet(ps []netip.Prefix) prefixSet {
	s := prefixSet{members: map[netip.Prefix]struct{}{}}
	seen := map[[2]int]bool{}
	for _, p := range ps {
		p = p.Masked()
		s.members[p] = struct{}{}
		fam := 6
		if p.Addr().Is4() {
			fam = 4
		}
		if seen[[2]int{fam, p.Bits()}] {
			continue
		}
		seen[[2]int{fam, p.Bits()}] = true
		if fam == 4 {
			s.lens4 = append(s.lens4, p.Bits())
		} else {
			s.lens6 = append(s.lens6, p.Bits())
		}
	}
	return s
}

// covers reports whether p lies inside (or equals) a member.
func (s prefixSet) covers(p netip.Prefix) bool {
	lens := s.lens6
	if p.Addr().Is4() {
		lens = s.lens4
	}
	for _, bits := range lens {
		if bits > p.Bits() {
			continue
		}
		if _, ok := s.members[netip.PrefixFrom(p.Addr(), bits).Masked()]; ok {
			return true
		}
	}
	return false
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
		mapsEqual(a.lists4, b.lists4) && mapsEqual(a.lists6, b.lists6) && a.sameConns(b)
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
	d.waitMirror()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ApplyResult{}, errors.New("datapath is closed")
	}

	cur := d.slots[d.active]
	if cur.samePolicy(img) && cur.cfg.Generation != 0 {
		if err := d.renameInPlace(p); err != nil {
			return ApplyResult{}, err
		}
		return ApplyResult{Generation: cur.cfg.Generation, DeadDeny: img.deadDeny, Took: time.Since(start)}, nil
	}
	target := 1 - d.active
	img.cfg.Generation = cur.cfg.Generation + 1
	// A packet that read the old active slot just before the last flip may still
	// be running; give it far more than a packet's lifetime before reusing the slot.
	if wait := applySettle - time.Since(d.lastFlip); wait > 0 {
		time.Sleep(wait)
	}
	if err := d.resetServices(freshServices(cur, img)); err != nil {
		return ApplyResult{}, err
	}
	// what the ids counted under the names in force, before the switch
	// moves any of them to another name (svccount.go)
	var rows [][]svcCount
	if d.svc.renames(p) {
		if rows, err = d.readServiceCounters(); err != nil {
			return ApplyResult{}, err
		}
	}
	if d.slots[target] == nil {
		back, err := d.readSlot(target)
		if err != nil {
			return ApplyResult{}, err
		}
		d.slots[target] = back
	}
	res, err := d.writeSlot(target, d.slots[target], img)
	if err != nil {
		// what the inactive slot holds is now unknown: read it back, or mark it
		// unknown so the next Apply reads it before diffing
		back, rerr := d.readSlot(target)
		d.slots[target] = back
		return ApplyResult{}, errors.Join(err, rerr)
	}
	if err := d.objs.Active.Update(uint32(0), target, ebpf.UpdateAny); err != nil {
		// the slot now holds the new policy but is not in force: unknown to the next diff
		d.slots[target] = nil
		return ApplyResult{}, fmt.Errorf("switch to policy slot %d: %w", target, err)
	}
	d.lastFlip = time.Now()
	d.active = target
	d.slots[target] = img
	d.renameServices(p, rows)
	d.startMirror(1-target, img)
	res.Generation = img.cfg.Generation
	res.Changed = true
	res.DeadDeny = img.deadDeny
	res.Took = time.Since(start)
	return res, nil
}

// startMirror brings the slot that just went inactive up to date with the
// policy in force, in the background once no packet can still be using it. The
// next Apply then writes only what it changes, not everything the previous
// policy changed too. Called with d.mu held.
func (d *Datapath) startMirror(slot uint32, want *image) {
	done := make(chan struct{})
	d.mirrorDone = done
	have := d.slots[slot]
	go func() {
		defer close(done)
		time.Sleep(applySettle)
		d.mu.Lock()
		defer d.mu.Unlock()
		// an Apply or Close got there first: the slot is no longer ours to write
		if d.closed || d.active == slot || d.slots[slot] != have {
			return
		}
		if _, err := d.writeSlot(slot, have, want); err != nil {
			// unknown content: the next Apply reads it back before diffing
			d.slots[slot] = nil
			return
		}
		d.slots[slot] = want
	}()
}

// waitMirror waits for a background slot update to finish.
func (d *Datapath) waitMirror() {
	d.mu.Lock()
	done := d.mirrorDone
	d.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Generation is the generation of the policy in force (0: none applied yet).
func (d *Datapath) Generation() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.slots[d.active].cfg.Generation
}

func (d *Datapath) slotMaps(slot uint32) (lists4, lists6 *ebpf.Map) {
	m := &d.objs.GuardMaps
	if slot == 0 {
		return m.Lists40, m.Lists60
	}
	return m.Lists41, m.Lists61
}

func (d *Datapath) writeSlot(slot uint32, old, img *image) (ApplyResult, error) {
	var res ApplyResult
	lists4, lists6 := d.slotMaps(slot)
	// prefilter.go: the bitmaps say "walk" while the tries change
	if err := d.writeListPrefilters(slot, img, true); err != nil {
		return res, err
	}
	n, err := syncLists(lists4, old.lists4, img.lists4)
	res.PrefixWrites += n
	if err != nil {
		return res, fmt.Errorf("write IPv4 allow/deny lists of slot %d: %w", slot, err)
	}
	n, err = syncLists(lists6, old.lists6, img.lists6)
	res.PrefixWrites += n
	if err != nil {
		return res, fmt.Errorf("write IPv6 allow/deny lists of slot %d: %w", slot, err)
	}
	if err := d.writeListPrefilters(slot, img, false); err != nil {
		return res, err
	}

	n, err = d.syncPorts(slot, old.ports, img.ports)
	res.PortWrites = n
	if err != nil {
		return res, err
	}
	for id := uint32(0); id < servicesSlot; id++ {
		want := img.services[id]
		if have, ok := old.services[id]; ok && have == want || !ok && want == (GuardAgService{}) {
			continue
		}
		if err := d.objs.Services.Update(serviceIndex(slot, id), want, ebpf.UpdateAny); err != nil {
			return res, fmt.Errorf("write service %d of slot %d: %w", id, slot, err)
		}
		res.ServiceWrites++
	}
	n, err = d.writeConnSlot(slot, old, img)
	res.ConnWrites = n
	if err != nil {
		return res, err
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
			keys = append(keys, slot*portSlot+idx)
			vals = append(vals, id)
		}
	}
	for idx := range old {
		if _, ok := want[idx]; !ok {
			keys = append(keys, slot*portSlot+idx)
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

// syncLists makes an LPM trie hold exactly want, given that it holds have.
func syncLists[K comparable](m *ebpf.Map, have, want map[K]uint32) (int, error) {
	var putK []K
	var putV []uint32
	var del []K
	for k, v := range want {
		if w, ok := have[k]; !ok || w != v {
			putK, putV = append(putK, k), append(putV, v)
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
	if err := batchPut(m, putK, putV); err != nil {
		return 0, err
	}
	return len(putK) + len(del), nil
}

// batchPut writes entries in batches where the map supports it, one by one
// where it does not.
func batchPut[K comparable](m *ebpf.Map, keys []K, vals []uint32) error {
	const chunk = 8192
	for start := 0; start < len(keys); start += chunk {
		end := min(start+chunk, len(keys))
		_, err := m.BatchUpdate(keys[start:end], vals[start:end], nil)
		if err == nil {
			continue
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("write %d prefixes: %w", end-start, err)
		}
		for i := start; i < end; i++ {
			if err := m.Update(keys[i], vals[i], ebpf.UpdateAny); err != nil {
				return fmt.Errorf("write %v: %w", keys[i], err)
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
	lists4, lists6 := d.slotMaps(slot)
	if err := readLists(lists4, img.lists4); err != nil {
		return nil, err
	}
	if err := readLists(lists6, img.lists6); err != nil {
		return nil, err
	}
	keys := make([]uint32, portSlot)
	vals := make([]uint32, portSlot)
	var cursor ebpf.MapBatchCursor
	// an array's batch cursor is an index: skip to this slot by reading the other first
	got := 0
	for got < int((slot+1)*portSlot) {
		n, err := d.objs.Ports.BatchLookup(&cursor, keys, vals, nil)
		if n == 0 && err != nil {
			return nil, fmt.Errorf("read port table: %w", err)
		}
		for i := 0; i < n; i++ {
			if keys[i]/portSlot == slot && vals[i] != 0 {
				img.ports[keys[i]%portSlot] = vals[i]
			}
		}
		got += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
	}
	for id := uint32(1); id <= uint32(MaxServices); id++ {
		var svc GuardAgService
		if err := d.objs.Services.Lookup(serviceIndex(slot, id), &svc); err != nil {
			return nil, fmt.Errorf("read service %d of slot %d: %w", id, slot, err)
		}
		if svc != (GuardAgService{}) {
			img.services[id] = svc
		}
	}
	if err := d.readConnSlot(slot, img); err != nil {
		return nil, err
	}
	return img, nil
}

func readLists[K comparable](m *ebpf.Map, into map[K]uint32) error {
	var k K
	var v uint32
	it := m.Iterate()
	for it.Next(&k, &v) {
		into[k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %v: %w", m, err)
	}
	return nil
}
