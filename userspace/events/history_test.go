package events

import "testing"

func TestHistory(t *testing.T) {
	if _, err := NewHistory(0); err == nil {
		t.Fatal("size 0 accepted")
	}
	h, err := NewHistory(4)
	if err != nil {
		t.Fatal(err)
	}
	check := func(n int, want ...uint64) {
		t.Helper()
		got := h.Last(n)
		if len(got) != len(want) {
			t.Fatalf("Last(%d) = %d events, want %v", n, len(got), want)
		}
		for i := range want {
			if got[i].Ts != want[i] {
				t.Fatalf("Last(%d)[%d] = ts %d, want %v", n, i, got[i].Ts, want)
			}
		}
	}
	check(10)
	h.Add(ev(1))
	h.Add(ev(2))
	check(10, 1, 2)
	check(1, 2)
	check(-1)
	for i := uint64(3); i <= 9; i++ {
		h.Add(ev(i))
	}
	check(10, 6, 7, 8, 9)
	check(2, 8, 9)
}
