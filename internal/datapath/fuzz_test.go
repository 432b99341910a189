//go:build linux

package datapath

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
	"golang.org/x/sys/unix"
)

// fuzzMaxFrame is the longest input FuzzParser runs. BPF_PROG_TEST_RUN
// puts at most PAGE_SIZE - XDP_PACKET_HEADROOM - sizeof(skb_shared_info)
// bytes (3520 on x86-64 with 4 KiB pages and 17 fragments) in the linear
// buffer and the rest in fragments, which a program loaded without
// xdp.frags never sees on a real interface (its driver, or generic XDP,
// gives it linear frames only) and whose bytes it does not count. 2048
// stays linear whatever the kernel's fragment limit, and holds every
// standard Ethernet frame with two VLAN tags.
const fuzzMaxFrame = 2048

// fuzzOptions count every destination port of both transports, so the
// only thing deciding whether a frame is counted is the parser. Triggers
// are rare: the fuzzer makes millions of new connections.
func fuzzOptions() Options {
	return Options{
		Protocols:              []Protocol{TCP, UDP},
		NewConnectionsPerEvent: 1 << 20,
		MaxConnections:         64,
		Transmit:               true,
	}
}

// FuzzParser runs the XDP program and the TC egress program on arbitrary
// frames with BPF_PROG_TEST_RUN and checks them against refParse, a Go
// parser written from the rules in the README and the parse comments, not
// from the C code: the programs must always return XDP_PASS and
// TC_ACT_UNSPEC, and the flow table must afterwards hold nothing when
// refParse says the frame is not counted, else exactly refParse's key
// (its mirror, refTransmit, for the egress program) with one packet of
// len(frame) bytes.
//
// One datapath serves every input: the table is empty before each run,
// and the key a run inserted is evicted after it. Inputs shorter than an
// Ethernet header are rejected by the kernel (EINVAL) before the program
// runs; they must not count anything either.
//
// As a plain test it runs the seed corpus: every frame of the table tests
// (TestRunFrames, TestRunTruncatedFrames with every prefix) and a few
// more. `make fuzz` fuzzes it.
func FuzzParser(f *testing.F) {
	privtest.RequireRoot(f)
	for _, frame := range fuzzSeeds() {
		f.Add(frame)
	}
	d := loadDatapath(f, fuzzOptions())
	ifindex := fuzzLoopbackIndex(f)
	var tbl, evicted FlowTable

	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > fuzzMaxFrame {
			t.Skipf("%d-byte frame is longer than %d (see fuzzMaxFrame)", len(frame), fuzzMaxFrame)
		}
		fuzzRun(t, d, Receive, frame, ifindex, &tbl, &evicted)
		fuzzRun(t, d, Transmit, frame, ifindex, &tbl, &evicted)
	})
}

// fuzzRun is one input of FuzzParser run through the program of direction
// dir, leaving the table empty.
func fuzzRun(t *testing.T, d *Datapath, dir Direction, frame []byte, ifindex uint32, tbl, evicted *FlowTable) {
	t.Helper()
	prog, pass := d.Program(), uint32(xdpPass)
	if dir == Transmit {
		prog, pass = d.EgressProgram(), tcActUnspec
	}
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame})
	switch {
	case len(frame) < ethHdrLen && errors.Is(err, unix.EINVAL):
		// Rejected by the kernel before the program ran.
	case dir == Transmit && len(frame) < ethHdrLen+ipv6HdrLen && errors.Is(err, unix.EINVAL):
		// Likewise: an skb needs the network header its EtherType names.
	case err != nil:
		t.Fatalf("run %s program on %d-byte frame %x: %v", dir, len(frame), frame, err)
	case ret != pass:
		t.Fatalf("%s program returned %#x on %d-byte frame %x, want %#x", dir, ret, len(frame), frame, pass)
	}
	ran := err == nil

	if err := d.ReadFlows(tbl); err != nil {
		t.Fatalf("ReadFlows: %v", err)
	}
	want, counted := refParseAll(frame)
	if dir == Transmit {
		want = refTransmit(want)
	}
	counted = counted && ran
	want.Ifindex = ifindex
	want = refGroup(want, fuzzOptions())
	// Leave the table empty for the next input, whatever happens.
	if err := d.Evict(tbl.Keys, evicted); err != nil {
		t.Fatalf("Evict: %v", err)
	}
	evicted.Reset()

	if !counted {
		if tbl.Len() != 0 {
			t.Fatalf("%s: frame %x counted in %+v = %+v; the reference parser counts nothing", dir, frame, tbl.Keys, tbl.Values)
		}
		return
	}
	if tbl.Len() != 1 || tbl.Keys[0] != want {
		t.Fatalf("%s: frame %x counted in %+v; the reference parser counts it in %+v", dir, frame, tbl.Keys, want)
	}
	if v := tbl.Values[0]; v.Packets != 1 || v.Bytes != uint64(len(frame)) {
		t.Fatalf("%s: frame %x: %d packets, %d bytes; want 1 packet of %d bytes", dir, frame, v.Packets, v.Bytes, len(frame))
	}
}

// refTransmit is the key of refParseAll for a frame this host sends: the
// sides named as a received frame names them (struct flow_key), the
// packet's destination as the source, and the direction transmit.
func refTransmit(k FlowKey) FlowKey {
	k.SrcAddr, k.DstAddr = k.DstAddr, k.SrcAddr
	k.SrcPort, k.DstPort = k.DstPort, k.SrcPort
	k.Direction = Transmit
	return k
}

// fuzzLoopbackIndex is lo's ifindex, what the program sees as
// ctx->ingress_ifindex under BPF_PROG_TEST_RUN (see loopbackIndex).
func fuzzLoopbackIndex(tb testing.TB) uint32 {
	tb.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		tb.Fatalf("find lo: %v", err)
	}
	return uint32(lo.Index)
}

// fuzzSeeds returns the seed corpus.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	for _, tc := range runCases() {
		seeds = append(seeds, tc.frame)
	}
	// The frames of TestRunTruncatedFrames, with every prefix.
	for _, tc := range truncationCases() {
		for n := 0; n <= len(tc.frame); n++ {
			seeds = append(seeds, tc.frame[:n])
		}
	}
	// A few more: a full-size frame, the first bytes that are not a
	// fragment offset, fragments of other transports, extension headers
	// after a non-first fragment, a long extension header, and
	// AH-only chains at the limit.
	seeds = append(seeds,
		tcp4Frame(src4, sport, dport, 1460),
		ether(etherTypeIPv4, ipv4{src: addr(src4), dst: addr(dstV4), proto: protoUDP, moreFragments: true}.packet(udp(1, 2, nil))),
		ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), ext: []ipv6Ext{fragExt(1, true)}, proto: protoICMPv6}.packet(make([]byte, 8))),
		ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), ext: []ipv6Ext{fragExt(1, true), optsExt(protoDstOpts, 0)}, proto: protoTCP}.packet(make([]byte, 8))),
		frame6(protoUDP, sport, dport, optsExt(protoHopByHop, 200)),
		frame6(protoTCP, sport, dport, ahExt(0), ahExt(1), ahExt(2), ahExt(3), ahExt(4), ahExt(5), ahExt(6), ahExt(7)),
		frame6(protoTCP, sport, dport, ahExt(0), ahExt(1), ahExt(2), ahExt(3), ahExt(4), ahExt(5), ahExt(6), ahExt(7), ahExt(8)),
		ether(etherTypeVLAN, nil),
		make([]byte, ethHdrLen),
		make([]byte, ethHdrLen-1),
		nil,
	)
	return seeds
}

// refParse is the reference parser: the key a frame is counted in when
// every destination port and both transports are counted, without the
// ifindex, and whether it is counted at all. It follows the documented
// rules:
//
//   - Ethernet II, then at most two VLAN tags (TPID 0x8100 or 0x88a8,
//     in any order); a third tag is not parsed, so the frame is not IP.
//   - IPv4: version 4, IHL at least 5, a total length of at least the
//     header (options too) and at most the bytes after the L2 header;
//     TCP or UDP. A non-first fragment (offset not 0) is counted with
//     ports 0/0. Otherwise the transport header follows the IP header.
//   - IPv6: version 6, the 40-byte header, a payload length that fits in
//     the bytes after it, then at most 8 extension headers (hop-by-hop,
//     routing, destination options: (len+1)*8 bytes; AH: (len+2)*4
//     bytes; fragment: 8 bytes), each whole in the payload, before TCP or
//     UDP. A fragment header with a non-zero offset ends the walk: the
//     fragment is counted with ports 0/0 if its next header is TCP or
//     UDP. A payload length of 0 (a jumbogram) leaves room for nothing.
//   - TCP: the data offset is at least 5 words and the header, options
//     too, is in the IP packet (a first fragment included).
//   - UDP: the 8-byte header is in the IP packet; the length is at least
//     8 and, unless the packet is a first fragment (IPv4 MF, or an IPv6
//     fragment header with M set, at offset 0), at most the bytes from
//     the UDP header to the end of the IP packet. IPv6 also takes a
//     length of 0 (the rest of the payload, as the kernel reads it).
//   - Bytes after the end of the IP packet (Ethernet padding) are
//     ignored by the parse and counted in the frame's bytes.
//   - The source address is stored IPv4-mapped for IPv4; ports are in
//     host order; the family is 4 or 6.
//
// Checksums are not checked.
func refParse(frame []byte) (FlowKey, bool) {
	k, ok := refParseAll(frame)
	return refGroup(k, Options{}), ok
}

// refParseAll is refParse before grouping: the key with every field the
// frame gives, the destination address included.
func refParseAll(frame []byte) (FlowKey, bool) {
	const (
		ethLen        = 14
		tpid8021Q     = 0x8100
		tpid8021AD    = 0x88a8
		etherIPv4     = 0x0800
		etherIPv6     = 0x86dd
		maxVLANTags   = 2
		maxExtHeaders = 8
	)
	if len(frame) < ethLen {
		return FlowKey{}, false
	}
	etherType := uint16(frame[12])<<8 | uint16(frame[13])
	pos := ethLen
	for range maxVLANTags {
		if etherType != tpid8021Q && etherType != tpid8021AD {
			break
		}
		if len(frame) < pos+4 {
			return FlowKey{}, false
		}
		etherType = uint16(frame[pos+2])<<8 | uint16(frame[pos+3])
		pos += 4
	}
	l3 := frame[pos:]
	var k FlowKey
	switch etherType {
	case etherIPv4:
		if len(l3) < 20 || l3[0]>>4 != 4 {
			return FlowKey{}, false
		}
		ihl := int(l3[0] & 0x0f)
		totalLen := int(l3[2])<<8 | int(l3[3])
		if ihl < 5 || totalLen < 4*ihl || totalLen > len(l3) {
			return FlowKey{}, false
		}
		packet := l3[:totalLen]
		proto := l3[9]
		if proto != 6 && proto != 17 {
			return FlowKey{}, false
		}
		k.Family = FamilyIPv4
		k.Proto = Protocol(proto)
		k.SrcAddr = netip.AddrFrom4([4]byte(l3[12:16])).As16()
		k.DstAddr = netip.AddrFrom4([4]byte(l3[16:20])).As16()
		flags := uint16(l3[6])<<8 | uint16(l3[7])
		if flags&0x1fff != 0 {
			return k, true
		}
		firstFragment := flags&0x2000 != 0
		return refPorts(k, packet[4*ihl:], firstFragment)
	case etherIPv6:
		if len(l3) < 40 || l3[0]>>4 != 6 {
			return FlowKey{}, false
		}
		payloadLen := int(l3[4])<<8 | int(l3[5])
		if 40+payloadLen > len(l3) {
			return FlowKey{}, false
		}
		k.Family = FamilyIPv6
		k.SrcAddr = [16]byte(l3[8:24])
		k.DstAddr = [16]byte(l3[24:40])
		next := l3[6]
		rest := l3[40 : 40+payloadLen]
		firstFragment := false
		for range maxExtHeaders + 1 {
			var hdrLen int
			switch next {
			case 6, 17:
				k.Proto = Protocol(next)
				return refPorts(k, rest, firstFragment)
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(rest) < 2 {
					return FlowKey{}, false
				}
				hdrLen = (int(rest[1]) + 1) * 8
			case 51: // AH
				if len(rest) < 2 {
					return FlowKey{}, false
				}
				hdrLen = (int(rest[1]) + 2) * 4
			case 44: // fragment
				hdrLen = 8
				if len(rest) < hdrLen {
					return FlowKey{}, false
				}
				fragOff := uint16(rest[2])<<8 | uint16(rest[3])
				if fragOff>>3 != 0 {
					if rest[0] != 6 && rest[0] != 17 {
						return FlowKey{}, false
					}
					k.Proto = Protocol(rest[0])
					return k, true
				}
				firstFragment = fragOff&1 != 0
			default:
				return FlowKey{}, false
			}
			if len(rest) < hdrLen {
				return FlowKey{}, false
			}
			next = rest[0]
			rest = rest[hdrLen:]
		}
		return FlowKey{}, false // more than maxExtHeaders
	}
	return FlowKey{}, false
}

// refPorts completes k with the ports of the TCP or UDP header at the
// start of l4, the rest of the IP packet, if the header is valid.
func refPorts(k FlowKey, l4 []byte, firstFragment bool) (FlowKey, bool) {
	switch {
	case k.Proto == TCP:
		if len(l4) < 20 {
			return FlowKey{}, false
		}
		dataOffset := int(l4[12] >> 4)
		if dataOffset < 5 || 4*dataOffset > len(l4) {
			return FlowKey{}, false
		}
	default: // UDP
		if len(l4) < 8 {
			return FlowKey{}, false
		}
		length := int(l4[4])<<8 | int(l4[5])
		switch {
		case length == 0 && k.Family == FamilyIPv6:
			// The rest of the payload.
		case length < 8:
			return FlowKey{}, false
		case !firstFragment && length > len(l4):
			return FlowKey{}, false
		}
	}
	k.SrcPort = uint16(l4[0])<<8 | uint16(l4[1])
	k.DstPort = uint16(l4[2])<<8 | uint16(l4[3])
	return k, true
}

// TestRefParse checks the reference parser itself on the table cases
// that count every port: a reference that agreed with a broken program
// because it had the same bug would make FuzzParser useless.
func TestRefParse(t *testing.T) {
	for _, tc := range runCases() {
		if len(tc.opts.Ports) != 0 || len(tc.opts.Protocols) == 1 {
			continue // filtered: the reference counts every port and both transports
		}
		got, ok := refParse(tc.frame)
		if tc.want == nil {
			if ok {
				t.Errorf("%s: reference counts it in %+v, want not counted", tc.name, got)
			}
			continue
		}
		if !ok || got != tc.want.key {
			t.Errorf("%s: reference says %+v (counted %v), want %+v", tc.name, got, ok, tc.want.key)
		}
	}
	// Frames whose port filter is the only reason they are not counted
	// in the table are counted with every port.
	if k, ok := refParse(frame4(ipv4{proto: protoTCP}, sport, 8081)); !ok || k != wantKey(src4, protoTCP, sport, 8081) {
		t.Errorf("ipv4 tcp to 8081: %+v (counted %v)", k, ok)
	}
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"13 bytes", make([]byte, 13)},
		{"three vlan tags", frame4(ipv4{proto: protoTCP}, sport, dport, vlan{etherTypeQinQ, 1}, vlan{etherTypeVLAN, 2}, vlan{etherTypeVLAN, 3})},
		{"tcp header 19 bytes", frame4(ipv4{proto: protoTCP}, sport, dport)[:ethHdrLen+ipv4HdrLen+tcpHdrLen-1]},
		{"udp header 7 bytes", frame4(ipv4{proto: protoUDP}, sport, dport)[:ethHdrLen+ipv4HdrLen+udpHdrLen-1]},
		{"9 extension headers", frame6(protoTCP, sport, dport, dstOptsChain(9)...)},
		{"ipv6 non-first fragment of icmpv6", ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), ext: []ipv6Ext{fragExt(1, true)}, proto: protoICMPv6}.packet(make([]byte, 8)))},
	} {
		if k, ok := refParse(tc.frame); ok {
			t.Errorf("%s: reference counts it in %+v, want not counted", tc.name, k)
		}
	}
}
