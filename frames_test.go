package xdpflowreceiver

import "encoding/binary"

// ipv4Frame returns an Ethernet/IPv4 frame carrying l4 (a TCP or UDP
// header and payload, ports left to the caller) from 198.51.x.y to
// 198.51.100.2, with x.y derived from i.
func ipv4Frame(proto uint8, i int, l4Len int) (frame, l4 []byte) {
	frame = make([]byte, 14+20+l4Len)
	binary.BigEndian.PutUint16(frame[12:], 0x0800)
	ip := frame[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[8] = 64
	ip[9] = proto
	copy(ip[12:16], []byte{198, 51, byte(i >> 24), byte(i >> 16)})
	copy(ip[16:20], []byte{198, 51, 100, 2})
	return frame, ip[20:]
}

// udpFrame returns a 60-byte UDP frame to port 8080 from a source address
// and port derived from i: i selects the connection.
func udpFrame(i int) []byte {
	f, udp := ipv4Frame(17, i, 8+18)
	binary.BigEndian.PutUint16(udp[0:], uint16(i))
	binary.BigEndian.PutUint16(udp[2:], 8080)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	return f
}

// synFrame returns a 54-byte TCP SYN to port 8080 from a source address
// and port derived from i.
func synFrame(i int) []byte {
	f, tcp := ipv4Frame(6, i, 20)
	binary.BigEndian.PutUint16(tcp[0:], uint16(i))
	binary.BigEndian.PutUint16(tcp[2:], 8080)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	return f
}
