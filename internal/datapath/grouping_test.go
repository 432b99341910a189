//go:build linux

package datapath

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// refGroup is the reference of the program's grouping: k with the fields
// opts.Dimensions drops zeroed and its kept addresses aggregated.
func refGroup(k FlowKey, opts Options) FlowKey {
	dims := opts.Dimensions
	if dims == (Dimensions{}) {
		dims = ConnectionDimensions()
	}
	if dims.SrcAddr {
		k.SrcAddr, k.SrcPrefix = refAggregate(k.SrcAddr, k.Family, opts.Source, opts)
	} else {
		k.SrcAddr = [16]byte{}
	}
	if dims.DstAddr {
		k.DstAddr, k.DstPrefix = refAggregate(k.DstAddr, k.Family, opts.Destination, opts)
	} else {
		k.DstAddr = [16]byte{}
	}
	if !dims.SrcAddr && !dims.DstAddr {
		k.Family = 0
	}
	if !dims.SrcPort {
		k.SrcPort = 0
	}
	if !dims.DstPort {
		k.DstPort = 0
	}
	if !dims.Proto {
		k.Proto = 0
	}
	if !dims.Ifindex {
		k.Ifindex = 0
	}
	return k
}

// refAggregate returns the address and prefix a kept address is grouped
// into: the narrowest CIDR holding it, "other", or its family's prefix.
func refAggregate(addr [16]byte, family uint8, agg Aggregation, opts Options) ([16]byte, uint8) {
	a := netip.AddrFrom16(addr)
	if family == FamilyIPv4 {
		a = a.Unmap()
	}
	if agg.CIDRs && len(opts.CIDRs) > 0 {
		best := netip.Prefix{}
		for _, p := range opts.CIDRs {
			if p.Contains(a) && (!best.IsValid() || p.Bits() > best.Bits()) {
				best = p
			}
		}
		if best.IsValid() {
			return best.Addr().As16(), uint8(best.Bits())
		}
		if opts.OtherOutsideCIDRs {
			return [16]byte{}, PrefixOther
		}
	}
	bits := agg.PrefixIPv6
	if family == FamilyIPv4 {
		bits = agg.PrefixIPv4
	}
	if bits == 0 {
		return addr, PrefixWhole
	}
	return netip.PrefixFrom(a, int(bits)).Masked().Addr().As16(), bits
}

// groupingFrames returns frames of many connections: IPv4 and IPv6 from
// several prefixes, to two local addresses each, TCP and UDP, to two
// ports, VLAN-tagged or not, and non-first fragments.
func groupingFrames() [][]byte {
	var frames [][]byte
	srcs4 := []string{"198.51.100.1", "198.51.100.77", "198.51.101.5", "10.244.1.9", "10.244.200.1", "10.245.0.1"}
	dsts4 := []string{"198.51.100.2", "10.244.7.7"}
	srcs6 := []string{"fd00:db8::1", "fd00:db8::ff", "fd00:db8:0:1::1", "fd00:10::5", "fd00:10:0:ff::5", "fd00:11::1"}
	dsts6 := []string{"fd00:db8::2", "fd00:10::2"}
	for i, src := range srcs4 {
		for j, dst := range dsts4 {
			for _, proto := range []uint8{protoTCP, protoUDP} {
				for _, dport := range []uint16{8080, 9090} {
					sport := uint16(40000 + 10*i + j)
					h := ipv4{proto: proto, src: addr(src), dst: addr(dst)}
					frames = append(frames, ether(etherTypeIPv4, h.packet(l4(proto, sport, dport, i+j))))
					frames = append(frames, ether(etherTypeIPv4, h.packet(l4(proto, sport+1, dport, 7)), vlan{tpid: 0x8100, id: 5}))
				}
			}
			frag := ipv4{proto: protoUDP, src: addr(src), dst: addr(dst), fragOffset: 185}
			frames = append(frames, ether(etherTypeIPv4, frag.packet(make([]byte, 40))))
		}
	}
	for i, src := range srcs6 {
		for j, dst := range dsts6 {
			for _, proto := range []uint8{protoTCP, protoUDP} {
				sport := uint16(41000 + 10*i + j)
				h := ipv6{src: addr(src), dst: addr(dst), proto: proto}
				frames = append(frames, ether(etherTypeIPv6, h.packet(l4(proto, sport, 8080, i))))
			}
			frag := ipv6{src: addr(src), dst: addr(dst), proto: protoUDP, ext: []ipv6Ext{fragExt(64, false)}}
			frames = append(frames, ether(etherTypeIPv6, frag.packet(make([]byte, 24))))
		}
	}
	return frames
}

// TestGroupingSumsConnections runs the frames of many connections through
// the program loaded with each grouping, and checks that every entry holds
// exactly the sum of the connections the reference groups into it.
func TestGroupingSumsConnections(t *testing.T) {
	privtest.RequireRoot(t)
	cidrs := []netip.Prefix{
		netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.1.0/24"), // nested: the narrowest wins
		netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("fd00:10::/32"), netip.MustParsePrefix("fd00:10::/56"),
	}
	every := Dimensions{SrcAddr: true, SrcPort: true, DstAddr: true, DstPort: true, Proto: true, Ifindex: true}
	cases := []struct {
		name string
		opts func(*Options)
	}{
		{"connections", func(*Options) {}},
		{"every field", func(o *Options) { o.Dimensions = every }},
		{"source address only", func(o *Options) { o.Dimensions = Dimensions{SrcAddr: true} }},
		{"destination address and port", func(o *Options) { o.Dimensions = Dimensions{DstAddr: true, DstPort: true} }},
		{"transport only", func(o *Options) { o.Dimensions = Dimensions{Proto: true} }},
		{"source /24 and /64", func(o *Options) {
			o.Dimensions = Dimensions{SrcAddr: true, DstPort: true, Proto: true}
			o.Source = Aggregation{PrefixIPv4: 24, PrefixIPv6: 64}
		}},
		{"odd prefixes on both", func(o *Options) {
			o.Dimensions = every
			o.Source = Aggregation{PrefixIPv4: 13, PrefixIPv6: 61}
			o.Destination = Aggregation{PrefixIPv4: 31, PrefixIPv6: 127}
		}},
		{"cidrs, others kept", func(o *Options) {
			o.Dimensions = Dimensions{SrcAddr: true, DstAddr: true}
			o.Source = Aggregation{CIDRs: true}
			o.CIDRs = cidrs
		}},
		{"cidrs, others /24 and /48", func(o *Options) {
			o.Dimensions = Dimensions{SrcAddr: true, DstPort: true}
			o.Source = Aggregation{CIDRs: true, PrefixIPv4: 24, PrefixIPv6: 48}
			o.CIDRs = cidrs
		}},
		{"cidrs on both, others other", func(o *Options) {
			o.Dimensions = every
			o.Source = Aggregation{CIDRs: true}
			o.Destination = Aggregation{CIDRs: true}
			o.CIDRs = cidrs
			o.OtherOutsideCIDRs = true
		}},
	}
	frames := groupingFrames()
	ifindex := loopbackIndex(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := allPorts(testOptions())
			tc.opts(&opts)
			d := loadDatapath(t, opts)
			want := map[FlowKey]FlowValue{}
			for _, f := range frames {
				runFrame(t, d, f)
				k, ok := refParseAll(f)
				if !ok {
					t.Fatalf("the reference parser does not count frame %x", f)
				}
				k.Ifindex = ifindex
				k = refGroup(k, opts)
				v := want[k]
				v.Packets++
				v.Bytes += uint64(len(f))
				want[k] = v
			}
			got := readFlows(t, d)
			if len(got) != len(want) {
				t.Errorf("%d entries, want %d (%d frames)", len(got), len(want), len(frames))
			}
			for k, w := range want {
				g, ok := got[k]
				if !ok || g.Packets != w.Packets || g.Bytes != w.Bytes {
					t.Errorf("%s: %d packets %d bytes (found %v), want %d and %d", describeKey(k), g.Packets, g.Bytes, ok, w.Packets, w.Bytes)
				}
			}
			t.Logf("%d frames in %d entries", len(frames), len(got))
		})
	}
}

func describeKey(k FlowKey) string {
	return fmt.Sprintf("%s/%d -> %s/%d proto %d ports %d->%d if %d family %d", k.Source(), k.SrcPrefix, k.Destination(), k.DstPrefix,
		k.Proto, k.SrcPort, k.DstPort, k.Ifindex, k.Family)
}
