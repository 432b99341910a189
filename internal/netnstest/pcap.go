//go:build linux

package netnstest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"
)

// LinkTypeEthernet is the pcap link type of Ethernet captures.
const LinkTypeEthernet = 1

// Pcap is the content of a classic pcap file (the format tcpdump -w
// writes; pcapng is not supported).
type Pcap struct {
	// LinkType is the link-layer header type, e.g. LinkTypeEthernet.
	LinkType uint32
	// SnapLen is the largest number of bytes stored per packet.
	SnapLen uint32
	// Packets are the records in file order.
	Packets []Packet
}

// Packet is one record of a pcap file.
type Packet struct {
	// Time is the capture timestamp.
	Time time.Time
	// OrigLen is the length of the packet when captured: for an Ethernet
	// capture on Linux, the frame from the Ethernet header to the end of
	// the payload, without FCS.
	OrigLen int
	// Data holds the captured bytes: the first min(OrigLen, SnapLen).
	Data []byte
	// GSO is what the kernel said of a GSO packet, with StartGSOCapture;
	// zero otherwise. Not in pcap files.
	GSO GSO
}

// ReadPcapFile reads the pcap file at path (see ReadPcap).
func ReadPcapFile(path string) (*Pcap, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := ReadPcap(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("read pcap %s: %w", path, err)
	}
	return p, nil
}

// ReadPcap reads a classic pcap stream in either byte order with
// microsecond or nanosecond timestamps. A stream that ends inside a record
// is an error.
func ReadPcap(r io.Reader) (*Pcap, error) {
	var hdr [24]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("file header: %w", err)
	}
	var order binary.ByteOrder
	var nanos bool
	switch magic := binary.LittleEndian.Uint32(hdr[0:4]); magic {
	case 0xa1b2c3d4:
		order = binary.LittleEndian
	case 0xa1b23c4d:
		order, nanos = binary.LittleEndian, true
	case 0xd4c3b2a1:
		order = binary.BigEndian
	case 0x4d3cb2a1:
		order, nanos = binary.BigEndian, true
	case 0x0a0d0d0a:
		return nil, errors.New("pcapng files are not supported, only classic pcap")
	default:
		return nil, fmt.Errorf("not a pcap file (magic %#08x)", magic)
	}
	p := &Pcap{
		SnapLen:  order.Uint32(hdr[16:20]),
		LinkType: order.Uint32(hdr[20:24]) & 0x0fffffff, // upper bits: FCS length
	}
	for i := 0; ; i++ {
		var rec [16]byte
		n, err := io.ReadFull(r, rec[:])
		if n == 0 && errors.Is(err, io.EOF) {
			return p, nil
		}
		if err != nil {
			return nil, fmt.Errorf("record %d header: %w", i, err)
		}
		sec, frac := int64(order.Uint32(rec[0:4])), int64(order.Uint32(rec[4:8]))
		if !nanos {
			frac *= 1000
		}
		incl, orig := order.Uint32(rec[8:12]), order.Uint32(rec[12:16])
		if incl > orig || incl > 1<<24 {
			return nil, fmt.Errorf("record %d: captured length %d, original length %d", i, incl, orig)
		}
		data := make([]byte, incl)
		if _, err := io.ReadFull(r, data); err != nil {
			return nil, fmt.Errorf("record %d data: %w", i, io.ErrUnexpectedEOF)
		}
		p.Packets = append(p.Packets, Packet{Time: time.Unix(sec, frac), OrigLen: int(orig), Data: data})
	}
}

// Count returns the number of packets, and the sum of their OrigLen, whose
// Ethernet frame decodes (see DecodeEthernet) and satisfies match; a nil
// match counts every decodable frame.
func (p *Pcap) Count(match func(Frame) bool) (packets int, bytes uint64) {
	for _, pkt := range p.Packets {
		f, err := DecodeEthernet(pkt.Data)
		if err != nil || (match != nil && !match(f)) {
			continue
		}
		packets++
		bytes += uint64(pkt.OrigLen)
	}
	return packets, bytes
}

// Frame is the addressing of an Ethernet frame carrying IPv4 or IPv6.
type Frame struct {
	// Src and Dst are the IP addresses.
	Src, Dst netip.Addr
	// Proto is the IPv4 protocol or the IPv6 next header that follows the
	// fixed header (extension headers are not walked).
	Proto uint8
	// SrcPort and DstPort are set for TCP and UDP (Proto 6 or 17) when the
	// packet is not a non-first IPv4 fragment; otherwise they are 0.
	SrcPort, DstPort uint16
}

// DecodeEthernet decodes the Ethernet (with at most one 802.1Q tag), IP
// and TCP/UDP port headers at the start of data. It returns an error for
// non-IP frames and truncated headers.
func DecodeEthernet(data []byte) (Frame, error) {
	var f Frame
	if len(data) < 14 {
		return f, errors.New("short ethernet header")
	}
	etherType := binary.BigEndian.Uint16(data[12:14])
	l3 := data[14:]
	if etherType == 0x8100 {
		if len(l3) < 4 {
			return f, errors.New("short vlan header")
		}
		etherType = binary.BigEndian.Uint16(l3[2:4])
		l3 = l3[4:]
	}
	var l4 []byte
	switch etherType {
	case 0x0800:
		if len(l3) < 20 || l3[0]>>4 != 4 {
			return f, errors.New("bad ipv4 header")
		}
		ihl := int(l3[0]&0x0f) * 4
		if ihl < 20 || len(l3) < ihl {
			return f, errors.New("bad ipv4 header length")
		}
		f.Src, _ = netip.AddrFromSlice(l3[12:16])
		f.Dst, _ = netip.AddrFromSlice(l3[16:20])
		f.Proto = l3[9]
		if binary.BigEndian.Uint16(l3[6:8])&0x1fff == 0 {
			l4 = l3[ihl:]
		}
	case 0x86dd:
		if len(l3) < 40 || l3[0]>>4 != 6 {
			return f, errors.New("bad ipv6 header")
		}
		f.Src, _ = netip.AddrFromSlice(l3[8:24])
		f.Dst, _ = netip.AddrFromSlice(l3[24:40])
		f.Proto = l3[6]
		l4 = l3[40:]
	default:
		return f, fmt.Errorf("ethertype %#04x is not IP", etherType)
	}
	if (f.Proto == 6 || f.Proto == 17) && l4 != nil {
		if len(l4) < 4 {
			return f, errors.New("short transport header")
		}
		f.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		f.DstPort = binary.BigEndian.Uint16(l4[2:4])
	}
	return f, nil
}
