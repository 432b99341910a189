package datapath

// KeySlot returns the refresh slot of k among refresh: KeyHash(k) modulo
// refresh. It depends only on the key, so a key keeps its slot for as
// long as refresh stays the same. Only Go computes it (the receiver's
// refresh share of export_changed_only): the kernel stores no hash.
func KeySlot(k *FlowKey, refresh uint32) uint32 {
	return KeyHash(k) % refresh
}

// KeyHash returns the hash KeySlot reduces: a 32-bit FNV-1a over the
// key's twelve little-endian words (its memory in struct flow_key, the
// padding zero), folded. Every field is hashed, the direction included.
func KeyHash(k *FlowKey) uint32 {
	var words [12]uint32
	for i := range 4 {
		words[i] = le32(k.SrcAddr[4*i:])
		words[4+i] = le32(k.DstAddr[4*i:])
	}
	words[8] = k.Ifindex
	words[9] = uint32(k.SrcPort) | uint32(k.DstPort)<<16
	words[10] = uint32(k.Proto) | uint32(k.Family)<<8 | uint32(k.SrcPrefix)<<16 | uint32(k.DstPrefix)<<24
	words[11] = uint32(k.Direction) // and the zero padding
	h := uint32(2166136261)
	for _, w := range words {
		h ^= w
		h *= 16777619
	}
	return h ^ h>>16
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
