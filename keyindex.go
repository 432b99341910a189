package xdpflowreceiver

import (
	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// keyIndex finds the position of a key in a slice of keys: an open
// addressing table of positions (linear probing, at most half full), 8 to
// 16 bytes per key outside the Go heap where a Go map of FlowKey costs
// about 100 on it (BENCHMARKS.md, "1,000,000 connections, 1% changed").
type keyIndex struct {
	mapped mappedSlice[int32]
	slots  []int32 // mapped.s: position + 1; 0 is free
	mask   uint32
	n      int
}

// reset empties the index, sized for n keys.
func (x *keyIndex) reset(n int) {
	size := uint32(16)
	for int(size) < 2*n {
		size *= 2
	}
	x.free()
	x.mapped.reserve(int(size)) // zeroed
	x.slots = x.mapped.s[:size]
	x.mask = size - 1
}

// free releases the index's memory; it is empty after.
func (x *keyIndex) free() {
	x.mapped.free()
	x.slots, x.mask, x.n = nil, 0, 0
}

// find returns the slot of k, whose hash is h, in keys, or the free slot
// where it would go (found false).
func (x *keyIndex) find(keys []datapath.FlowKey, k *datapath.FlowKey, h uint32) (slot uint32, found bool) {
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		p := x.slots[i]
		if p == 0 {
			return i, false
		}
		if keys[p-1] == *k {
			return i, true
		}
	}
}

// get returns the position of k.
func (x *keyIndex) get(keys []datapath.FlowKey, k *datapath.FlowKey, h uint32) (pos int32, ok bool) {
	if x.n == 0 {
		return 0, false
	}
	i, found := x.find(keys, k, h)
	return x.slots[i] - 1, found
}

// insert records pos as the position of keys[pos], whose hash is h and
// which is not in the index; hashes holds the hash of every key indexed,
// for growing.
func (x *keyIndex) insert(keys []datapath.FlowKey, hashes []uint32, pos int32, h uint32) {
	if 2*(x.n+1) > len(x.slots) {
		x.grow(keys, hashes)
	}
	i, _ := x.find(keys, &keys[pos], h)
	x.slots[i] = pos + 1
	x.n++
}

func (x *keyIndex) grow(keys []datapath.FlowKey, hashes []uint32) {
	old := x.mapped
	x.mapped = mappedSlice[int32]{} // kept from reset's free until copied
	n := x.n
	x.reset(2 * max(n, 8))
	for _, p := range old.s[:cap(old.s)] {
		if p != 0 {
			i, _ := x.find(keys, &keys[p-1], hashes[p-1])
			x.slots[i] = p
			x.n++
		}
	}
	old.free()
}

// move records that the key at from, whose hash is h, is now at to:
// keys[to] holds it already.
func (x *keyIndex) move(from, to int32, h uint32) {
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		if x.slots[i] == from+1 {
			x.slots[i] = to + 1
			return
		}
	}
}

// remove drops the key at pos, whose hash is h, shifting back the keys
// probed past it so that every key stays reachable from its home slot.
func (x *keyIndex) remove(keys []datapath.FlowKey, hashes []uint32, pos int32, h uint32) {
	i := h & x.mask
	for x.slots[i] != pos+1 {
		i = (i + 1) & x.mask
	}
	for j := (i + 1) & x.mask; x.slots[j] != 0; j = (j + 1) & x.mask {
		home := hashes[x.slots[j]-1] & x.mask
		// Move j's key into the hole at i unless its home lies
		// cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = 0
	x.n--
}
