//go:build linux

package datapath

import (
	"reflect"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf/btf"
)

// field is the offset and size of one struct field.
type field struct {
	name         string
	offset, size uintptr
}

// fieldsOf returns the named fields of struct type typ, in order, without
// the blank structs.HostLayout markers of generated types.
func fieldsOf(typ reflect.Type) []field {
	var out []field
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Name == "_" {
			continue
		}
		out = append(out, field{f.Name, f.Offset, f.Type.Size()})
	}
	return out
}

// shiftFields returns fields with by subtracted from their offsets.
func shiftFields(fields []field, by uintptr) []field {
	out := make([]field, len(fields))
	for i, f := range fields {
		out[i] = field{f.name, f.offset - by, f.size}
	}
	return out
}

// TestLayoutMatchesGenerated checks that the hand-written mirrors of the C
// structs have the size and field offsets of the bpf2go-generated types,
// and that FlowKey has no implicit padding, whose bytes the kernel would
// compare as part of the key.
func TestLayoutMatchesGenerated(t *testing.T) {
	cases := []struct {
		name      string
		ours, gen reflect.Type
	}{
		{"flow_key", reflect.TypeFor[FlowKey](), reflect.TypeFor[xdpflowFlowKey]()},
		{"flow_counters", reflect.TypeFor[FlowValue](), reflect.TypeFor[xdpflowFlowCounters]()},
		{"trigger_event", reflect.TypeFor[TriggerEvent](), reflect.TypeFor[xdpflowTriggerEvent]()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ours, gen := fieldsOf(tc.ours), fieldsOf(tc.gen)
			if tc.name == "flow_counters" {
				// FlowValue ends with the counters, after the kernel's fields.
				ours = shiftFields(ours, tc.ours.Size()-tc.gen.Size())
			} else if tc.ours.Size() != tc.gen.Size() {
				t.Errorf("size %d, generated %d", tc.ours.Size(), tc.gen.Size())
			}
			if len(ours) != len(gen) {
				t.Fatalf("%d fields %+v, generated %d %+v", len(ours), ours, len(gen), gen)
			}
			var sum uintptr
			for i := range ours {
				o, g := ours[i], gen[i]
				if o.offset != g.offset || o.size != g.size {
					t.Errorf("field %s at %d size %d, generated %s at %d size %d", o.name, o.offset, o.size, g.name, g.offset, g.size)
				}
				sum += o.size
			}
			if sum != tc.gen.Size() {
				t.Errorf("fields add up to %d bytes but the struct has %d: implicit padding", sum, tc.ours.Size())
			}
		})
	}
}

// TestLayoutOffsets spells out the comparison of TestLayoutMatchesGenerated
// with unsafe for every field, so that a renamed or reordered field fails
// by name.
func TestLayoutOffsets(t *testing.T) {
	var k FlowKey
	var gk xdpflowFlowKey
	var v FlowValue
	var gv xdpflowFlowValue
	var gc xdpflowFlowCounters
	var gm xdpflowEvictMsg
	counters := unsafe.Offsetof(gv.Counters)
	checks := []struct {
		name      string
		ours, gen uintptr
	}{
		{"sizeof FlowKey", unsafe.Sizeof(k), unsafe.Sizeof(gk)},
		{"FlowKey.SrcAddr", unsafe.Offsetof(k.SrcAddr), unsafe.Offsetof(gk.Saddr)},
		{"FlowKey.Ifindex", unsafe.Offsetof(k.Ifindex), unsafe.Offsetof(gk.Ifindex)},
		{"FlowKey.SrcPort", unsafe.Offsetof(k.SrcPort), unsafe.Offsetof(gk.Sport)},
		{"FlowKey.DstPort", unsafe.Offsetof(k.DstPort), unsafe.Offsetof(gk.Dport)},
		{"FlowKey.Proto", unsafe.Offsetof(k.Proto), unsafe.Offsetof(gk.Proto)},
		{"FlowKey.Family", unsafe.Offsetof(k.Family), unsafe.Offsetof(gk.Family)},
		{"FlowKey.Pad", unsafe.Offsetof(k.Pad), unsafe.Offsetof(gk.Pad)},
		{"sizeof FlowValue", unsafe.Sizeof(v), unsafe.Sizeof(gv)},
		{"FlowValue.Packets", unsafe.Offsetof(v.Packets), counters + unsafe.Offsetof(gc.Packets)},
		{"FlowValue.Bytes", unsafe.Offsetof(v.Bytes), counters + unsafe.Offsetof(gc.Bytes)},
		{"FlowValue.FirstSeenNs", unsafe.Offsetof(v.FirstSeenNs), counters + unsafe.Offsetof(gc.FirstSeenNs)},
		{"FlowValue.LastSeenNs", unsafe.Offsetof(v.LastSeenNs), counters + unsafe.Offsetof(gc.LastSeenNs)},
		// Evict encodes and decodes struct evict_msg by hand.
		{"sizeof evict_msg", evictMsgSize, unsafe.Sizeof(gm)},
		{"evict_msg.found", 28, unsafe.Offsetof(gm.Found)},
		{"evict_msg.counters", 32, unsafe.Offsetof(gm.Counters)},
	}
	for _, c := range checks {
		if c.ours != c.gen {
			t.Errorf("%s = %d, generated %d", c.name, c.ours, c.gen)
		}
	}
	fields := unsafe.Sizeof(k.SrcAddr) + unsafe.Sizeof(k.Ifindex) + unsafe.Sizeof(k.SrcPort) +
		unsafe.Sizeof(k.DstPort) + unsafe.Sizeof(k.Proto) + unsafe.Sizeof(k.Family) + unsafe.Sizeof(k.Pad)
	if fields != unsafe.Sizeof(k) || fields != 28 {
		t.Errorf("FlowKey fields add up to %d bytes, struct has %d, want both 28", fields, unsafe.Sizeof(k))
	}
}

// TestLayoutMatchesBTF checks FlowKey, FlowValue and TriggerEvent against
// the BTF of the compiled program, i.e. the C structs themselves, and the
// order of the statistics that Stats reads.
func TestLayoutMatchesBTF(t *testing.T) {
	spec, err := loadXdpflow()
	if err != nil {
		t.Fatal(err)
	}
	var event *btf.Struct
	if err := spec.Types.TypeByName("trigger_event", &event); err != nil {
		t.Fatalf("find struct trigger_event: %v", err)
	}
	cases := []struct {
		name string
		btf  btf.Type
		ours reflect.Type
	}{
		{"flows key", spec.Maps[xdpflowMapFlows].Key, reflect.TypeFor[FlowKey]()},
		{"trigger_event", event, reflect.TypeFor[TriggerEvent]()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, ok := btf.UnderlyingType(tc.btf).(*btf.Struct)
			if !ok {
				t.Fatalf("BTF type %v is not a struct", tc.btf)
			}
			if uintptr(s.Size) != tc.ours.Size() {
				t.Errorf("C size %d, Go size %d", s.Size, tc.ours.Size())
			}
			ours := fieldsOf(tc.ours)
			if len(s.Members) != len(ours) {
				t.Fatalf("C has %d members, Go %d fields", len(s.Members), len(ours))
			}
			for i, m := range s.Members {
				size, err := btf.Sizeof(m.Type)
				if err != nil {
					t.Fatalf("size of %s: %v", m.Name, err)
				}
				if m.BitfieldSize != 0 || uintptr(m.Offset.Bytes()) != ours[i].offset || uintptr(size) != ours[i].size {
					t.Errorf("C %s at %d size %d, Go %s at %d size %d", m.Name, m.Offset.Bytes(), size, ours[i].name, ours[i].offset, ours[i].size)
				}
			}
		})
	}

	// Stats reads the per-CPU array at indexes 0 to 3 in this order.
	stats := []xdpflowXdpflowStat{
		xdpflowXdpflowStatSTAT_OVERFLOW_PACKETS,
		xdpflowXdpflowStatSTAT_OVERFLOW_BYTES,
		xdpflowXdpflowStatSTAT_RINGBUF_DROPS,
		xdpflowXdpflowStatSTAT_EVENTS,
	}
	for i, s := range stats {
		if int(s) != i {
			t.Errorf("stat %d has index %d", i, s)
		}
	}
	if got := spec.Maps[xdpflowMapStats].MaxEntries; got != uint32(xdpflowXdpflowStatSTAT_MAX) || got != uint32(len(stats)) {
		t.Errorf("stats map has %d entries, want STAT_MAX = %d", got, len(stats))
	}
}
