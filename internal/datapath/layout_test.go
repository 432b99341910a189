//go:build linux

package datapath

import (
	"bytes"
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

// fieldsOf returns the fields of struct type typ, in order, without the
// blank structs.HostLayout markers of generated types (blank padding
// stays).
func fieldsOf(typ reflect.Type) []field {
	var out []field
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Name == "_" && f.Type.Size() == 0 {
			continue
		}
		out = append(out, field{f.Name, f.Offset, f.Type.Size()})
	}
	return out
}

// TestLayoutMatchesGenerated checks that the public types have the size
// and field offsets of the bpf2go-generated types: FlowKey because batch
// lookups fill it in place and the walk's entries are read as it,
// FlowValue because it is the kernel's counters (read in place from the
// walk's entries too),
// TriggerEvent because it is to
// carry every field of the kernel's event. It also checks that FlowKey has
// no implicit padding, whose bytes the kernel would compare as part of the
// key.
func TestLayoutMatchesGenerated(t *testing.T) {
	cases := []struct {
		name      string
		ours, gen reflect.Type
	}{
		{"flow_key", reflect.TypeFor[FlowKey](), reflect.TypeFor[xdpflowFlowKey]()},
		{"flow_counters", reflect.TypeFor[FlowValue](), reflect.TypeFor[xdpflowFlowCounters]()},
		{"trigger_event", reflect.TypeFor[TriggerEvent](), reflect.TypeFor[xdpflowTriggerEvent]()},
		{"dump_entry.key", reflect.TypeFor[FlowKey](), reflect.TypeOf(xdpflowDumpDumpEntry{}.Key)},
		{"dump_entry.counters", reflect.TypeFor[FlowValue](), reflect.TypeOf(xdpflowDumpDumpEntry{}.Counters)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ours, gen := fieldsOf(tc.ours), fieldsOf(tc.gen)
			if tc.ours.Size() != tc.gen.Size() {
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
	var gc xdpflowFlowCounters
	checks := []struct {
		name      string
		ours, gen uintptr
	}{
		{"sizeof FlowKey", unsafe.Sizeof(k), unsafe.Sizeof(gk)},
		{"FlowKey.SrcAddr", unsafe.Offsetof(k.SrcAddr), unsafe.Offsetof(gk.Saddr)},
		{"FlowKey.DstAddr", unsafe.Offsetof(k.DstAddr), unsafe.Offsetof(gk.Daddr)},
		{"FlowKey.Ifindex", unsafe.Offsetof(k.Ifindex), unsafe.Offsetof(gk.Ifindex)},
		{"FlowKey.SrcPort", unsafe.Offsetof(k.SrcPort), unsafe.Offsetof(gk.Sport)},
		{"FlowKey.DstPort", unsafe.Offsetof(k.DstPort), unsafe.Offsetof(gk.Dport)},
		{"FlowKey.Proto", unsafe.Offsetof(k.Proto), unsafe.Offsetof(gk.Proto)},
		{"FlowKey.Family", unsafe.Offsetof(k.Family), unsafe.Offsetof(gk.Family)},
		{"FlowKey.SrcPrefix", unsafe.Offsetof(k.SrcPrefix), unsafe.Offsetof(gk.Sprefix)},
		{"FlowKey.DstPrefix", unsafe.Offsetof(k.DstPrefix), unsafe.Offsetof(gk.Dprefix)},
		{"FlowKey.Direction", unsafe.Offsetof(k.Direction), unsafe.Offsetof(gk.Direction)},
		{"sizeof FlowValue", unsafe.Sizeof(v), unsafe.Sizeof(gc)},
		{"FlowValue.Packets", unsafe.Offsetof(v.Packets), unsafe.Offsetof(gc.Packets)},
		{"FlowValue.Bytes", unsafe.Offsetof(v.Bytes), unsafe.Offsetof(gc.Bytes)},
		{"FlowValue.FirstSeenNs", unsafe.Offsetof(v.FirstSeenNs), unsafe.Offsetof(gc.FirstSeenNs)},
		{"FlowValue.LastSeenNs", unsafe.Offsetof(v.LastSeenNs), unsafe.Offsetof(gc.LastSeenNs)},
	}
	for _, c := range checks {
		if c.ours != c.gen {
			t.Errorf("%s = %d, generated %d", c.name, c.ours, c.gen)
		}
	}
	fields := unsafe.Sizeof(k.SrcAddr) + unsafe.Sizeof(k.DstAddr) + unsafe.Sizeof(k.Ifindex) + unsafe.Sizeof(k.SrcPort) +
		unsafe.Sizeof(k.DstPort) + unsafe.Sizeof(k.Proto) + unsafe.Sizeof(k.Family) + unsafe.Sizeof(k.SrcPrefix) + unsafe.Sizeof(k.DstPrefix) +
		unsafe.Sizeof(k.Direction) + unsafe.Sizeof(gk.Pad) // FlowKey's padding is blank
	if fields != unsafe.Sizeof(k) || fields != 48 {
		t.Errorf("FlowKey fields add up to %d bytes, struct has %d, want both 48 (no padding)", fields, unsafe.Sizeof(k))
	}
}

// TestLayoutMatchesBTF checks FlowKey and TriggerEvent against the BTF of
// the compiled program, i.e. the C structs themselves.
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
}

// TestKernelKeyKeepsBytes checks that kernelKey moves every field of a
// FlowKey to its place in struct flow_key: the two are byte for byte the
// same for a key whose every byte but the (zero) padding differs, and
// flowKeyOf gives the key back.
func TestKernelKeyKeepsBytes(t *testing.T) {
	var k FlowKey
	for i := range unsafe.Offsetof(k.Direction) + 1 {
		bytesOf(&k)[i] = byte(i + 1)
	}
	kk := kernelKey(k)
	if !bytes.Equal(bytesOf(&kk), bytesOf(&k)) {
		t.Errorf("kernelKey(%x) = %x", bytesOf(&k), bytesOf(&kk))
	}
	if back := flowKeyOf(&kk); back != k {
		t.Errorf("flowKeyOf(kernelKey(%+v)) = %+v", k, back)
	}
}

// TestStatsReadsEveryStat checks that Stats sums every index of the
// per-CPU stats array, each into its own field, and that the array has
// exactly those indexes.
func TestStatsReadsEveryStat(t *testing.T) {
	spec, err := loadXdpflow()
	if err != nil {
		t.Fatal(err)
	}
	var s Stats
	fields := s.perCPUFields()
	indexes := map[xdpflowXdpflowStat]bool{}
	sums := map[*uint64]bool{}
	for _, f := range fields {
		if f.index >= xdpflowXdpflowStatSTAT_MAX || indexes[f.index] || sums[f.sum] {
			t.Errorf("stat index %d read twice, into a field used twice, or past STAT_MAX", f.index)
		}
		indexes[f.index], sums[f.sum] = true, true
	}
	if len(fields) != int(xdpflowXdpflowStatSTAT_MAX) {
		t.Errorf("Stats reads %d of the %d stats", len(fields), xdpflowXdpflowStatSTAT_MAX)
	}
	if got := spec.Maps[xdpflowMapStats].MaxEntries; got != uint32(xdpflowXdpflowStatSTAT_MAX) {
		t.Errorf("stats map has %d entries, want STAT_MAX = %d", got, xdpflowXdpflowStatSTAT_MAX)
	}
}
