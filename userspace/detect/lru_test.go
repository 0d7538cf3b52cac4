package detect

import (
	"slices"
	"testing"
)

func TestLRU(t *testing.T) {
	l := newLRU[int, string]()
	order := func() []int {
		var ks []int
		l.each(func(k int, _ string) bool { ks = append(ks, k); return true })
		return ks
	}
	for i := 1; i <= 4; i++ {
		l.put(i, "v")
	}
	if got := order(); !slices.Equal(got, []int{4, 3, 2, 1}) {
		t.Fatalf("order %v", got)
	}
	l.get(2)
	l.peek(1) // peek does not refresh
	if got := order(); !slices.Equal(got, []int{2, 4, 3, 1}) {
		t.Fatalf("after get: %v", got)
	}
	if k, _, _ := l.oldest(); k != 1 {
		t.Fatalf("oldest %d", k)
	}
	l.recycle(9, "new")
	if got := order(); !slices.Equal(got, []int{9, 2, 4, 3}) || l.len() != 4 {
		t.Fatalf("after recycle: %v", got)
	}
	if v, ok := l.get(9); !ok || v != "new" {
		t.Fatal("recycled value")
	}
	if _, ok := l.peek(1); ok {
		t.Fatal("recycled key still present")
	}
	l.remove(4)
	l.remove(4)
	if got := order(); !slices.Equal(got, []int{9, 2, 3}) || l.len() != 3 {
		t.Fatalf("after remove: %v", got)
	}
	empty := newLRU[int, int]()
	if _, _, ok := empty.oldest(); ok {
		t.Fatal("empty has an oldest")
	}
	empty.recycle(1, 1)
	if empty.len() != 1 {
		t.Fatal("recycle on empty")
	}
}
