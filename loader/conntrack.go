package loader

// Connection filtering: per-service source ACLs and TCP connection caps
// followed in the kernel (bpf/include/conntrack*.h, docs/conntrack.md). This
// file compiles them into the policy slot image, writes and reads them back,
// runs the flow sweeper and reads the flow table.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// ConnLimits caps the concurrent TCP connections of a service. Zero means no
// cap. A SYN is refused when the client (or the service in total) holds its
// established cap counting unfinished handshakes too, or its half-open cap;
// established connections are never cut.
type ConnLimits struct {
	ClientEstablished, ClientHalfOpen uint32
	TotalEstablished, TotalHalfOpen   uint32
}

// Capped reports whether any cap is set.
func (c ConnLimits) Capped() bool { return c != ConnLimits{} }

// ConnTracking is how the flow table follows connections, for every capped
// service of a policy. Zero durations take the defaults.
type ConnTracking struct {
	// EstablishedTimeout releases an established connection with no packet
	// either way for this long (default 5m).
	EstablishedTimeout time.Duration
	// HalfOpenTimeout releases a handshake not completed this long after its
	// SYN (default 10s).
	HalfOpenTimeout time.Duration
	// ClosedTimeout keeps a closed connection's entry this long, so the
	// teardown's last packets are recognised (default 10s).
	ClosedTimeout time.Duration
	// FailClosed drops new connections when the flow table is full; by
	// default they pass without being followed. Either way it is counted.
	FailClosed bool
}

// Connection tracking defaults.
const (
	DefaultEstablishedTimeout = 5 * time.Minute
	DefaultHalfOpenTimeout    = 10 * time.Second
	DefaultClosedTimeout      = 10 * time.Second
	// DefaultProvenTTL is how long the policy layer lets a completed
	// handshake prove a client (Policy.ProvenTTL).
	DefaultProvenTTL = 10 * time.Minute
)

func durationOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// aclEntry is one service ACL prefix, without the slot it is written to.
type aclEntry struct {
	service   uint8
	prefixlen uint32 // address bits; IPv4 as V4MappedBits + n
	addr      [16]byte
}

func (e aclEntry) key(slot uint32) GuardAgAclKey {
	return GuardAgAclKey{Prefixlen: aclHeaderBits + e.prefixlen, Slot: uint8(slot), Service: e.service, Addr: e.addr}
}

func aclEntryOf(k GuardAgAclKey) aclEntry {
	return aclEntry{service: k.Service, prefixlen: k.Prefixlen - aclHeaderBits, addr: k.Addr}
}

func (e aclEntry) prefix() netip.Prefix {
	a := netip.AddrFrom16(e.addr)
	if a.Is4In6() {
		return netip.PrefixFrom(a.Unmap(), int(e.prefixlen)-V4MappedBits)
	}
	return netip.PrefixFrom(a, int(e.prefixlen))
}

// compileConns adds the services' ACLs and caps to the image.
func (img *image) compileConns(p *Policy) error {
	ct := p.Conns
	est := durationOr(ct.EstablishedTimeout, DefaultEstablishedTimeout)
	half := durationOr(ct.HalfOpenTimeout, DefaultHalfOpenTimeout)
	closed := durationOr(ct.ClosedTimeout, DefaultClosedTimeout)
	for _, s := range p.Services {
		capped := s.MaxConns.Capped()
		if !capped && len(s.ACL) == 0 {
			continue
		}
		if capped && s.Proto != ProtoTCP {
			return fmt.Errorf("service %q: connection caps need TCP", s.Name)
		}
		c := s.MaxConns
		for _, v := range []uint32{c.ClientEstablished, c.ClientHalfOpen, c.TotalEstablished, c.TotalHalfOpen} {
			if v >= 1<<31 {
				return fmt.Errorf("service %q: connection cap %d is too large", s.Name, v)
			}
		}
		cs := GuardAgConnService{
			EstablishedTimeout: uint64(est),
			HalfOpenTimeout:    uint64(half),
			ClosedTimeout:      uint64(closed),
			Id:                 s.ID,
			ClientEstablished:  c.ClientEstablished,
			ClientHalfOpen:     c.ClientHalfOpen,
			TotalEstablished:   c.TotalEstablished,
			TotalHalfOpen:      c.TotalHalfOpen,
			ClientBits4:        img.cfg.ClientBits4,
			ClientBits6:        img.cfg.ClientBits6,
		}
		if capped {
			cs.Track = 1
		}
		if s.Monitor {
			cs.Monitor = 1
		}
		if ct.FailClosed {
			cs.FailClosed = 1
		}
		if len(s.ACL) > 0 {
			cs.Acl = 1
		}
		for _, pfx := range s.ACL {
			if !pfx.IsValid() {
				return fmt.Errorf("service %q: invalid ACL prefix %v", s.Name, pfx)
			}
			pfx = pfx.Masked()
			bits := uint32(pfx.Bits())
			if pfx.Addr().Is4() {
				bits += uint32(V4MappedBits)
			}
			img.acl[aclEntry{service: uint8(s.ID), prefixlen: bits, addr: pfx.Addr().As16()}] = struct{}{}
		}
		img.conns[s.ID] = cs
		img.cfg.ConnServices |= 1 << s.ID
	}
	if len(img.acl) > ACLCapacity {
		return fmt.Errorf("%d service ACL entries; the datapath holds at most %d", len(img.acl), ACLCapacity)
	}
	return nil
}

func (a *image) sameConns(b *image) bool {
	return mapsEqual(a.conns, b.conns) && mapsEqual(a.acl, b.acl)
}

// writeConnSlot makes the slot's ACL entries and service settings those of img.
func (d *Datapath) writeConnSlot(slot uint32, old, img *image) (int, error) {
	writes := 0
	for id := uint32(1); id <= uint32(MaxServices); id++ {
		want := img.conns[id]
		if have, ok := old.conns[id]; ok && have == want || !ok && want == (GuardAgConnService{}) {
			continue
		}
		if err := d.objs.ConnServices.Update(serviceIndex(slot, id), want, ebpf.UpdateAny); err != nil {
			return writes, fmt.Errorf("write connection settings of service %d in slot %d: %w", id, slot, err)
		}
		writes++
	}
	var put []GuardAgAclKey
	for e := range img.acl {
		if _, ok := old.acl[e]; !ok {
			put = append(put, e.key(slot))
		}
	}
	for e := range old.acl {
		if _, ok := img.acl[e]; ok {
			continue
		}
		if err := d.objs.Acl.Delete(e.key(slot)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return writes, fmt.Errorf("delete ACL entry %v of service %d in slot %d: %w", e.prefix(), e.service, slot, err)
		}
		writes++
	}
	ones := make([]uint32, len(put))
	for i := range ones {
		ones[i] = 1
	}
	if err := batchPut(d.objs.Acl, put, ones); err != nil {
		return writes, fmt.Errorf("write service ACLs of slot %d: %w", slot, err)
	}
	return writes + len(put), nil
}

// readConnSlot reads the slot's ACL entries and service settings back.
func (d *Datapath) readConnSlot(slot uint32, img *image) error {
	for id := uint32(1); id <= uint32(MaxServices); id++ {
		var cs GuardAgConnService
		if err := d.objs.ConnServices.Lookup(serviceIndex(slot, id), &cs); err != nil {
			return fmt.Errorf("read connection settings of service %d in slot %d: %w", id, slot, err)
		}
		if cs != (GuardAgConnService{}) {
			img.conns[id] = cs
		}
	}
	var k GuardAgAclKey
	var v uint32
	it := d.objs.Acl.Iterate()
	for it.Next(&k, &v) {
		if uint32(k.Slot) == slot {
			img.acl[aclEntryOf(k)] = struct{}{}
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read service ACLs: %w", err)
	}
	return nil
}

// FlowState is where the flow table has a connection.
type FlowState uint32

var flowStateNames = map[FlowState]string{
	FlowState(GuardAgFlowStateAG_FLOW_SYN_SENT):    "syn_sent",
	FlowState(GuardAgFlowStateAG_FLOW_SYN_RECV):    "syn_recv",
	FlowState(GuardAgFlowStateAG_FLOW_ESTABLISHED): "established",
	FlowState(GuardAgFlowStateAG_FLOW_FIN_WAIT):    "fin_wait",
	FlowState(GuardAgFlowStateAG_FLOW_CLOSED):      "closed",
	FlowState(GuardAgFlowStateAG_FLOW_RESET):       "reset",
	FlowState(GuardAgFlowStateAG_FLOW_EXPIRED):     "expired",
	FlowState(GuardAgFlowStateAG_FLOW_DEAD):        "dead",
}

func (s FlowState) String() string {
	if n, ok := flowStateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%d)", uint32(s))
}

// Counted reports whether the state holds a slot of its client's caps.
func (s FlowState) Counted() bool {
	return s >= FlowState(GuardAgFlowStateAG_FLOW_SYN_SENT) && s <= FlowState(GuardAgFlowStateAG_FLOW_FIN_WAIT)
}

// HalfOpen reports whether the state holds a half-open slot.
func (s FlowState) HalfOpen() bool {
	return s == FlowState(GuardAgFlowStateAG_FLOW_SYN_SENT) || s == FlowState(GuardAgFlowStateAG_FLOW_SYN_RECV)
}

// Flow is one connection in the flow table.
type Flow struct {
	Client     netip.AddrPort
	Server     netip.AddrPort
	Service    uint32
	State      FlowState
	Adopted    bool // picked up from the server's packets rather than from its SYN
	Created    time.Time
	Deadline   time.Time // idle deadline; for an uncounted flow, the end of its linger
	ClientBits int       // the prefix length of the client count it holds
}

func flowFrom(k GuardAgFlowKey, v GuardAgFlow, clock monoClock) Flow {
	return Flow{
		Client:     netip.AddrPortFrom(addrFrom16(k.Client), k.Cport),
		Server:     netip.AddrPortFrom(addrFrom16(k.Server), k.Sport),
		Service:    uint32(v.Service),
		State:      FlowState(v.State),
		Adopted:    v.Adopted != 0,
		Created:    clock.wall(v.Created),
		Deadline:   clock.wall(v.Deadline),
		ClientBits: int(v.ClientBits),
	}
}

// Flows calls fn for every entry of the flow table. Entries may come and go
// while it runs; each is seen at most once.
func (d *Datapath) Flows(fn func(Flow) error) error {
	clock := newMonoClock()
	const batch = 4096
	keys := make([]GuardAgFlowKey, batch)
	vals := make([]GuardAgFlow, batch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.Flows.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			if ferr := fn(flowFrom(keys[i], vals[i], clock)); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read flows: %w", err)
		}
	}
}

// ConnCount is how many connections hold slots.
type ConnCount struct {
	Established, HalfOpen uint32
}

func countFrom(w uint64) ConnCount {
	return ConnCount{Established: uint32(w), HalfOpen: uint32(w >> countHalfShift)}
}

// ServiceConns returns the connections each service holds in total, by
// service id (services with none are left out).
func (d *Datapath) ServiceConns() (map[uint32]ConnCount, error) {
	out := map[uint32]ConnCount{}
	for id := uint32(1); id <= uint32(MaxServices); id++ {
		var w uint64
		if err := d.objs.ConnTotals.Lookup(id, &w); err != nil {
			return nil, fmt.Errorf("read connection total of service %d: %w", id, err)
		}
		if w != 0 {
			out[id] = countFrom(w)
		}
	}
	return out, nil
}

// ClientConns is the connections one client holds to one service. Addr is
// the client key: the source masked to the policy's client prefix length.
type ClientConns struct {
	Addr    netip.Prefix
	Service uint32
	ConnCount
}

// ClientConns calls fn for every client that holds connections.
func (d *Datapath) ClientConns(fn func(ClientConns) error) error {
	cfg := d.activeConfig()
	var k GuardAgClientKey
	var w uint64
	it := d.objs.ConnClients.Iterate()
	for it.Next(&k, &w) {
		if w == 0 || w == countDead {
			continue // being deleted
		}
		c := clientFrom(k, GuardAgClientState{}, cfg, newMonoClock())
		if err := fn(ClientConns{Addr: c.Addr, Service: k.Service, ConnCount: countFrom(w)}); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read client connection counts: %w", err)
	}
	return nil
}

// FlowSweep is what one run of the sweeper did.
type FlowSweep struct {
	Walked  int // entries looked at
	Expired int // idle flows whose slots were released
	Deleted int // closed flows removed after their linger
}

// SweepFlows releases the slots of flows idle past their timeout and deletes
// closed flows whose linger is over. It runs in the kernel (a program run
// through BPF_PROG_TEST_RUN) with the same compare-and-swap as the datapath,
// so a slot is released exactly once whoever gets there first. The datapath
// releases idle flows on its own when a packet finds them; the sweeper is for
// those no packet comes back to. Call it every second or so.
func (d *Datapath) SweepFlows() (FlowSweep, error) {
	buf := make([]byte, 64)
	out := make([]byte, 64)
	if _, err := d.objs.ApiguardFlowSweep.Run(&ebpf.RunOptions{Data: buf, DataOut: out}); err != nil {
		return FlowSweep{}, fmt.Errorf("run the flow sweeper: %w", err)
	}
	var s GuardAgSweep
	if err := decodeNative(out, &s); err != nil {
		return FlowSweep{}, fmt.Errorf("read the flow sweeper's result: %w", err)
	}
	return FlowSweep{Walked: int(s.Walked), Expired: int(s.Expired), Deleted: int(s.Deleted)}, nil
}

// Egress and FlowSweeper expose the connection tracking programs for tests
// and benchmarks.
func (d *Datapath) Egress() *ebpf.Program      { return d.objs.ApiguardEgress }
func (d *Datapath) FlowSweeper() *ebpf.Program { return d.objs.ApiguardFlowSweep }

func decodeNative(b []byte, into any) error {
	return binary.Read(bytes.NewReader(b), binary.NativeEndian, into)
}
