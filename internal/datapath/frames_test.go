//go:build linux

package datapath

// A small hand-written frame builder for the BPF_PROG_TEST_RUN tests.
// Frames are built inside out: a transport header and payload, wrapped in
// an IP header, wrapped in an Ethernet header with optional VLAN tags.
// Checksums are left zero: XDP runs before any checksum validation and
// the program never reads them. Length fields are set right.

import (
	"encoding/binary"
	"net/netip"
)

// EtherTypes.
const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeVLAN = 0x8100 // 802.1Q
	etherTypeQinQ = 0x88A8 // 802.1ad service tag
	etherTypeIPv6 = 0x86DD
)

// IP protocol numbers, including the IPv6 extension headers.
const (
	protoHopByHop = 0
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoICMPv6   = 58
	protoDstOpts  = 60
)

// Fixed header sizes.
const (
	ethHdrLen  = 14
	vlanTagLen = 4
	ipv4HdrLen = 20
	ipv6HdrLen = 40
	tcpHdrLen  = 20
	udpHdrLen  = 8
	fragHdrLen = 8
)

// xdpPass is the XDP_PASS verdict every run must return.
const xdpPass = 2

var be = binary.BigEndian

// vlan is one VLAN tag: the TPID announcing it and its VLAN ID.
type vlan struct {
	tpid uint16
	id   uint16
}

// ether returns an Ethernet frame carrying payload of type etherType
// behind tags, outermost first.
func ether(etherType uint16, payload []byte, tags ...vlan) []byte {
	b := make([]byte, 0, ethHdrLen+vlanTagLen*len(tags)+len(payload))
	b = append(b, 0x02, 0, 0, 0, 0, 0x01) // destination MAC
	b = append(b, 0x02, 0, 0, 0, 0, 0x02) // source MAC
	for _, t := range tags {
		b = be.AppendUint16(b, t.tpid)
		b = be.AppendUint16(b, t.id&0x0fff) // PCP 0, DEI 0
	}
	b = be.AppendUint16(b, etherType)
	return append(b, payload...)
}

// tcp returns a TCP header without options followed by payload.
func tcp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, tcpHdrLen, tcpHdrLen+len(payload))
	be.PutUint16(b[0:], sport)
	be.PutUint16(b[2:], dport)
	be.PutUint32(b[4:], 1) // sequence number
	b[12] = 5 << 4         // data offset: 5 words
	b[13] = 0x02           // SYN
	be.PutUint16(b[14:], 65535)
	return append(b, payload...)
}

// udp returns a UDP header followed by payload.
func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, udpHdrLen, udpHdrLen+len(payload))
	be.PutUint16(b[0:], sport)
	be.PutUint16(b[2:], dport)
	be.PutUint16(b[4:], uint16(udpHdrLen+len(payload)))
	return append(b, payload...)
}

// l4 returns a TCP or UDP segment (by proto) of payloadLen zero bytes.
func l4(proto uint8, sport, dport uint16, payloadLen int) []byte {
	payload := make([]byte, payloadLen)
	if proto == protoTCP {
		return tcp(sport, dport, payload)
	}
	return udp(sport, dport, payload)
}

// ipv4 describes an IPv4 header.
type ipv4 struct {
	src, dst netip.Addr
	proto    uint8
	// optWords is the number of 4-byte option words: ihl = 5 + optWords.
	optWords int
	// moreFragments sets MF; fragOffset is the offset in 8-byte units.
	moreFragments bool
	fragOffset    uint16
}

// packet returns the header followed by payload.
func (h ipv4) packet(payload []byte) []byte {
	hdrLen := ipv4HdrLen + 4*h.optWords
	b := make([]byte, hdrLen, hdrLen+len(payload))
	b[0] = 4<<4 | byte(hdrLen/4)
	be.PutUint16(b[2:], uint16(hdrLen+len(payload)))
	be.PutUint16(b[4:], 0x1234) // identification
	frag := h.fragOffset & 0x1fff
	if h.moreFragments {
		frag |= 0x2000
	}
	be.PutUint16(b[6:], frag)
	b[8] = 64 // TTL
	b[9] = h.proto
	src, dst := h.src.As4(), h.dst.As4()
	copy(b[12:], src[:])
	copy(b[16:], dst[:])
	for i := ipv4HdrLen; i < hdrLen; i++ {
		b[i] = 1 // NOP options
	}
	return append(b, payload...)
}

// ipv6Ext is one IPv6 extension header.
type ipv6Ext struct {
	// proto is the header's number, written in the preceding header.
	proto uint8
	// build returns the header's bytes given the number of the next one.
	build func(next uint8) []byte
}

// optsExt returns a hop-by-hop, routing or destination options header of
// (units+1)*8 bytes (Hdr Ext Len = units), filled with a PadN option.
func optsExt(proto uint8, units int) ipv6Ext {
	return ipv6Ext{proto: proto, build: func(next uint8) []byte {
		b := make([]byte, (units+1)*8)
		b[0] = next
		b[1] = byte(units)
		b[2] = 1 // PadN
		b[3] = byte(len(b) - 4)
		return b
	}}
}

// fragExt returns a fragment header at offset (8-byte units).
func fragExt(offset uint16, more bool) ipv6Ext {
	return ipv6Ext{proto: protoFragment, build: func(next uint8) []byte {
		b := make([]byte, fragHdrLen)
		b[0] = next
		off := offset << 3
		if more {
			off |= 1
		}
		be.PutUint16(b[2:], off)
		be.PutUint32(b[4:], 0xabcdef)
		return b
	}}
}

// ahExt returns an authentication header of (payloadLen+2)*4 bytes.
func ahExt(payloadLen int) ipv6Ext {
	return ipv6Ext{proto: protoAH, build: func(next uint8) []byte {
		b := make([]byte, (payloadLen+2)*4)
		b[0] = next
		b[1] = byte(payloadLen)
		be.PutUint32(b[4:], 0x100) // SPI
		return b
	}}
}

// ipv6 describes an IPv6 header and its extension headers.
type ipv6 struct {
	src, dst netip.Addr
	// ext are the extension headers in order; proto follows the last.
	ext   []ipv6Ext
	proto uint8
}

// packet returns the header, the extension headers, then payload.
func (h ipv6) packet(payload []byte) []byte {
	var exts []byte
	for i, e := range h.ext {
		next := h.proto
		if i+1 < len(h.ext) {
			next = h.ext[i+1].proto
		}
		exts = append(exts, e.build(next)...)
	}
	b := make([]byte, ipv6HdrLen, ipv6HdrLen+len(exts)+len(payload))
	b[0] = 6 << 4
	be.PutUint16(b[4:], uint16(len(exts)+len(payload)))
	b[6] = h.proto
	if len(h.ext) > 0 {
		b[6] = h.ext[0].proto
	}
	b[7] = 64 // hop limit
	src, dst := h.src.As16(), h.dst.As16()
	copy(b[8:], src[:])
	copy(b[24:], dst[:])
	b = append(b, exts...)
	return append(b, payload...)
}

// arp returns an ARP request for IPv4.
func arp(sender, target netip.Addr) []byte {
	b := make([]byte, 28)
	be.PutUint16(b[0:], 1) // Ethernet
	be.PutUint16(b[2:], etherTypeIPv4)
	b[4], b[5] = 6, 4
	be.PutUint16(b[6:], 1) // request
	copy(b[8:], []byte{0x02, 0, 0, 0, 0, 0x02})
	s, t := sender.As4(), target.As4()
	copy(b[14:], s[:])
	copy(b[24:], t[:])
	return b
}

// icmpEcho returns an ICMP (or ICMPv6, by typ) echo request.
func icmpEcho(typ uint8, payloadLen int) []byte {
	b := make([]byte, 8+payloadLen)
	b[0] = typ
	be.PutUint16(b[4:], 1) // identifier
	be.PutUint16(b[6:], 1) // sequence
	return b
}

// tcp4Frame and friends build the common frames of the tests.
func tcp4Frame(src string, sport, dport uint16, payloadLen int) []byte {
	return ether(etherTypeIPv4, ipv4{src: addr(src), dst: addr(dstV4), proto: protoTCP}.packet(l4(protoTCP, sport, dport, payloadLen)))
}

func udp4Frame(src string, sport, dport uint16, payloadLen int) []byte {
	return ether(etherTypeIPv4, ipv4{src: addr(src), dst: addr(dstV4), proto: protoUDP}.packet(l4(protoUDP, sport, dport, payloadLen)))
}

func tcp6Frame(src string, sport, dport uint16, payloadLen int) []byte {
	return ether(etherTypeIPv6, ipv6{src: addr(src), dst: addr(dstV6), proto: protoTCP}.packet(l4(protoTCP, sport, dport, payloadLen)))
}

// Destination addresses of the test frames; the program ignores them.
const (
	dstV4 = "192.0.2.1"
	dstV6 = "2001:db8::1"
)

// addr parses an IP address, panicking on a typo in a test.
func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// wantKey returns the key the program should store for a packet from src.
func wantKey(src string, proto uint8, sport, dport uint16) FlowKey {
	a := addr(src)
	k := FlowKey{SrcAddr: a.As16(), SrcPort: sport, DstPort: dport, Proto: Protocol(proto), Family: FamilyIPv6}
	if a.Is4() {
		k.Family = FamilyIPv4
	}
	return k
}
