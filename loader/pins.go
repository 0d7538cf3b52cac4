package loader

// Which maps outlive the daemon, and how a restarted daemon adopts them.
//
// Every map the object defines is pinned by name (its definition says
// LIBBPF_PIN_BY_NAME) under <PinDir>/maps, and cilium/ebpf does the pinning:
// it creates and pins a map the directory lacks, and opens a pinned one after
// checking that it is compatible with this build (type, key and value sizes,
// capacity, flags). Maps that hold no state across packets are per-load and
// named in perLoadMaps; a map that is neither is refused at load, so none can
// lose its state on a restart unnoticed.
//
// Sizes alone do not tell two layouts apart: a value whose fields were
// reordered has the same size. So the loader also records a fingerprint of
// each pinned map's layout (its BTF: type, key and value, every member's
// name, offset and size) in the pinned map pin_layouts, and refuses to adopt a
// map whose recorded layout differs from this build's. An upgrade that
// changes a map's layout therefore fails to load, naming the map: the pinned
// state must be removed ('apiguard detach', which also removes enforcement
// until the new daemon attaches) before the new build can load. A map the new
// build adds is created beside the adopted ones; pins of maps it no longer
// has are left alone until detach.

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// perLoadMaps are the maps that live and die with the programs that use them.
var perLoadMaps = map[string]string{
	GuardMapCtScratch:       "per-packet scratch of the connection state machine",
	GuardMapSynproxyScratch: "per-packet scratch of the SYN proxy",
}

// checkPinning refuses a map that is neither pinned by name nor per-load.
func checkPinning(spec *ebpf.CollectionSpec) error {
	var bad []string
	// pin_layouts keys a map by the name the kernel keeps (15 bytes): two
	// maps alike in those would share one fingerprint and pass each other's check
	kept := make(map[[16]byte]string)
	for name, ms := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue // data sections: the constants of this load
		}
		if other, ok := kept[pinName(name)]; ok {
			first, second := min(name, other), max(name, other)
			bad = append(bad, fmt.Sprintf("%s and %s share the kernel's 15-byte name", first, second))
		}
		kept[pinName(name)] = name
		_, perLoad := perLoadMaps[name]
		switch {
		case perLoad && ms.Pinning != ebpf.PinNone:
			bad = append(bad, name+" is per-load but pinned")
		case !perLoad && ms.Pinning != ebpf.PinByName:
			bad = append(bad, name+" is neither pinned by name nor per-load: its state would not outlive a restart")
		}
	}
	for name := range perLoadMaps {
		if _, ok := spec.Maps[name]; !ok {
			bad = append(bad, "per-load map "+name+" is not in the object")
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("BPF object's maps: %s", strings.Join(bad, "; "))
	}
	return nil
}

// unpinned makes every map of spec per-load: nothing is pinned without a PinDir.
func unpinned(spec *ebpf.CollectionSpec) {
	for _, ms := range spec.Maps {
		ms.Pinning = ebpf.PinNone
	}
}

// pinName is a map's name as the kernel keeps it and pin_layouts keys it.
func pinName(name string) [16]byte {
	var k [16]byte
	copy(k[:15], name)
	return k
}

// layoutOf fingerprints the layout a map has in this build: its type, and its
// key and value types in full (capacity aside: the library checks it).
func layoutOf(ms *ebpf.MapSpec) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s key %d value %d flags %d\n", ms.Type, ms.KeySize, ms.ValueSize, ms.Flags)
	writeLayout(h, ms.Key, 0)
	io.WriteString(h, "\n")
	writeLayout(h, ms.Value, 0)
	return h.Sum64()
}

// writeLayout writes what decides how bytes of type t are read: kinds, sizes,
// member names and offsets, array lengths. Names of types do not matter.
func writeLayout(w io.Writer, t btf.Type, depth int) {
	if t == nil || depth > 16 {
		io.WriteString(w, "?")
		return
	}
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		fmt.Fprintf(w, "struct %d {", t.Size)
		for _, m := range t.Members {
			fmt.Fprintf(w, "%s@%d:%d ", m.Name, m.Offset, m.BitfieldSize)
			writeLayout(w, m.Type, depth+1)
			io.WriteString(w, "; ")
		}
		io.WriteString(w, "}")
	case *btf.Union:
		fmt.Fprintf(w, "union %d {", t.Size)
		for _, m := range t.Members {
			fmt.Fprintf(w, "%s@%d ", m.Name, m.Offset)
			writeLayout(w, m.Type, depth+1)
			io.WriteString(w, "; ")
		}
		io.WriteString(w, "}")
	case *btf.Array:
		fmt.Fprintf(w, "[%d]", t.Nelems)
		writeLayout(w, t.Type, depth+1)
	case *btf.Int:
		fmt.Fprintf(w, "int%d/%d", t.Size, t.Encoding)
	case *btf.Enum:
		fmt.Fprintf(w, "enum%d/%v", t.Size, t.Signed)
	case *btf.Pointer:
		io.WriteString(w, "ptr")
	default:
		fmt.Fprintf(w, "%T", t)
	}
}

// checkPinnedLayouts compares the layouts recorded for the maps pinned in dir
// with this build's, and reports whether any map is pinned there already (the
// load adopts state). Maps pinned by a build that recorded no layout are
// checked by the library alone.
func checkPinnedLayouts(spec *ebpf.CollectionSpec, dir string) (adopted bool, err error) {
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName || name == GuardMapPinLayouts {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			adopted = true
		}
	}
	path := filepath.Join(dir, GuardMapPinLayouts)
	rec, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return adopted, nil
	}
	if err != nil {
		return adopted, fmt.Errorf("open pinned map %s: %w", path, err)
	}
	defer rec.Close()
	var changed []string
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName || name == GuardMapPinLayouts {
			continue
		}
		var was uint64
		if err := rec.Lookup(pinName(name), &was); errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		} else if err != nil {
			return adopted, fmt.Errorf("read the recorded layout of %s: %w", name, err)
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			continue // recorded, but no longer pinned: created afresh
		}
		if was != layoutOf(ms) {
			changed = append(changed, name)
		}
	}
	if len(changed) > 0 {
		slices.Sort(changed)
		return adopted, fmt.Errorf("pinned maps %s under %s were made by a build whose layout of them differs from this one's: their state cannot be adopted (run 'apiguard detach' to start afresh): %w",
			strings.Join(changed, ", "), dir, ebpf.ErrMapIncompatible)
	}
	return adopted, nil
}

// recordLayouts writes this build's layout of every pinned map.
func (d *Datapath) recordLayouts(spec *ebpf.CollectionSpec) error {
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName || name == GuardMapPinLayouts {
			continue
		}
		if err := d.objs.PinLayouts.Update(pinName(name), layoutOf(ms), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("record the layout of pinned map %s: %w", name, err)
		}
	}
	return nil
}
