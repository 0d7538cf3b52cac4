package loader

import (
	"encoding/binary"
	"fmt"
)

// The prefilters beside the LPM tries keyed by a bare source (bpf/include/
// prefilter.h): a bitmap per trie whose clear bit lets the datapath skip the
// walk. The datapath trusts a clear bit, so the one rule here is that a bit an
// entry covers is set in the kernel BEFORE the entry is written into its trie,
// and that bits are cleared only by writing a bitmap rebuilt from what the
// trie holds, under the lock that keeps the trie's writers out meanwhile.

const (
	pfV4Bits  = uint32(GuardAgConstAG_PF_V4BITS)
	pfV6Bits  = uint32(GuardAgConstAG_PF_V6BITS)
	pfV6Hash  = uint32(GuardAgConstAG_PF_V6HASH)
	pfReady   = uint32(GuardAgConstAG_PF_READY)
	pfWalk    = uint32(GuardAgConstAG_PF_WALK)
	pfLists   = uint32(GuardAgConstAG_PF_LISTS)
	pfBans    = uint32(GuardAgConstAG_PF_BANS)
	pfBitsLen = 1 << pfV4Bits
)

// pfListIndex is where slot's IPv4 (v6 false) or IPv6 list prefilter sits.
func pfListIndex(slot uint32, v6 bool) uint32 {
	if v6 {
		return pfLists + 2*slot + 1
	}
	return pfLists + 2*slot
}

// pfBanIndex is where the IPv4 or IPv6 bans' prefilter sits.
func pfBanIndex(v6 bool) uint32 {
	if v6 {
		return pfBans + 1
	}
	return pfBans
}

func (f *GuardAgPrefilter) set(bit uint32) {
	f.Bits[bit/64] |= 1 << (bit % 64)
}

// add4 sets the bits of every IPv4 /16 that the prefix addr/bits touches.
func (f *GuardAgPrefilter) add4(addr [4]byte, bits uint32) {
	first := uint32(addr[0])<<8 | uint32(addr[1])
	if bits >= pfV4Bits {
		f.set(first)
		return
	}
	n := uint32(1) << (pfV4Bits - bits)
	first &^= n - 1
	for i := uint32(0); i < n; i++ {
		f.set(first + i)
	}
}

// add6 sets the hashed bit of the IPv6 /32 that holds addr/bits, or marks the
// bitmap as one to walk past when the prefix is wider than a /32.
func (f *GuardAgPrefilter) add6(addr [16]byte, bits uint32) {
	if bits < pfV6Bits {
		f.Flags |= pfWalk
		return
	}
	f.set(pfBit6(addr))
}

// pfBit6 is the bit of an IPv6 address (prefilter.h prefilter_may_hold).
func pfBit6(addr [16]byte) uint32 {
	return (binary.BigEndian.Uint32(addr[:4]) * pfV6Hash) >> (32 - pfV4Bits)
}

// writePrefilter writes a whole bitmap. A reader may see a mix of the old and
// the new words meanwhile: harmless when new holds every entry the trie holds
// during the write.
func (d *Datapath) writePrefilter(idx uint32, f *GuardAgPrefilter) error {
	if err := d.objs.Prefilters.Put(idx, f); err != nil {
		return fmt.Errorf("write prefilter %d: %w", idx, err)
	}
	return nil
}

// listPrefilters are the bitmaps of a slot's lists.
func listPrefilters(img *image) (v4, v6 *GuardAgPrefilter) {
	v4 = &GuardAgPrefilter{Flags: pfReady}
	v6 = &GuardAgPrefilter{Flags: pfReady}
	for k := range img.lists4 {
		v4.add4(k.Addr, k.Prefixlen)
	}
	for k := range img.lists6 {
		v6.add6(k.Addr, k.Prefixlen)
	}
	return v4, v6
}

// writeListPrefilters makes slot's list bitmaps those of img's lists. Called
// with walk before the tries change (every packet still reading the slot
// walks them meanwhile), then without, once the tries hold img's lists.
func (d *Datapath) writeListPrefilters(slot uint32, img *image, walk bool) error {
	v4, v6 := listPrefilters(img)
	if walk {
		v4, v6 = &GuardAgPrefilter{}, &GuardAgPrefilter{}
	}
	if err := d.writePrefilter(pfListIndex(slot, false), v4); err != nil {
		return err
	}
	return d.writePrefilter(pfListIndex(slot, true), v6)
}

// banPrefilterAdd sets the bits of ban prefix (is4: k4, else k6) in the
// kernel's bitmap, before the ban is written. Called with d.banMu held.
func (d *Datapath) banPrefilterAdd(is4 bool, k4 GuardAgLpm4, k6 GuardAgLpm6) error {
	idx := pfBanIndex(!is4)
	next := d.banPF[idx-pfBans]
	if is4 {
		next.add4(k4.Addr, k4.Prefixlen)
	} else {
		next.add6(k6.Addr, k6.Prefixlen)
	}
	if next == d.banPF[idx-pfBans] {
		return nil // its bits are set already
	}
	if err := d.writePrefilter(idx, &next); err != nil {
		return err
	}
	d.banPF[idx-pfBans] = next
	return nil
}

// rebuildBanPrefilters writes the ban bitmaps afresh from the tries, which
// clears the bits of bans since removed. Called with d.banMu held, so no ban
// is written between the read and the write.
func (d *Datapath) rebuildBanPrefilters() error {
	v4 := GuardAgPrefilter{Flags: pfReady}
	v6 := GuardAgPrefilter{Flags: pfReady}
	if err := eachEntry(d.objs.Bans4, func(k *GuardAgLpm4, _ *GuardAgBan) { v4.add4(k.Addr, k.Prefixlen) }); err != nil {
		return fmt.Errorf("read IPv4 bans: %w", err)
	}
	if err := eachEntry(d.objs.Bans6, func(k *GuardAgLpm6, _ *GuardAgBan) { v6.add6(k.Addr, k.Prefixlen) }); err != nil {
		return fmt.Errorf("read IPv6 bans: %w", err)
	}
	// d.banPF follows each write that succeeded: Ban skips writing bits its
	// copy holds, so a copy left with bits the kernel's bitmap lost (the
	// IPv4 one written, the IPv6 one refused) would let a ban in a cleared
	// /16 into the trie with its bit clear. A refused write changes nothing.
	for i, f := range []*GuardAgPrefilter{&v4, &v6} {
		if err := d.writePrefilter(pfBanIndex(i == 1), f); err != nil {
			return err
		}
		d.banPF[i] = *f
	}
	return nil
}

// rebuildPrefilters writes every bitmap from the tries the kernel holds: at
// load, where the maps may be adopted from a build that kept no bitmaps.
func (d *Datapath) rebuildPrefilters() error {
	for slot := uint32(0); slot < 2; slot++ {
		if err := d.writeListPrefilters(slot, d.slots[slot], false); err != nil {
			return err
		}
	}
	d.banMu.Lock()
	defer d.banMu.Unlock()
	return d.rebuildBanPrefilters()
}
