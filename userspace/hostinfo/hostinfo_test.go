package hostinfo

import (
	"testing"

	"github.com/apiguard/apiguard/test/netns"
	"github.com/apiguard/apiguard/test/testenv"
)

func TestAtLeast(t *testing.T) {
	for _, tc := range []struct {
		release      string
		major, minor int
		want         bool
	}{
		{"6.18.44-fc-v1300", 6, 6, true},
		{"6.6.0", 6, 6, true},
		{"6.5.13-generic", 6, 6, false},
		{"5.15.0-91-generic", 6, 6, false},
		{"7.0", 6, 6, true},
		{"6.10rc1", 6, 6, true},
		{"", 6, 6, false},
		{"garbage", 6, 6, false},
	} {
		if got := atLeast(tc.release, tc.major, tc.minor); got != tc.want {
			t.Errorf("atLeast(%q, %d, %d) = %v, want %v", tc.release, tc.major, tc.minor, got, tc.want)
		}
	}
}

// TestNativeXDP asks the kernel about a veth, whose driver runs XDP, and an
// ifb, whose driver does not, in a namespace of the test's own.
func TestNativeXDP(t *testing.T) {
	testenv.RequireRoot(t)
	ns, err := netns.New("hinfo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	if err := ns.IP("link", "add", "v0", "type", "veth", "peer", "name", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := ns.IP("link", "add", "i0", "type", "ifb"); err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error {
		for name, want := range map[string]bool{"v0": true, "i0": false} {
			got, err := NativeXDP(name)
			if err != nil {
				t.Errorf("NativeXDP(%s): %v", name, err)
			} else if got != want {
				t.Errorf("NativeXDP(%s) = %v, want %v", name, got, want)
			}
		}
		if _, err := NativeXDP("nosuch0"); err == nil {
			t.Error("NativeXDP of a missing interface: no error")
		}
		k := Read()
		if k.XDPFeaturesError != "" || !k.BTF || k.Release == "" {
			t.Errorf("Read: %+v", k)
		}
		seen := map[string]bool{}
		for _, i := range k.Interfaces {
			if i.NativeXDP == nil {
				t.Errorf("%s: native XDP unknown", i.Name)
				continue
			}
			seen[i.Name] = *i.NativeXDP
		}
		if want := map[string]bool{"v0": true, "v1": true, "i0": false}; len(seen) != len(want) || seen["v0"] != true || seen["v1"] != true || seen["i0"] != false {
			t.Errorf("Read interfaces %v, want %v (loopback left out)", seen, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
