//go:build linux

package netnstest

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// GSO is what the virtio-net header of a captured packet (struct
// virtio_net_hdr, PACKET_VNET_HDR) says of a GSO packet: the packet the
// kernel handed over whole, which the wire would carry as segments of
// Size payload bytes. Size 0: a packet as the wire carries it.
type GSO struct {
	// Size is the payload bytes of each segment but the last (gso_size).
	Size uint16
	// Type is the segmentation (gso_type): GSOTCPv4, GSOTCPv6 or GSOUDP,
	// with the ECN bit cleared.
	Type uint8
}

// The gso_type values of <linux/virtio_net.h>.
const (
	GSOTCPv4 = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDP   = 3 // VIRTIO_NET_HDR_GSO_UDP
	GSOTCPv6 = 4 // VIRTIO_NET_HDR_GSO_TCPV6
	gsoECN   = 0x80
)

// vnetHdrLen is the size of struct virtio_net_hdr, which precedes each
// frame read from a socket with PACKET_VNET_HDR.
const vnetHdrLen = 10

// parseVnetHdr reads the GSO fields of a virtio_net_hdr: flags (1 byte),
// gso_type (1), hdr_len (2), gso_size (2), csum_start (2), csum_offset
// (2), in host order (AF_PACKET writes it in the host's, vio_le()).
// hdr_len is the skb's linear length, not its headers': WireSegments
// parses them.
func parseVnetHdr(b []byte) GSO {
	typ := b[1] &^ gsoECN
	if typ == 0 { // VIRTIO_NET_HDR_GSO_NONE
		return GSO{}
	}
	return GSO{Size: binary.NativeEndian.Uint16(b[4:6]), Type: typ}
}

// WireSegments returns what the wire carries of p: one packet of OrigLen
// bytes, or for a GSO packet its segments, each with the Ethernet, IP and
// TCP or UDP headers of p (TCP options included) and at most GSO.Size
// payload bytes, as the kernel cuts it. p must be whole (Data holds
// OrigLen bytes).
func (p Packet) WireSegments() (packets int, bytes uint64, err error) {
	if p.GSO.Size == 0 {
		return 1, uint64(p.OrigLen), nil
	}
	if len(p.Data) != p.OrigLen {
		return 0, 0, fmt.Errorf("a GSO packet of %d bytes captured with %d", p.OrigLen, len(p.Data))
	}
	hdr, err := headerLen(p.Data)
	if err != nil {
		return 0, 0, fmt.Errorf("GSO packet: %w", err)
	}
	payload := p.OrigLen - hdr
	if payload <= 0 {
		return 1, uint64(p.OrigLen), nil
	}
	segs := (payload + int(p.GSO.Size) - 1) / int(p.GSO.Size)
	return segs, uint64(p.OrigLen + (segs-1)*hdr), nil
}

// headerLen returns the bytes of frame up to the end of its TCP or UDP
// header: Ethernet (with at most one 802.1Q tag), IPv4 with its options
// or the fixed IPv6 header, then the transport header (TCP by its data
// offset).
func headerLen(frame []byte) (int, error) {
	f, err := DecodeEthernet(frame)
	if err != nil {
		return 0, err
	}
	l3 := 14
	if binary.BigEndian.Uint16(frame[12:14]) == 0x8100 {
		l3 += 4
	}
	l4 := l3 + 40
	if f.Src.Is4() {
		l4 = l3 + int(frame[l3]&0x0f)*4
	}
	switch f.Proto {
	case 17:
		return l4 + 8, nil
	case 6:
		if len(frame) < l4+13 {
			return 0, errors.New("short tcp header")
		}
		return l4 + int(frame[l4+12]>>4)*4, nil
	}
	return 0, fmt.Errorf("protocol %d is neither tcp nor udp", f.Proto)
}
