//go:build linux

package datapath

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
	"golang.org/x/sys/unix"
)

// stackCase is a UDP frame to port 8080 of the receiver, sent as is from
// an AF_PACKET socket of the sender: delivered says whether the kernel
// hands it to the receiver's socket (and so whether it must be counted).
type stackCase struct {
	name      string
	frame     []byte
	delivered bool
}

// stackFrame4 returns an IPv4/UDP frame with hdr's options from the
// sender's address and sport to the receiver's port 8080 carrying payload,
// after edit changed it (nil: none), with its IPv4 header checksum
// computed afterwards. The UDP checksum is 0: none, which IPv4 allows.
func stackFrame4(hdr ipv4, sport uint16, payload []byte, edit func(f []byte) []byte) []byte {
	hdr.src, hdr.dst, hdr.proto = netnstest.SenderIPv4, netnstest.ReceiverIPv4, protoUDP
	f := stackEther(etherTypeIPv4, hdr.packet(udp(sport, 8080, payload)))
	if edit != nil {
		f = edit(f)
	}
	ip := f[ethHdrLen:]
	hdrLen := int(ip[0]&0x0f) * 4
	be.PutUint16(ip[10:], 0)
	be.PutUint16(ip[10:], ^onesComplementSum(ip[:hdrLen]))
	return f
}

// stackFrame6 returns an IPv6/UDP frame from the sender's address and
// sport to the receiver's port 8080 carrying payload after ext, edited by
// edit, with its UDP checksum computed afterwards over the UDP length the
// header states (0: the rest of the payload). IPv6 requires it.
func stackFrame6(sport uint16, payload []byte, edit func(f []byte) []byte, ext ...ipv6Ext) []byte {
	hdr := ipv6{src: netnstest.SenderIPv6, dst: netnstest.ReceiverIPv6, ext: ext, proto: protoUDP}
	f := stackEther(etherTypeIPv6, hdr.packet(udp(sport, 8080, payload)))
	l4 := len(f) - udpHdrLen - len(payload)
	if edit != nil {
		f = edit(f)
	}
	dgram := f[l4:]
	length := int(be.Uint16(dgram[udpLengthAt:]))
	if length == 0 {
		length = len(dgram)
	}
	length = min(length, len(dgram))
	be.PutUint16(dgram[6:], 0)
	pseudo := make([]byte, 0, 40)
	src, dst := netnstest.SenderIPv6.As16(), netnstest.ReceiverIPv6.As16()
	pseudo = append(append(pseudo, src[:]...), dst[:]...)
	pseudo = be.AppendUint32(pseudo, uint32(length))
	pseudo = be.AppendUint32(pseudo, protoUDP)
	sum := ^onesComplementSum(append(pseudo, dgram[:length]...))
	if sum == 0 {
		sum = 0xffff
	}
	be.PutUint16(dgram[6:], sum)
	return f
}

// stackEther is ether with the MACs of the test network.
func stackEther(etherType uint16, payload []byte) []byte {
	f := ether(etherType, payload)
	copy(f[0:6], netnstest.ReceiverMAC)
	copy(f[6:12], netnstest.SenderMAC)
	return f
}

// onesComplementSum is the 16-bit one's-complement sum of b.
func onesComplementSum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(be.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// stackCases are frames on both sides of each UDP and IP length rule, each
// from its own source port (40100 + its index), so that its flow and its
// datagram tell which it was.
func stackCases() []stackCase {
	set16 := func(off int, v uint16) func([]byte) []byte {
		return func(f []byte) []byte { be.PutUint16(f[off:], v); return f }
	}
	pad := func(n int) func([]byte) []byte {
		return func(f []byte) []byte { return append(f, make([]byte, n)...) }
	}
	ulen4, ulen6 := l4AtV4+udpLengthAt, l4AtV6+udpLengthAt
	p11 := []byte("eleven byte") // UDP length 19
	var v4 ipv4                  // no options
	cases := []struct {
		name      string
		build     func(sport uint16) []byte
		delivered bool
	}{
		{"ipv4", func(sp uint16) []byte { return stackFrame4(v4, sp, p11, nil) }, true},
		{"ipv4 padded to 60 bytes", func(sp uint16) []byte { return stackFrame4(v4, sp, p11, pad(7)) }, true},
		{"ipv4 options", func(sp uint16) []byte { return stackFrame4(ipv4{optWords: 2}, sp, p11, nil) }, true},
		{"ipv4 total length 1000 in a 62-byte frame", func(sp uint16) []byte {
			return stackFrame4(v4, sp, make([]byte, 20), set16(ipv4TotalLenAt, 1000))
		}, false},
		{"ipv4 total length one byte past the frame", func(sp uint16) []byte { return stackFrame4(v4, sp, p11, set16(ipv4TotalLenAt, 20+19+1)) }, false},
		{"ipv4 total length 19", func(sp uint16) []byte { return stackFrame4(v4, sp, p11, set16(ipv4TotalLenAt, 19)) }, false},
		{"ipv4 total length of the header alone", func(sp uint16) []byte { return stackFrame4(v4, sp, p11, set16(ipv4TotalLenAt, 20)) }, false},
		{"ipv4 udp length 0", func(sp uint16) []byte { return stackFrame4(v4, sp, p11, set16(ulen4, 0)) }, false},
		{"ipv4 udp length 7", func(sp uint16) []byte { return stackFrame4(v4, sp, p11, set16(ulen4, 7)) }, false},
		{"ipv4 udp length 9 of 19", func(sp uint16) []byte { return stackFrame4(v4, sp, p11, set16(ulen4, 9)) }, true},
		{"ipv4 udp length 20 of 19", func(sp uint16) []byte { return stackFrame4(v4, sp, p11, set16(ulen4, 20)) }, false},
		{"ipv4 udp length into the padding", func(sp uint16) []byte {
			return stackFrame4(v4, sp, p11, func(f []byte) []byte { return set16(ulen4, 23)(pad(7)(f)) })
		}, false},
		{"ipv6", func(sp uint16) []byte { return stackFrame6(sp, p11, nil) }, true},
		{"ipv6, 6 bytes after the packet", func(sp uint16) []byte { return stackFrame6(sp, p11, pad(6)) }, true},
		{"ipv6 hop-by-hop", func(sp uint16) []byte { return stackFrame6(sp, p11, nil, optsExt(protoHopByHop, 0)) }, true},
		{"ipv6 payload length one byte past the frame", func(sp uint16) []byte { return stackFrame6(sp, p11, set16(ipv6PayloadLenAt, 20)) }, false},
		{"ipv6 payload length 0", func(sp uint16) []byte { return stackFrame6(sp, p11, set16(ipv6PayloadLenAt, 0)) }, false},
		{"ipv6 payload length 0, jumbo option", func(sp uint16) []byte {
			return stackFrame6(sp, p11, set16(ipv6PayloadLenAt, 0), jumboExt(27))
		}, false},
		{"ipv6 udp length 0", func(sp uint16) []byte { return stackFrame6(sp, p11, set16(ulen6, 0)) }, true},
		{"ipv6 udp length 7", func(sp uint16) []byte { return stackFrame6(sp, p11, set16(ulen6, 7)) }, false},
		{"ipv6 udp length 9 of 19", func(sp uint16) []byte { return stackFrame6(sp, p11, set16(ulen6, 9)) }, true},
		{"ipv6 udp length 20 of 19", func(sp uint16) []byte { return stackFrame6(sp, p11, set16(ulen6, 20)) }, false},
	}
	out := make([]stackCase, len(cases))
	for i, c := range cases {
		out[i] = stackCase{name: c.name, frame: c.build(stackPort(i)), delivered: c.delivered}
	}
	return out
}

// stackPort is the source port of stack case i.
func stackPort(i int) uint16 { return 40100 + uint16(i) }

// TestIntegrationLengthChecksAgreeWithTheStack sends frames that break a
// length rule and frames at the edge of one from an AF_PACKET socket
// through the veth pair, with the program attached to the receiving end,
// and checks that exactly the frames the kernel delivers to the UDP
// sockets are counted, each with its whole frame's bytes. Fragments are
// left out: a lone fragment is counted, as it arrives, but never
// delivered.
func TestIntegrationLengthChecksAgreeWithTheStack(t *testing.T) {
	privtest.RequireRoot(t)
	cases := stackCases()
	for _, mode := range itModes {
		t.Run(mode.String(), func(t *testing.T) {
			e := newITEnv(t, mode)
			socks := []*net.UDPConn{
				netnstest.ListenUDP(t, e.pair.Receiver, netip.AddrPortFrom(netnstest.ReceiverIPv4, 8080)),
				netnstest.ListenUDP(t, e.pair.Receiver, netip.AddrPortFrom(netnstest.ReceiverIPv6, 8080)),
			}
			fd := stackPacketSocket(t, e.pair.Sender)
			for _, c := range cases {
				if err := unix.Send(fd, c.frame, 0); err != nil {
					t.Fatalf("send %s (%d bytes): %v", c.name, len(c.frame), err)
				}
			}
			delivered := stackDelivered(t, socks, len(cases))
			flows := itFlows(t, e.d)
			for i, c := range cases {
				sport := stackPort(i)
				src := netnstest.SenderIPv4
				if be.Uint16(c.frame[12:]) == etherTypeIPv6 {
					src = netnstest.SenderIPv6
				}
				v, counted := flows[e.key(src, sport, 8080, UDP)]
				if delivered[sport] != c.delivered {
					t.Errorf("%s: delivered %v, want %v: the kernel's rules differ from docs/guarantees.md", c.name, delivered[sport], c.delivered)
				}
				switch {
				case counted != delivered[sport]:
					t.Errorf("%s: counted %v, delivered %v", c.name, counted, delivered[sport])
				case counted && (v.Packets != 1 || v.Bytes != uint64(len(c.frame))):
					t.Errorf("%s: %d packets, %d bytes; want 1 of %d", c.name, v.Packets, v.Bytes, len(c.frame))
				}
			}
		})
	}
}

// stackPacketSocket opens an AF_PACKET socket in namespace ns bound to
// the sender's veth, for sending frames as they are; it is closed when
// the test ends.
func stackPacketSocket(t *testing.T, ns string) int {
	t.Helper()
	fd := -1
	err := netnstest.Do(ns, func() error {
		idx, err := net.InterfaceByName(netnstest.SenderIface)
		if err != nil {
			return err
		}
		// Protocol 0: the socket sends only, it receives nothing.
		s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(s, &unix.SockaddrLinklayer{Ifindex: idx.Index}); err != nil {
			unix.Close(s)
			return err
		}
		fd = s
		return nil
	})
	if err != nil {
		t.Fatalf("open an AF_PACKET socket on %s in %s: %v", netnstest.SenderIface, ns, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// stackDelivered reads the sockets until they have been quiet for 500 ms
// (at most itIOTimeout, at most limit datagrams) and returns the source
// ports of the datagrams they received.
func stackDelivered(t *testing.T, socks []*net.UDPConn, limit int) map[uint16]bool {
	t.Helper()
	got := map[uint16]bool{}
	deadline := time.Now().Add(itIOTimeout)
	buf := make([]byte, 2048)
	for quiet := false; !quiet && len(got) < limit && time.Now().Before(deadline); {
		quiet = true
		for _, s := range socks {
			s.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
			_, from, err := s.ReadFromUDPAddrPort(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			got[from.Port()] = true
			quiet = false
		}
	}
	return got
}
