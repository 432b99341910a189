//go:build linux

package datapath

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// flowWant is the flow a frame should be counted in.
type flowWant struct {
	key FlowKey
	// addr is what key.Source() must return: the unmapped source address.
	addr netip.Addr
}

// counted returns the flow of a packet from src; ports are those the
// program must read (0 for non-first fragments).
func counted(src string, proto uint8, sport, dport uint16) *flowWant {
	return &flowWant{key: wantKey(src, proto, sport, dport), addr: addr(src)}
}

// runCase is one frame run through the program with opts. want is nil when
// the frame must not be counted.
type runCase struct {
	name  string
	opts  Options
	frame []byte
	want  *flowWant
}

// Options of the table cases.
var (
	optsDefault = testOptions() // port 8080, TCP and UDP
	optsAll     = allPorts(testOptions())
	optsTCPOnly = withProtocols(testOptions(), TCP)
	optsUDPOnly = withProtocols(testOptions(), UDP)
)

func withProtocols(o Options, p ...Protocol) Options {
	o.Protocols = p
	return o
}

func withPorts(o Options, p ...uint16) Options {
	o.Ports = p
	return o
}

// Source addresses and ports of the table cases.
const (
	src4  = "10.1.2.3"
	src6  = "2001:db8:aa::7"
	sport = 40000
	dport = 8080
)

// frame4 is an IPv4 frame with hdr's protocol carrying a TCP or UDP header.
func frame4(hdr ipv4, sp, dp uint16, tags ...vlan) []byte {
	hdr.src, hdr.dst = addr(src4), addr(dstV4)
	return ether(etherTypeIPv4, hdr.packet(l4(hdr.proto, sp, dp, 16)), tags...)
}

// frame6 is an IPv6 frame from src6 carrying a TCP or UDP header after ext.
func frame6(proto uint8, sp, dp uint16, ext ...ipv6Ext) []byte {
	hdr := ipv6{src: addr(src6), dst: addr(dstV6), ext: ext, proto: proto}
	return ether(etherTypeIPv6, hdr.packet(l4(proto, sp, dp, 16)))
}

// dstOptsChain returns n destination options headers of 8 bytes each.
func dstOptsChain(n int) []ipv6Ext {
	ext := make([]ipv6Ext, n)
	for i := range ext {
		ext[i] = optsExt(protoDstOpts, 0)
	}
	return ext
}

// setByte returns a copy of frame with frame[off] = v.
func setByte(frame []byte, off int, v byte) []byte {
	out := append([]byte(nil), frame...)
	out[off] = v
	return out
}

func runCases() []runCase {
	tcp4 := ipv4{proto: protoTCP}
	udp4 := ipv4{proto: protoUDP}
	q := vlan{etherTypeVLAN, 100}
	ad := vlan{etherTypeQinQ, 200}
	// Bytes that look like ports 40000 -> 8080, where a first fragment
	// would have them; a non-first fragment must not read them.
	fakePorts := tcp(sport, dport, make([]byte, 8))

	cases := []runCase{
		{"ipv4 tcp", optsDefault, frame4(tcp4, sport, dport), counted(src4, protoTCP, sport, dport)},
		{"ipv4 udp", optsDefault, frame4(udp4, sport, dport), counted(src4, protoUDP, sport, dport)},
		{"ipv4 tcp protocols default to tcp+udp", withProtocols(optsDefault), frame4(tcp4, sport, dport), counted(src4, protoTCP, sport, dport)},
		{"ipv4 udp protocols default to tcp+udp", withProtocols(optsDefault), frame4(udp4, sport, dport), counted(src4, protoUDP, sport, dport)},
		{"ipv4 tcp wrong port", optsDefault, frame4(tcp4, sport, 8081), nil},
		{"ipv4 udp wrong port", optsDefault, frame4(udp4, sport, 80), nil},
		{"ipv4 source port is not the filter", optsDefault, frame4(tcp4, dport, 9999), nil},
		{"ipv4 any port", optsAll, frame4(tcp4, sport, 9999), counted(src4, protoTCP, sport, 9999)},
		{"ipv4 port 65535 in set", withPorts(optsDefault, 53, 65535), frame4(udp4, 1, 65535), counted(src4, protoUDP, 1, 65535)},
		{"ipv4 port 63 in set", withPorts(optsDefault, 63, 64), frame4(udp4, 1, 63), counted(src4, protoUDP, 1, 63)},
		{"ipv4 port 64 in set", withPorts(optsDefault, 63, 64), frame4(udp4, 1, 64), counted(src4, protoUDP, 1, 64)},
		{"ipv4 port 65 not in set", withPorts(optsDefault, 63, 64), frame4(udp4, 1, 65), nil},
		{"ipv4 udp with only tcp", optsTCPOnly, frame4(udp4, sport, dport), nil},
		{"ipv4 tcp with only tcp", optsTCPOnly, frame4(tcp4, sport, dport), counted(src4, protoTCP, sport, dport)},
		{"ipv4 tcp with only udp", optsUDPOnly, frame4(tcp4, sport, dport), nil},
		{"ipv4 udp with only udp", optsUDPOnly, frame4(udp4, sport, dport), counted(src4, protoUDP, sport, dport)},
		{"ipv4 icmp", optsAll, ether(etherTypeIPv4, ipv4{src: addr(src4), dst: addr(dstV4), proto: protoICMP}.packet(icmpEcho(8, 32))), nil},
		{"ipv4 version 6 in header", optsDefault, setByte(frame4(tcp4, sport, dport), ethHdrLen, 6<<4|5), nil},
		{"ipv4 ihl 4", optsDefault, setByte(frame4(tcp4, sport, dport), ethHdrLen, 4<<4|4), nil},

		{"vlan ipv4 tcp", optsDefault, frame4(tcp4, sport, dport, q), counted(src4, protoTCP, sport, dport)},
		{"vlan ipv4 udp wrong port", optsDefault, frame4(udp4, sport, 53, q), nil},
		{"qinq ipv4 tcp", optsDefault, frame4(tcp4, sport, dport, ad, q), counted(src4, protoTCP, sport, dport)},
		{"qinq ipv4 udp", optsDefault, frame4(udp4, sport, dport, ad, q), counted(src4, protoUDP, sport, dport)},
		{"double 802.1q ipv4 tcp", optsDefault, frame4(tcp4, sport, dport, q, q), counted(src4, protoTCP, sport, dport)},
		{"three vlan tags", optsAll, frame4(tcp4, sport, dport, ad, q, q), nil},
		{"qinq ipv6 tcp", optsDefault, ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), proto: protoTCP}.packet(l4(protoTCP, sport, dport, 16)), ad, q), counted(src6, protoTCP, sport, dport)},

		{"ipv6 tcp", optsDefault, frame6(protoTCP, sport, dport), counted(src6, protoTCP, sport, dport)},
		{"ipv6 udp", optsDefault, frame6(protoUDP, sport, dport), counted(src6, protoUDP, sport, dport)},
		{"ipv6 tcp wrong port", optsDefault, frame6(protoTCP, sport, 443), nil},
		{"ipv6 udp with only tcp", optsTCPOnly, frame6(protoUDP, sport, dport), nil},
		{"ipv6 tcp with only udp", optsUDPOnly, frame6(protoTCP, sport, dport), nil},
		{"ipv6 icmpv6", optsAll, ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), proto: protoICMPv6}.packet(icmpEcho(128, 32))), nil},
		{"ipv6 version 4 in header", optsDefault, setByte(frame6(protoTCP, sport, dport), ethHdrLen, 4<<4), nil},
		{"ipv6 hop-by-hop + dstopts tcp", optsDefault,
			frame6(protoTCP, sport, dport, optsExt(protoHopByHop, 0), optsExt(protoDstOpts, 1)),
			counted(src6, protoTCP, sport, dport)},
		{"ipv6 hop-by-hop + dstopts udp", optsDefault,
			frame6(protoUDP, sport, dport, optsExt(protoHopByHop, 2), optsExt(protoDstOpts, 0)),
			counted(src6, protoUDP, sport, dport)},
		{"ipv6 hop-by-hop + routing + ah + dstopts", optsDefault,
			frame6(protoTCP, sport, dport, optsExt(protoHopByHop, 0), optsExt(protoRouting, 2), ahExt(4), optsExt(protoDstOpts, 0)),
			counted(src6, protoTCP, sport, dport)},
		{"ipv6 ext headers wrong port", optsDefault,
			frame6(protoTCP, sport, 8000, optsExt(protoHopByHop, 0), optsExt(protoDstOpts, 0)), nil},
		// MAX_IPV6_EXT_HEADERS (8) extension headers are walked; one more is not counted.
		{"ipv6 8 ext headers", optsDefault, frame6(protoTCP, sport, dport, dstOptsChain(8)...), counted(src6, protoTCP, sport, dport)},
		{"ipv6 9 ext headers", optsDefault, frame6(protoTCP, sport, dport, dstOptsChain(9)...), nil},
		{"ipv6 12 ext headers", optsAll, frame6(protoTCP, sport, dport, dstOptsChain(12)...), nil},
		{"ipv6 unknown next header", optsAll, ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), proto: 59}.packet(make([]byte, 40))), nil},

		{"ipv4 first fragment", optsDefault, frame4(ipv4{proto: protoTCP, moreFragments: true}, sport, dport), counted(src4, protoTCP, sport, dport)},
		{"ipv4 first fragment wrong port", optsDefault, frame4(ipv4{proto: protoUDP, moreFragments: true}, sport, 53), nil},
		{"ipv4 non-first fragment", optsDefault,
			ether(etherTypeIPv4, ipv4{src: addr(src4), dst: addr(dstV4), proto: protoTCP, moreFragments: true, fragOffset: 185}.packet(fakePorts)),
			counted(src4, protoTCP, 0, 0)},
		{"ipv4 last fragment ignores port filter", optsDefault,
			ether(etherTypeIPv4, ipv4{src: addr(src4), dst: addr(dstV4), proto: protoUDP, fragOffset: 1}.packet(udp(1, 9999, nil))),
			counted(src4, protoUDP, 0, 0)},
		{"ipv4 non-first fragment with options and 1 byte", optsDefault,
			ether(etherTypeIPv4, ipv4{src: addr(src4), dst: addr(dstV4), proto: protoUDP, optWords: 3, fragOffset: 8191}.packet([]byte{0xff})),
			counted(src4, protoUDP, 0, 0)},
		{"ipv4 non-first fragment with only tcp", optsTCPOnly,
			ether(etherTypeIPv4, ipv4{src: addr(src4), dst: addr(dstV4), proto: protoUDP, fragOffset: 185}.packet(fakePorts)), nil},
		{"ipv4 non-first icmp fragment", optsAll,
			ether(etherTypeIPv4, ipv4{src: addr(src4), dst: addr(dstV4), proto: protoICMP, fragOffset: 185}.packet(fakePorts)), nil},

		{"ipv6 first fragment", optsDefault, frame6(protoUDP, sport, dport, fragExt(0, true)), counted(src6, protoUDP, sport, dport)},
		{"ipv6 first fragment wrong port", optsDefault, frame6(protoUDP, sport, 53, fragExt(0, true)), nil},
		{"ipv6 hop-by-hop + first fragment", optsDefault, frame6(protoTCP, sport, dport, optsExt(protoHopByHop, 0), fragExt(0, true)), counted(src6, protoTCP, sport, dport)},
		{"ipv6 non-first fragment", optsDefault,
			ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), ext: []ipv6Ext{fragExt(185, true)}, proto: protoTCP}.packet(fakePorts)),
			counted(src6, protoTCP, 0, 0)},
		{"ipv6 last fragment after hop-by-hop", optsDefault,
			ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), ext: []ipv6Ext{optsExt(protoHopByHop, 0), fragExt(1, false)}, proto: protoUDP}.packet([]byte{1})),
			counted(src6, protoUDP, 0, 0)},
		{"ipv6 non-first fragment with only udp", optsUDPOnly,
			ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), ext: []ipv6Ext{fragExt(185, true)}, proto: protoTCP}.packet(fakePorts)), nil},

		{"arp", optsAll, ether(etherTypeARP, arp(addr(src4), addr(dstV4))), nil},
		{"vlan arp", optsAll, ether(etherTypeARP, arp(addr(src4), addr(dstV4)), q), nil},
	}
	cases = append(cases, lengthCases()...)
	for words := 1; words <= 10; words++ {
		proto := []uint8{protoTCP, protoUDP}[words%2]
		cases = append(cases, runCase{
			name:  fmt.Sprintf("ipv4 options ihl %d", 5+words),
			opts:  optsDefault,
			frame: frame4(ipv4{proto: proto, optWords: words}, sport, dport),
			want:  counted(src4, proto, sport, dport),
		})
	}
	return cases
}

// loopbackIndex returns the ifindex the program sees under prog.Run
// without a context: the kernel runs the test on the receive queue of the
// loopback device of the caller's network namespace, so ctx->ingress_ifindex
// is lo's index (1), not 0.
func loopbackIndex(t *testing.T) uint32 {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatalf("find lo: %v", err)
	}
	return uint32(lo.Index)
}

// TestRunFrames runs crafted frames through the program with
// BPF_PROG_TEST_RUN and checks the exact flow each one is counted in.
func TestRunFrames(t *testing.T) {
	privtest.RequireRoot(t)
	ifindex := loopbackIndex(t)
	for _, tc := range runCases() {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDatapath(t, tc.opts)
			runFrame(t, d, tc.frame)
			flows := readFlows(t, d)
			st := readStats(t, d)
			if st.OverflowPackets != 0 || st.OverflowBytes != 0 || st.RingbufDrops != 0 {
				t.Errorf("stats = %+v, want no overflow or drops", st)
			}

			if tc.want == nil {
				if len(flows) != 0 || st.NewConnections != 0 {
					t.Fatalf("frame counted, want not: flows %+v, new connections %d", flows, st.NewConnections)
				}
				return
			}
			want := tc.want.key
			want.Ifindex = ifindex
			if len(flows) != 1 || st.NewConnections != 1 {
				t.Fatalf("got flows %+v, new connections %d; want exactly %+v", flows, st.NewConnections, want)
			}
			v, ok := flows[want]
			if !ok {
				t.Fatalf("got flows %+v, want key %+v", flows, want)
			}
			if v.Packets != 1 || v.Bytes != uint64(len(tc.frame)) {
				t.Errorf("packets, bytes = %d, %d; want 1, %d", v.Packets, v.Bytes, len(tc.frame))
			}
			if v.FirstSeenNs == 0 || v.FirstSeenNs != v.LastSeenNs {
				t.Errorf("first, last seen = %d, %d; want equal and non-zero", v.FirstSeenNs, v.LastSeenNs)
			}
			for k := range flows {
				checkKeyFields(t, k, tc.want)
			}
		})
	}
}

// checkKeyFields checks the fields of a key read back from the kernel.
func checkKeyFields(t *testing.T, k FlowKey, want *flowWant) {
	t.Helper()
	if got := k.Source(); got != want.addr {
		t.Errorf("Source() = %v, want %v", got, want.addr)
	}
	wantFamily := uint8(FamilyIPv6)
	if want.addr.Is4() {
		wantFamily = FamilyIPv4
		if k.SrcAddr[10] != 0xff || k.SrcAddr[11] != 0xff {
			t.Errorf("IPv4 source %x is not IPv4-mapped", k.SrcAddr)
		}
	}
	if k.Family != wantFamily {
		t.Errorf("Family = %d, want %d", k.Family, wantFamily)
	}
	if k.Proto != TCP && k.Proto != UDP {
		t.Errorf("Proto = %d, want 6 or 17", k.Proto)
	}
	if k.DstAddr != ([16]byte{}) || k.SrcPrefix != PrefixWhole || k.DstPrefix != PrefixWhole {
		t.Errorf("DstAddr, SrcPrefix, DstPrefix = %x, %d, %d; want zero: not kept, not aggregated by default", k.DstAddr, k.SrcPrefix, k.DstPrefix)
	}
}

// TestRunSameFlowAccumulates checks that packets of one connection add up
// in one entry, and that packets differing in any key field do not.
func TestRunSameFlowAccumulates(t *testing.T) {
	privtest.RequireRoot(t)
	d := loadDatapath(t, allPorts(testOptions()))
	ifindex := loopbackIndex(t)
	sizes := []int{0, 1, 100, 1400}
	var wantBytes uint64
	for _, n := range sizes {
		f := tcp4Frame(src4, sport, dport, n)
		runFrame(t, d, f)
		wantBytes += uint64(len(f))
	}
	// Same addresses and ports but another transport, source port,
	// destination port or source address: four more flows.
	runFrame(t, d, udp4Frame(src4, sport, dport, 0))
	runFrame(t, d, tcp4Frame(src4, sport+1, dport, 0))
	runFrame(t, d, tcp4Frame(src4, sport, dport+1, 0))
	runFrame(t, d, tcp4Frame("10.1.2.4", sport, dport, 0))
	// The IPv6 address ::ffff:10.1.2.3 is another flow than IPv4 10.1.2.3.
	runFrame(t, d, tcp6Frame("::ffff:"+src4, sport, dport, 0))

	flows := readFlows(t, d)
	if len(flows) != 6 {
		t.Fatalf("got %d flows, want 6: %+v", len(flows), flows)
	}
	k := wantKey(src4, protoTCP, sport, dport)
	k.Ifindex = ifindex
	v := flows[k]
	if v.Packets != uint64(len(sizes)) || v.Bytes != wantBytes {
		t.Errorf("flow %+v = %+v, want %d packets, %d bytes", k, v, len(sizes), wantBytes)
	}
	if v.LastSeenNs < v.FirstSeenNs {
		t.Errorf("last seen %d before first seen %d", v.LastSeenNs, v.FirstSeenNs)
	}
	if st := readStats(t, d); st.NewConnections != 6 {
		t.Errorf("NewConnections = %d, want 6", st.NewConnections)
	}
}
