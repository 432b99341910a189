package xdpflowreceiver

import "unsafe"

// mappedSlice is a growable slice of T, a type without pointers, kept in
// memory mapped outside the Go heap (on Linux) unless onHeap: the garbage
// collector sizes the heap at about twice what is live in it, so what a
// million series keep from snapshot to snapshot costs twice its size in
// resident memory on the heap, once outside it. Call free when done; s is
// invalid after.
type mappedSlice[T any] struct {
	s   []T
	mem []byte // the mapping; nil when s is on the heap
	// onHeap keeps s on the Go heap, for slices whose size paces the
	// garbage collector as it should (see changedTracker).
	onHeap bool
}

// reserve makes room for n elements in all, keeping s.
func (m *mappedSlice[T]) reserve(n int) {
	if n <= cap(m.s) {
		return
	}
	var zero T
	var s []T
	var mem []byte
	if !m.onHeap {
		mem = mapMemory(n * int(unsafe.Sizeof(zero)))
	}
	if mem != nil {
		s = unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(mem))), n)[:len(m.s)]
	} else {
		s = make([]T, len(m.s), n)
	}
	copy(s, m.s)
	m.free()
	m.s, m.mem = s, mem
}

// adopt makes s the slice, s being m.s grown in place (it keeps the
// mapping) or not (the mapping is released).
func (m *mappedSlice[T]) adopt(s []T) {
	if cap(s) == 0 || cap(m.s) == 0 || unsafe.SliceData(s) != unsafe.SliceData(m.s) {
		m.free()
	}
	m.s = s
}

// push appends v.
func (m *mappedSlice[T]) push(v T) {
	if len(m.s) == cap(m.s) {
		m.reserve(max(2*cap(m.s), 1024))
	}
	m.s = append(m.s, v)
}

// truncate keeps the first n elements.
func (m *mappedSlice[T]) truncate(n int) { m.s = m.s[:n] }

// free releases the memory.
func (m *mappedSlice[T]) free() {
	if m.mem != nil {
		unmapMemory(m.mem)
	}
	m.s, m.mem = nil, nil
}
