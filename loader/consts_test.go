package loader

import (
	"testing"
	"unsafe"
)

// The Go side's view of the datapath's layout comes from enum ag_const, which
// bpf2go generates; this checks the maps themselves were declared with those
// values, so a size written in C without its constant cannot drift from what
// the loader indexes.
func TestConstantsMatchTheMaps(t *testing.T) {
	spec, err := LoadGuard()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{
		"services":         2 * servicesSlot,
		"conn_services":    2 * servicesSlot,
		"ports":            2 * portSlot,
		"service_state":    servicesSlot,
		"conn_totals":      servicesSlot,
		"frag_budget":      servicesSlot,
		"lists4_0":         uint32(ListCapacity),
		"lists4_1":         uint32(ListCapacity),
		"lists6_0":         uint32(ListCapacity),
		"lists6_1":         uint32(ListCapacity),
		"bans4":            uint32(BanCapacity),
		"bans6":            uint32(BanCapacity),
		"acl":              uint32(2 * ACLCapacity),
		"clients":          defaultClientCapacity,
		"prefixes":         defaultPrefixCapacity,
		"flows":            DefaultFlowCapacity,
		"conn_clients":     DefaultFlowCapacity,
		"counters":         uint32(numActions * numReasons),
		"service_counters": uint32(serviceCounterRows),
		"stats":            uint32(GuardAgStatAG_STAT_MAX),
	}
	for name, n := range want {
		m, ok := spec.Maps[name]
		if !ok {
			t.Errorf("the object has no map %s", name)
			continue
		}
		if m.MaxEntries != n {
			t.Errorf("map %s holds %d entries, the loader expects %d", name, m.MaxEntries, n)
		}
	}
	if portSlot != 2*portsPerProto {
		t.Errorf("a port slot holds %d entries, want TCP and UDP's %d each", portSlot, portsPerProto)
	}
	var k GuardAgAclKey
	if hdr := 8 * uint32(unsafe.Offsetof(k.Addr)-unsafe.Offsetof(k.Slot)); hdr != aclHeaderBits {
		t.Errorf("an ACL key has %d bits before its address, the loader counts %d", hdr, aclHeaderBits)
	}
}
