//go:build linux

package datapath

import "fmt"

// The length fields the program checks, as the kernel's receive path does
// (bpf/xdpflow.c, "Length checks"): frames it counts and frames it must
// not count. They are part of runCases, so TestRunFrames runs them,
// TestRefParse checks the reference parser on them and FuzzParser starts
// from them.

// Offsets in an untagged frame without IPv4 options or IPv6 extension
// headers.
const (
	ipv4TotalLenAt   = ethHdrLen + 2
	ipv6PayloadLenAt = ethHdrLen + 4
	l4AtV4           = ethHdrLen + ipv4HdrLen
	l4AtV6           = ethHdrLen + ipv6HdrLen
	// Within the transport header.
	tcpDataOffsetAt = 12
	udpLengthAt     = 4
)

// minFrameLen is the shortest Ethernet frame without its FCS: NICs pad
// shorter ones with zeros, after the IP packet.
const minFrameLen = 60

// setUint16 returns a copy of frame with the big-endian v at off.
func setUint16(frame []byte, off int, v uint16) []byte {
	out := append([]byte(nil), frame...)
	be.PutUint16(out[off:], v)
	return out
}

// withDataOffset returns a copy of frame whose TCP header at l4 has a
// data offset of words.
func withDataOffset(frame []byte, l4 int, words uint8) []byte {
	return setByte(frame, l4+tcpDataOffsetAt, words<<4)
}

// padded returns frame followed by n zero bytes of link-layer padding.
func padded(frame []byte, n int) []byte {
	return append(append([]byte(nil), frame...), make([]byte, n)...)
}

// paddedToMin returns frame padded to the Ethernet minimum, as sent.
func paddedToMin(frame []byte) []byte {
	return padded(frame, max(0, minFrameLen-len(frame)))
}

// jumboExt returns a hop-by-hop header holding a Jumbo Payload option
// (RFC 2675) of length.
func jumboExt(length uint32) ipv6Ext {
	return ipv6Ext{proto: protoHopByHop, build: func(next uint8) []byte {
		b := make([]byte, 8)
		b[0] = next
		b[2] = 0xc2 // Jumbo Payload
		b[3] = 4
		be.PutUint32(b[4:], length)
		return b
	}}
}

// short4 is an untagged IPv4 packet from src4 carrying a TCP or UDP
// header without payload: 28 (UDP) or 40 (TCP) bytes, in a frame shorter
// than the Ethernet minimum.
func short4(hdr ipv4, tags ...vlan) []byte {
	hdr.src, hdr.dst = addr(src4), addr(dstV4)
	return ether(etherTypeIPv4, hdr.packet(l4(hdr.proto, sport, dport, 0)), tags...)
}

// udp4Payload is an untagged IPv4/UDP frame to dport with payloadLen
// bytes of payload.
func udp4Payload(hdr ipv4, payloadLen int) []byte {
	hdr.src, hdr.dst, hdr.proto = addr(src4), addr(dstV4), protoUDP
	return ether(etherTypeIPv4, hdr.packet(udp(sport, dport, make([]byte, payloadLen))))
}

// fragment6 is an IPv6 frame whose fragment header at offset (8-byte
// units) carries proto's header with 16 bytes of payload.
func fragment6(proto uint8, offset uint16, more bool) []byte {
	return frame6(proto, sport, dport, fragExt(offset, more))
}

// lengthCases are the table cases of the length checks.
func lengthCases() []runCase {
	q := vlan{etherTypeVLAN, 100}
	ad := vlan{etherTypeQinQ, 200}
	tcp4, udp4 := ipv4{proto: protoTCP}, ipv4{proto: protoUDP}
	tcpV4, udpV4 := counted(src4, protoTCP, sport, dport), counted(src4, protoUDP, sport, dport)
	tcpV6, udpV6 := counted(src6, protoTCP, sport, dport), counted(src6, protoUDP, sport, dport)
	probe := udp4Payload(udp4, 20) // 62 bytes, as the probe sent it
	ipLen := func(frame []byte) uint16 { return uint16(len(frame) - ethHdrLen) }
	payloadLen6 := func(frame []byte) uint16 { return uint16(len(frame) - l4AtV6) }
	tcp6 := frame6(protoTCP, sport, dport)          // 36-byte TCP segment
	udp6 := frame6(protoUDP, sport, dport)          // 24-byte UDP datagram
	frag4 := ipv4{proto: protoUDP, fragOffset: 185} // non-first
	first4 := ipv4{proto: protoUDP, moreFragments: true}

	cases := []runCase{
		// IPv4 total length.
		{"ipv4 total length 1000 in a 62-byte frame", optsAll, setUint16(probe, ipv4TotalLenAt, 1000), nil},
		{"ipv4 total length one byte past the frame", optsAll, setUint16(probe, ipv4TotalLenAt, ipLen(probe)+1), nil},
		{"ipv4 total length 0", optsAll, setUint16(probe, ipv4TotalLenAt, 0), nil},
		{"ipv4 total length 19, below the header", optsAll, setUint16(probe, ipv4TotalLenAt, 19), nil},
		{"ipv4 options, total length below the header", optsAll,
			setUint16(frame4(ipv4{proto: protoTCP, optWords: 3}, sport, dport), ipv4TotalLenAt, 28), nil},
		{"ipv4 total length of the header alone", optsAll, setUint16(probe, ipv4TotalLenAt, ipv4HdrLen), nil},
		{"ipv4 non-first fragment, total length past the frame", optsAll,
			setUint16(ether(etherTypeIPv4, frag4.withAddrs().packet(make([]byte, 16))), ipv4TotalLenAt, 37), nil},

		// Ethernet padding after the IP packet: counted, padding included.
		{"padding after a 28-byte ipv4 udp packet", optsAll, paddedToMin(short4(udp4)), udpV4},
		{"padding after a 40-byte ipv4 tcp packet", optsAll, paddedToMin(short4(tcp4)), tcpV4},
		{"padding after a short ipv4 packet with options", optsAll, paddedToMin(short4(ipv4{proto: protoUDP, optWords: 1})), udpV4},
		{"vlan, padding after a 28-byte ipv4 udp packet", optsAll, paddedToMin(short4(udp4, q)), udpV4},
		{"qinq, padding after a 40-byte ipv4 tcp packet", optsAll, padded(short4(tcp4, ad, q), 10), tcpV4},
		{"ipv6 udp, 6 bytes after the packet", optsAll, padded(udp6, 6), udpV6},
		{"ipv4 non-first fragment, padding after it", optsAll,
			paddedToMin(ether(etherTypeIPv4, frag4.withAddrs().packet([]byte{1}))), counted(src4, protoUDP, 0, 0)},

		// IPv6 payload length.
		{"ipv6 payload length one byte past the frame", optsAll, setUint16(tcp6, ipv6PayloadLenAt, payloadLen6(tcp6)+1), nil},
		{"ipv6 payload length 0", optsAll, setUint16(tcp6, ipv6PayloadLenAt, 0), nil},
		{"ipv6 jumbogram: payload length 0, jumbo option", optsAll,
			setUint16(frame6(protoUDP, sport, dport, jumboExt(65536+32)), ipv6PayloadLenAt, 0), nil},
		{"ipv6 payload length ending in the tcp header", optsAll, setUint16(tcp6, ipv6PayloadLenAt, tcpHdrLen-1), nil},
		{"ipv6 payload length ending in an extension header", optsAll,
			setUint16(frame6(protoTCP, sport, dport, optsExt(protoDstOpts, 1)), ipv6PayloadLenAt, 8), nil},
		{"ipv6 non-first fragment, payload length ending in the fragment header", optsAll,
			setUint16(fragment6(protoUDP, 185, true), ipv6PayloadLenAt, fragHdrLen-1), nil},
		{"ipv6 non-first fragment, payload length of the fragment header alone", optsAll,
			setUint16(fragment6(protoUDP, 185, true), ipv6PayloadLenAt, fragHdrLen), counted(src6, protoUDP, 0, 0)},

		// TCP data offset: at most the 36-byte segment (frame4 and frame6).
		{"ipv4 tcp data offset 9: header up to the end", optsAll, withDataOffset(frame4(tcp4, sport, dport), l4AtV4, 9), tcpV4},
		{"ipv4 tcp data offset 10: past the packet", optsAll, withDataOffset(frame4(tcp4, sport, dport), l4AtV4, 10), nil},
		{"ipv4 tcp data offset 15: past the packet", optsAll, withDataOffset(frame4(tcp4, sport, dport), l4AtV4, 15), nil},
		{"ipv4 tcp data offset 6: into the padding", optsAll, withDataOffset(paddedToMin(short4(tcp4)), l4AtV4, 6), nil},
		{"ipv6 tcp data offset 9: header up to the end", optsAll, withDataOffset(tcp6, l4AtV6, 9), tcpV6},
		{"ipv6 tcp data offset 10: past the packet", optsAll, withDataOffset(tcp6, l4AtV6, 10), nil},
		{"ipv4 first fragment, tcp data offset 6", optsAll,
			withDataOffset(frame4(ipv4{proto: protoTCP, moreFragments: true}, sport, dport), l4AtV4, 6), tcpV4},
		{"ipv4 first fragment, tcp header past the fragment", optsAll,
			withDataOffset(frame4(ipv4{proto: protoTCP, moreFragments: true}, sport, dport), l4AtV4, 10), nil},

		// UDP length: at least 8, at most the IP packet unless a first fragment.
		{"ipv4 udp length 8 of 24 bytes: shorter than the packet", optsAll, setUint16(frame4(udp4, sport, dport), l4AtV4+udpLengthAt, 8), udpV4},
		{"ipv4 udp length 24: up to the end", optsAll, setUint16(frame4(udp4, sport, dport), l4AtV4+udpLengthAt, 24), udpV4},
		{"ipv4 udp length 25: past the packet", optsAll, setUint16(frame4(udp4, sport, dport), l4AtV4+udpLengthAt, 25), nil},
		{"ipv4 udp length 9: into the padding", optsAll, setUint16(paddedToMin(short4(udp4)), l4AtV4+udpLengthAt, 9), nil},
		{"ipv6 udp length 0: the rest of the payload", optsAll, setUint16(udp6, l4AtV6+udpLengthAt, 0), udpV6},
		{"ipv6 udp length 25: past the packet", optsAll, setUint16(udp6, l4AtV6+udpLengthAt, 25), nil},
		{"ipv4 first fragment, udp length of the whole datagram", optsAll,
			setUint16(frame4(first4, sport, dport), l4AtV4+udpLengthAt, 1480), udpV4},
		{"ipv4 first fragment, udp length 7", optsAll, setUint16(frame4(first4, sport, dport), l4AtV4+udpLengthAt, 7), nil},
		{"ipv6 first fragment, udp length of the whole datagram", optsAll,
			setUint16(fragment6(protoUDP, 0, true), l4AtV6+fragHdrLen+udpLengthAt, 1448), udpV6},
		{"ipv6 atomic fragment, udp length past the packet", optsAll,
			setUint16(fragment6(protoUDP, 0, false), l4AtV6+fragHdrLen+udpLengthAt, 25), nil},
		{"ipv4 non-first fragment, no udp header to check", optsAll,
			ether(etherTypeIPv4, frag4.withAddrs().packet(udp(sport, dport, nil)[:4])), counted(src4, protoUDP, 0, 0)},
	}
	for words := range uint8(5) {
		cases = append(cases,
			runCase{fmt.Sprintf("ipv4 tcp data offset %d", words), optsAll, withDataOffset(frame4(tcp4, sport, dport), l4AtV4, words), nil},
			runCase{fmt.Sprintf("ipv6 tcp data offset %d", words), optsAll, withDataOffset(tcp6, l4AtV6, words), nil})
	}
	for n := range uint16(udpHdrLen) {
		cases = append(cases,
			runCase{fmt.Sprintf("ipv4 udp length %d", n), optsAll, setUint16(frame4(udp4, sport, dport), l4AtV4+udpLengthAt, n), nil})
		if n > 0 {
			cases = append(cases,
				runCase{fmt.Sprintf("ipv6 udp length %d", n), optsAll, setUint16(udp6, l4AtV6+udpLengthAt, n), nil})
		}
	}
	return cases
}

// withAddrs returns h from src4 to dstV4.
func (h ipv4) withAddrs() ipv4 {
	h.src, h.dst = addr(src4), addr(dstV4)
	return h
}
