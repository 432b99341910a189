//go:build linux

package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// connFlood makes many UDP connections to port 8080 of the receiver
// namespace quickly: it writes crafted Ethernet frames to the sender veth
// through an AF_PACKET socket, from a source address and port per
// connection, and a UDP socket in the receiver namespace reads every
// datagram, so that the sender knows that each frame it counted arrived
// (the XDP program sees a frame before the socket does).
type connFlood struct {
	fd     int                     // AF_PACKET socket on the sender veth
	to     *unix.SockaddrLinklayer // the receiver veth's MAC, through the sender veth
	server *net.UDPConn            // bound to the counted port in the receiver namespace
	sent   map[conn]counts         // per connection: frames and their bytes, as sent
	got    map[conn]counts         // per connection: as the server received them
	frames int                     // frames sent so far
	recvd  int                     // datagrams the server has read so far
	buf    []byte
}

// Connection flood parameters.
const (
	// floodBatch is how many frames are sent before the sender waits
	// for the server to have read all of them: fewer than the 256-frame
	// ring a veth peer with an XDP program takes frames into, and than
	// the server socket's buffer holds.
	floodBatch = 64
	// floodMaxPayload is the largest UDP payload sent, bytes.
	floodMaxPayload = 200
	// floodFirstHost is the last byte of the first source address,
	// 198.51.100.100; each address sends from floodPortsPerAddr ports
	// from floodFirstPort on.
	floodFirstHost    = 100
	floodPortsPerAddr = 1000
	floodFirstPort    = 20000
)

// newConnFlood opens the sockets of a connFlood on pair; they are closed
// when the test ends.
func newConnFlood(t *testing.T, pair *netnstest.Pair) *connFlood {
	t.Helper()
	f := &connFlood{sent: map[conn]counts{}, got: map[conn]counts{}, buf: make([]byte, 65536)}
	f.server = netnstest.ListenUDP(t, pair.Receiver, netip.AddrPortFrom(netnstest.ReceiverIPv4, port))
	if err := f.server.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	err := pair.Do(pair.Sender, func() error {
		ifc, err := net.InterfaceByName(netnstest.SenderIface)
		if err != nil {
			return err
		}
		// Protocol 0: the socket only sends, it receives nothing.
		f.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		f.to = &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6, Protocol: 0x0008} // ETH_P_IP, network order
		copy(f.to.Addr[:], netnstest.ReceiverMAC)
		return nil
	})
	if err != nil {
		t.Fatalf("frame sender on %s: %v", netnstest.SenderIface, err)
	}
	t.Cleanup(func() { unix.Close(f.fd) })
	return f
}

// floodConn returns connection i of a flood: UDP from
// 198.51.100.(100 + i/1000), port 20000 + i%1000, to port 8080.
func floodConn(i int) conn {
	src := netip.AddrFrom4([4]byte{198, 51, 100, byte(floodFirstHost + i/floodPortsPerAddr)})
	return conn{Transport: "udp", Src: src, SrcPort: uint16(floodFirstPort + i%floodPortsPerAddr), DstPort: port}
}

// send sends packets(i) datagrams on connection i for every i in conns,
// paced and checked as connFlood says. Payload sizes vary from 0 to
// floodMaxPayload with the connection and the datagram's rank in it. It
// fails the test if a send fails or the server does not receive every
// datagram within ioTimeout of each batch.
func (f *connFlood) send(t *testing.T, conns []int, packets func(i int) int) {
	t.Helper()
	batch := 0
	for _, i := range conns {
		c := floodConn(i)
		for range packets(i) {
			s := f.sent[c]
			size := (i*31 + int(s.Packets)*17) % (floodMaxPayload + 1)
			frame := udpFrame(c, size, uint16(f.frames))
			if err := unix.Sendto(f.fd, frame, 0, f.to); err != nil {
				t.Fatalf("send frame %d (%s, %d bytes): %v", f.frames, c, len(frame), err)
			}
			f.sent[c] = counts{Packets: s.Packets + 1, Bytes: s.Bytes + uint64(len(frame))}
			f.frames++
			if batch++; batch == floodBatch {
				f.waitReceived(t)
				batch = 0
			}
		}
	}
	f.waitReceived(t)
}

// waitReceived reads the server socket until it has received every frame
// sent so far.
func (f *connFlood) waitReceived(t *testing.T) {
	t.Helper()
	if err := f.server.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	for ; f.recvd < f.frames; f.recvd++ {
		n, from, err := f.server.ReadFromUDPAddrPort(f.buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the server received %d of the %d datagrams sent", f.recvd, f.frames)
		}
		if err != nil {
			t.Fatal(err)
		}
		c := conn{Transport: "udp", Src: from.Addr().Unmap(), SrcPort: from.Port(), DstPort: port}
		g := f.got[c]
		f.got[c] = counts{Packets: g.Packets + 1, Bytes: g.Bytes + netnstest.UDPFrameBytes(c.Src, n)}
	}
}

// checkReceived fails the test unless the server received, from each
// connection, exactly the datagrams and bytes sent on it.
func (f *connFlood) checkReceived(t *testing.T) {
	t.Helper()
	bad := 0
	for c, s := range f.sent {
		if g := f.got[c]; g != s {
			if bad++; bad <= 10 {
				t.Errorf("%s: sent %s, the server received %s", c, s, g)
			}
		}
	}
	if len(f.got) != len(f.sent) {
		t.Errorf("the server received datagrams from %d sources, sent from %d", len(f.got), len(f.sent))
	}
	if bad > 0 {
		t.Fatalf("%d of %d connections were not received as sent", bad, len(f.sent))
	}
}

// udpFrame returns an Ethernet frame from netnstest.SenderMAC to
// netnstest.ReceiverMAC carrying an IPv4 UDP datagram of c to
// netnstest.ReceiverIPv4 with payload bytes of payload, IP identification
// id and no UDP checksum (allowed over IPv4).
func udpFrame(c conn, payload int, id uint16) []byte {
	frame := make([]byte, 14+20+8+payload)
	copy(frame[0:6], netnstest.ReceiverMAC)
	copy(frame[6:12], netnstest.SenderMAC)
	binary.BigEndian.PutUint16(frame[12:14], 0x0800)
	ip := frame[14:34]
	ip[0] = 0x45 // version 4, 20-byte header
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+8+payload))
	binary.BigEndian.PutUint16(ip[4:6], id)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // don't fragment
	ip[8] = 64                                  // TTL
	ip[9] = 17                                  // UDP
	src, dst := c.Src.As4(), netnstest.ReceiverIPv4.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], ipv4Checksum(ip))
	udp := frame[34:42]
	binary.BigEndian.PutUint16(udp[0:2], c.SrcPort)
	binary.BigEndian.PutUint16(udp[2:4], c.DstPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+payload))
	for i := range payload {
		frame[42+i] = byte(i)
	}
	return frame
}

// ipv4Checksum is the Internet checksum of an IPv4 header whose checksum
// field is zero.
func ipv4Checksum(hdr []byte) uint16 {
	var sum uint32
	for i := 0; i < len(hdr); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(hdr[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
