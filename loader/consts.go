package loader

import "time"

// What the loader and the datapath must agree on, from the constants of
// bpf/include/types.h (enum ag_const) that bpf2go generates: nothing here is
// copied from the C by hand.

// Limits of the datapath that policies and callers see.
const (
	// MaxServices is how many services one policy may define (ids 1..MaxServices):
	// id 0 means "no service".
	MaxServices = int(GuardAgConstAG_MAX_SERVICES) - 1
	// ListCapacity is how many allow/deny entries each policy slot holds per
	// address family.
	ListCapacity = int(GuardAgConstAG_LPM_CAPACITY)
	// BanCapacity is how many bans the datapath holds per address family.
	BanCapacity = int(GuardAgConstAG_BAN_CAPACITY)
	// ACLCapacity is how many service ACL entries one policy may hold: the
	// trie holds both policy slots.
	ACLCapacity = int(GuardAgConstAG_ACL_CAPACITY) / 2
	// DefaultFlowCapacity sizes the flow table when Options.FlowCapacity is 0.
	DefaultFlowCapacity = uint32(GuardAgConstAG_FLOW_CAPACITY)
	// V4MappedBits is how many bits come before an IPv4 address in its
	// v4-mapped IPv6 form, as the datapath keys every address.
	V4MappedBits = int(GuardAgConstAG_V4MAPPED_BITS)
	// FragmentTTL is how long a first fragment leads its later fragments.
	FragmentTTL = time.Duration(GuardAgConstAG_FRAG_TTL_SECONDS) * time.Second
)

// Layouts of the maps the loader writes and reads.
const (
	portsPerProto  = uint32(GuardAgConstAG_PORTS_PER_PROTO) // a slot's port table: TCP, then UDP
	portSlot       = uint32(GuardAgConstAG_PORT_SLOT)
	servicesSlot   = uint32(GuardAgConstAG_MAX_SERVICES) // per-service arrays: entries per policy slot
	aclHeaderBits  = uint32(GuardAgConstAG_ACL_HDR_BITS)
	countHalfShift = uint32(GuardAgConstAG_COUNT_HALF_SHIFT)
	seenShift      = uint32(GuardAgConstAG_SEEN_SHIFT)
	countDead      = uint64(GuardAgConstAG_COUNT_DEAD_HALF)<<countHalfShift | uint64(GuardAgConstAG_COUNT_DEAD_HALF)
)

// serviceIndex is where a policy slot keeps a service's entry in the
// per-service arrays (bpf/include/config.h policy_index).
func serviceIndex(slot, id uint32) uint32 { return slot*servicesSlot + id }
