package loader

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Every map of the object is pinned by name or declared per-load; a map added
// in C without either is refused at load, not silently lost on a restart.
func TestEveryMapPinnedOrPerLoad(t *testing.T) {
	spec, err := LoadGuard()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPinning(spec); err != nil {
		t.Fatal(err)
	}
	for name := range perLoadMaps {
		if spec.Maps[name].Pinning != ebpf.PinNone {
			t.Errorf("per-load map %s is pinned", name)
		}
	}
	// two maps the kernel's 15-byte names cannot tell apart
	twin := *spec.Maps[GuardMapClients]
	spec.Maps[GuardMapClients+"_and_more_x"] = &twin
	spec.Maps[GuardMapClients+"_and_more_y"] = &twin
	err = checkPinning(spec)
	if err == nil || !strings.Contains(err.Error(), "clients_and_more_x and clients_and_more_y share the kernel's 15-byte name") {
		t.Fatalf("maps alike in their first 15 bytes were not refused: %v", err)
	}
	delete(spec.Maps, GuardMapClients+"_and_more_x")
	delete(spec.Maps, GuardMapClients+"_and_more_y")
	// a map that forgot its pinning
	spec.Maps[GuardMapClients].Pinning = ebpf.PinNone
	err = checkPinning(spec)
	if err == nil || !strings.Contains(err.Error(), GuardMapClients+" is neither pinned") {
		t.Fatalf("an unpinned map was not refused: %v", err)
	}
}

// A loaded datapath with a pin directory has a pin for every map but the
// per-load ones, made by the library.
func TestEveryMapIsPinned(t *testing.T) {
	dir := tempPinDir(t)
	newDatapath(t, Options{PinDir: dir})
	spec, err := LoadGuard()
	if err != nil {
		t.Fatal(err)
	}
	for name := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue
		}
		_, err := os.Stat(filepath.Join(dir, mapsDir, name))
		_, perLoad := perLoadMaps[name]
		if perLoad != errors.Is(err, os.ErrNotExist) {
			t.Errorf("map %s: pinned %v, per-load %v", name, err == nil, perLoad)
		}
	}
}

// The layout fingerprint tells apart what sizes cannot: two fields swapped.
func TestLayoutFingerprint(t *testing.T) {
	u64 := &btf.Int{Name: "u64", Size: 8}
	value := func(first, second string) *btf.Struct {
		return &btf.Struct{Name: "state", Size: 16, Members: []btf.Member{
			{Name: first, Type: u64, Offset: 0}, {Name: second, Type: u64, Offset: 64}}}
	}
	spec := func(v btf.Type) *ebpf.MapSpec {
		return &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, Key: &btf.Int{Size: 4}, Value: v}
	}
	a, b := layoutOf(spec(value("tat", "packets"))), layoutOf(spec(value("packets", "tat")))
	if a == b {
		t.Fatal("swapped fields have the same fingerprint")
	}
	if a != layoutOf(spec(value("tat", "packets"))) {
		t.Fatal("the same layout has two fingerprints")
	}
	loaded, err := LoadGuard()
	if err != nil {
		t.Fatal(err)
	}
	if layoutOf(loaded.Maps[GuardMapClients]) == layoutOf(loaded.Maps[GuardMapPrefixes]) {
		t.Fatal("clients and prefixes have the same fingerprint")
	}
}

// A restarted daemon of a build with another layout of a pinned map refuses
// to adopt it, naming the map, and loads nothing; the pinned state is intact
// for the build that made it.
func TestPinnedLayoutChangeRefused(t *testing.T) {
	dir := tempPinDir(t)
	d := newDatapath(t, Options{PinDir: dir})
	mustApply(t, d, basePolicy())
	// what another build would have recorded for the client table
	if err := d.objs.PinLayouts.Update(pinName(GuardMapClients), uint64(1), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	_, err := Load(Options{PinDir: dir})
	if err == nil || !errors.Is(err, ebpf.ErrMapIncompatible) || !strings.Contains(err.Error(), GuardMapClients) {
		t.Fatalf("adopted a pinned map of another layout: %v", err)
	}
	d.Close()
	// the build that made them adopts them again once its record is back
	spec, err := LoadGuard()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := ebpf.LoadPinnedMap(filepath.Join(dir, mapsDir, GuardMapPinLayouts), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if err := rec.Update(pinName(GuardMapClients), layoutOf(spec.Maps[GuardMapClients]), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	d2 := newDatapath(t, Options{PinDir: dir})
	if !d2.Adopted() || d2.Generation() != 1 {
		t.Fatalf("adopted %v generation %d, want true and 1", d2.Adopted(), d2.Generation())
	}
}
