//go:build linux

package netnstest

import "testing"

// gsoFrame builds an Ethernet frame of etherType with an IP header of
// ipLen bytes (version from etherType, IHL from ipLen, protocol proto), a
// transport header of l4Len bytes (TCP data offset from l4Len) and
// payload bytes of payload.
func gsoFrame(etherType uint16, ipLen int, proto uint8, l4Len, payload int) []byte {
	b := make([]byte, 14+ipLen+l4Len+payload)
	b[12], b[13] = byte(etherType>>8), byte(etherType)
	ip := b[14:]
	if etherType == 0x0800 {
		ip[0] = 0x40 | byte(ipLen/4)
		ip[9] = proto
	} else {
		ip[0] = 0x60
		ip[6] = proto
	}
	if proto == 6 {
		ip[ipLen+12] = byte(l4Len/4) << 4
	}
	return b
}

func TestWireSegments(t *testing.T) {
	for _, c := range []struct {
		name    string
		frame   []byte
		gso     GSO
		packets int
		bytes   uint64
	}{
		{"not gso", gsoFrame(0x0800, 20, 6, 20, 1000), GSO{}, 1, 1054},
		{"ipv4 tcp with options, 3 segments", gsoFrame(0x0800, 20, 6, 32, 3000), GSO{Size: 1448, Type: GSOTCPv4}, 3, 3066 + 2*66},
		{"ipv4 with ip options, exact segments", gsoFrame(0x0800, 24, 6, 20, 2896), GSO{Size: 1448, Type: GSOTCPv4}, 2, 2954 + 58},
		{"ipv6 tcp", gsoFrame(0x86dd, 40, 6, 32, 2857), GSO{Size: 1428, Type: GSOTCPv6}, 3, 2943 + 2*86},
		{"ipv6 udp", gsoFrame(0x86dd, 40, 17, 8, 2000), GSO{Size: 1000, Type: GSOUDP}, 2, 2062 + 62},
		{"headers only", gsoFrame(0x0800, 20, 6, 20, 0), GSO{Size: 1448, Type: GSOTCPv4}, 1, 54},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := Packet{OrigLen: len(c.frame), Data: c.frame, GSO: c.gso}
			n, b, err := p.WireSegments()
			if err != nil || n != c.packets || b != c.bytes {
				t.Errorf("WireSegments() = %d, %d, %v; want %d, %d", n, b, err, c.packets, c.bytes)
			}
		})
	}
	p := Packet{OrigLen: 3000, Data: make([]byte, 100), GSO: GSO{Size: 1448, Type: GSOTCPv4}}
	if _, _, err := p.WireSegments(); err == nil {
		t.Error("WireSegments of a truncated GSO packet: no error")
	}
}

func TestParseVnetHdr(t *testing.T) {
	// flags, gso_type (TCPv6 with ECN), hdr_len 128, gso_size 1428, csum_start, csum_offset
	hdr := []byte{1, GSOTCPv6 | gsoECN, 128, 0, 0x94, 0x05, 54, 0, 16, 0}
	if got, want := parseVnetHdr(hdr), (GSO{Size: 1428, Type: GSOTCPv6}); got != want {
		t.Errorf("parseVnetHdr = %+v, want %+v", got, want)
	}
	if got := parseVnetHdr(make([]byte, vnetHdrLen)); got != (GSO{}) {
		t.Errorf("parseVnetHdr(GSO_NONE) = %+v, want zero", got)
	}
}
