package detect

// lru is a map that remembers use order, so the state seen least recently can
// be dropped first: when over its cap, and when idle.
type lru[K comparable, V any] struct {
	m    map[K]*node[K, V]
	root node[K, V] // sentinel: root.next is the newest, root.prev the oldest
}

type node[K comparable, V any] struct {
	key        K
	val        V
	prev, next *node[K, V]
}

func newLRU[K comparable, V any]() *lru[K, V] {
	l := &lru[K, V]{m: map[K]*node[K, V]{}}
	l.root.next, l.root.prev = &l.root, &l.root
	return l
}

func (l *lru[K, V]) len() int { return len(l.m) }

// get returns the value and marks it used.
func (l *lru[K, V]) get(k K) (V, bool) {
	n, ok := l.m[k]
	if !ok {
		var zero V
		return zero, false
	}
	l.unlink(n)
	l.pushFront(n)
	return n.val, true
}

// peek returns the value without marking it used.
func (l *lru[K, V]) peek(k K) (V, bool) {
	n, ok := l.m[k]
	if !ok {
		var zero V
		return zero, false
	}
	return n.val, true
}

// put adds or replaces k as the newest entry.
func (l *lru[K, V]) put(k K, v V) {
	if n, ok := l.m[k]; ok {
		n.val = v
		l.unlink(n)
		l.pushFront(n)
		return
	}
	n := &node[K, V]{key: k, val: v}
	l.m[k] = n
	l.pushFront(n)
}

// recycle gives the oldest entry's node to k (with value v) as the newest
// entry, saving an allocation when a full map turns over.
func (l *lru[K, V]) recycle(k K, v V) {
	n := l.root.prev
	if n == &l.root {
		l.put(k, v)
		return
	}
	delete(l.m, n.key)
	if other, ok := l.m[k]; ok {
		l.unlink(other)
		delete(l.m, k)
	}
	n.key, n.val = k, v
	l.m[k] = n
	l.unlink(n)
	l.pushFront(n)
}

// oldest returns the least recently used entry.
func (l *lru[K, V]) oldest() (K, V, bool) {
	if len(l.m) == 0 {
		var k K
		var v V
		return k, v, false
	}
	n := l.root.prev
	return n.key, n.val, true
}

func (l *lru[K, V]) remove(k K) {
	if n, ok := l.m[k]; ok {
		l.unlink(n)
		delete(l.m, k)
	}
}

// each visits entries from newest to oldest until fn returns false.
func (l *lru[K, V]) each(fn func(K, V) bool) {
	for n := l.root.next; n != &l.root; n = n.next {
		if !fn(n.key, n.val) {
			return
		}
	}
}

func (l *lru[K, V]) unlink(n *node[K, V]) {
	n.prev.next = n.next
	n.next.prev = n.prev
}

func (l *lru[K, V]) pushFront(n *node[K, V]) {
	n.prev = &l.root
	n.next = l.root.next
	l.root.next.prev = n
	l.root.next = n
}
