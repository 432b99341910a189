//go:build linux

package netnstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Capture collects the inbound frames of one interface from an AF_PACKET
// socket, like `tcpdump -Q in -s 0`. Create it with StartCapture and end
// it with Stop. It is not safe for concurrent use.
type Capture struct {
	fd      int
	iface   string
	vnet    bool // each frame follows a virtio-net header (StartGSOCapture)
	match   func(Frame) bool
	quit    chan struct{} // closed by Stop to end the reader
	done    chan struct{} // closed when the reader has ended
	stopped bool
	result  CaptureResult
	err     error

	mu       sync.Mutex // guards the fields below, written by the reader
	packets  []Packet
	read     int       // frames read from the socket, kept or not
	lastKept time.Time // when the last kept packet was read
	readErr  error
}

// CaptureResult is what a stopped Capture saw.
type CaptureResult struct {
	// Pcap holds the packets kept, in arrival order: LinkType is
	// LinkTypeEthernet, SnapLen the largest frame read whole, and each
	// Packet's Time the kernel's timestamp (SO_TIMESTAMPNS). That is the
	// time of reception, except for frames received before the kernel
	// has switched receive timestamps on, which it does asynchronously
	// when the first socket asks for them: those carry the time they
	// were read, a little later.
	Pcap *Pcap
	// Captured is the number of packets kept (len(Pcap.Packets)).
	Captured int
	// Received is the number of inbound frames the socket received,
	// kept or not, including those dropped. DroppedByKernel is the number
	// dropped because the socket's receive buffer was full. Both are the
	// kernel's PACKET_STATISTICS.
	Received, DroppedByKernel int
}

// Capture socket parameters.
const (
	// captureSnapLen is the largest frame read whole, as tcpdump's
	// default snapshot length: larger than any GRO or GSO aggregate.
	captureSnapLen = 262144
	// captureRcvBuf is the socket receive buffer asked for, bytes.
	captureRcvBuf = 64 << 20
	// capturePoll is how often the reader checks whether to end.
	capturePoll = 50 * time.Millisecond
)

// Capture stop parameters.
const (
	// captureQuiet is how long Stop waits for no kept packet to arrive.
	captureQuiet = 250 * time.Millisecond
	// captureQuietLimit bounds that wait.
	captureQuietLimit = 5 * time.Second
)

// ToPort returns a capture filter that keeps the packets of IP protocol
// proto (6 TCP, 17 UDP) to destination port port, like the pcap filter
// "tcp dst port 8080".
func ToPort(proto uint8, port uint16) func(Frame) bool {
	return func(f Frame) bool { return f.Proto == proto && f.DstPort == port }
}

// StartCapture opens an AF_PACKET socket in namespace ns on interface
// iface that receives its inbound frames only (no promiscuous mode), whole,
// and keeps those whose decoded addressing (see DecodeEthernet) satisfies
// match; a nil match keeps every frame, IP or not. It returns once the
// socket is bound, so every later inbound frame is received.
//
// A reader goroutine empties the socket as frames arrive, with a 64 MiB
// receive buffer behind it; frames the kernel drops nonetheless are
// counted and make Stop fail. StartCapture fails the test if the socket
// cannot be set up, and stops a capture still running when the test ends
// (registered with tb.Cleanup, so it runs before the removal of a Pair
// created earlier in the test).
func StartCapture(tb testing.TB, ns, iface string, match func(Frame) bool) *Capture {
	tb.Helper()
	return startCapture(tb, ns, iface, match, false)
}

// StartGSOCapture is StartCapture where each packet also carries what the
// kernel's virtio-net header says of it (PACKET_VNET_HDR): the segment
// size and type of a GSO packet, e.g. one a veth with TSO on handed to
// its peer whole (see Packet.WireSegments).
func StartGSOCapture(tb testing.TB, ns, iface string, match func(Frame) bool) *Capture {
	tb.Helper()
	return startCapture(tb, ns, iface, match, true)
}

func startCapture(tb testing.TB, ns, iface string, match func(Frame) bool, vnet bool) *Capture {
	tb.Helper()
	c := &Capture{iface: iface, vnet: vnet, match: match, quit: make(chan struct{}), done: make(chan struct{}), lastKept: time.Now()}
	err := Do(ns, func() error {
		var err error
		c.fd, err = openCaptureSocket(iface, vnet)
		return err
	})
	if err != nil {
		tb.Fatalf("capture on %s in netns %s: %v", iface, ns, err)
	}
	go c.reader()
	tb.Cleanup(func() {
		if !c.stopped {
			if _, err := c.Stop(); err != nil {
				tb.Logf("stopping capture at cleanup: %v", err)
			}
		}
	})
	return c
}

// openCaptureSocket opens and binds the capture socket for the interface
// iface of the calling thread's namespace; with vnet, each frame read
// follows a virtio-net header.
func openCaptureSocket(iface string, vnet bool) (int, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return -1, err
	}
	// Protocol 0: no frame is queued before the filter is attached and
	// the socket bound to the interface.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"SO_RCVBUFFORCE", func() error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, captureRcvBuf) }},
		{"SO_TIMESTAMPNS", func() error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) }},
		{"PACKET_VNET_HDR", func() error {
			if !vnet {
				return nil
			}
			return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1)
		}},
		{"SO_ATTACH_FILTER", func() error { return attachFilter(fd, inboundOnly) }},
		{"bind", func() error {
			return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index})
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return fd, nil
}

// Classic BPF socket filters: inboundOnly accepts every frame the host
// did not send (skb->pkt_type is not PACKET_OUTGOING), dropAll none.
var (
	inboundOnly = []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdPktType},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.PACKET_OUTGOING},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
	}
	dropAll = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
)

// Ancillary data offsets of <linux/filter.h>: SKF_AD_OFF + SKF_AD_PKTTYPE
// loads skb->pkt_type.
const (
	skfAdOff     = 0xfffff000 // SKF_AD_OFF, -0x1000
	skfAdPktType = 4          // SKF_AD_PKTTYPE
)

func attachFilter(fd int, prog []unix.SockFilter) error {
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// reader reads frames until Stop asks it to end.
func (c *Capture) reader() {
	defer close(c.done)
	fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
	buf, oob := make([]byte, captureSnapLen), make([]byte, 64)
	for {
		select {
		case <-c.quit:
			return
		default:
		}
		if _, err := unix.Poll(fds, int(capturePoll/time.Millisecond)); err != nil && !errors.Is(err, unix.EINTR) {
			c.fail(fmt.Errorf("poll: %w", err))
			return
		}
		if err := c.drain(buf, oob); err != nil {
			c.fail(err)
			return
		}
	}
}

// drain reads every frame queued on the socket.
func (c *Capture) drain(buf, oob []byte) error {
	for {
		// MSG_TRUNC: n is the frame's length even if it was longer
		// than buf.
		n, oobn, flags, _, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_TRUNC)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("recvmsg: %w", err)
		case flags&unix.MSG_TRUNC != 0 || n > len(buf):
			return fmt.Errorf("a frame of %d bytes is longer than the %d bytes captured", n, len(buf))
		}
		frame, gso, err := c.split(buf[:n])
		if err != nil {
			return err
		}
		c.keep(frame, gso, receiveTime(oob[:oobn]))
	}
}

// split separates the virtio-net header from the frame, if the socket
// has one.
func (c *Capture) split(b []byte) ([]byte, GSO, error) {
	if !c.vnet {
		return b, GSO{}, nil
	}
	if len(b) < vnetHdrLen {
		return nil, GSO{}, fmt.Errorf("a read of %d bytes is shorter than the virtio-net header", len(b))
	}
	return b[vnetHdrLen:], parseVnetHdr(b[:vnetHdrLen]), nil
}

// keep records frame, received at t, if it matches.
func (c *Capture) keep(frame []byte, gso GSO, t time.Time) {
	f, err := DecodeEthernet(frame)
	kept := c.match == nil || (err == nil && c.match(f))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read++
	if kept {
		c.packets = append(c.packets, Packet{Time: t, OrigLen: len(frame), Data: append([]byte(nil), frame...), GSO: gso})
		c.lastKept = time.Now()
	}
}

// receiveTime returns the SCM_TIMESTAMPNS timestamp in the control
// messages oob, or the current time if there is none.
func receiveTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Now()
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_TIMESTAMPNS {
			continue
		}
		switch len(m.Data) {
		case 16: // struct timespec with 64-bit fields
			return time.Unix(int64(binary.NativeEndian.Uint64(m.Data)), int64(binary.NativeEndian.Uint64(m.Data[8:])))
		case 8: // 32-bit fields
			return time.Unix(int64(int32(binary.NativeEndian.Uint32(m.Data))), int64(int32(binary.NativeEndian.Uint32(m.Data[4:]))))
		}
	}
	return time.Now()
}

func (c *Capture) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readErr == nil {
		c.readErr = err
	}
}

// Stop waits until no kept packet has arrived for 250 ms (at most 5
// seconds: frames still on their way through the stack are read), then
// ends the capture: it detaches the socket from the interface (replaces
// its filter by one that drops everything), reads what is still queued,
// reads the kernel's counters and closes the socket.
//
// Stop returns an error when reading failed or the capture is
// incomplete: frames dropped by the kernel, or a frame longer than the
// snapshot length. A second call returns the first call's result.
func (c *Capture) Stop() (CaptureResult, error) {
	if c.stopped {
		return c.result, c.err
	}
	c.stopped = true
	c.result, c.err = c.stop()
	return c.result, c.err
}

func (c *Capture) stop() (CaptureResult, error) {
	defer unix.Close(c.fd)
	c.waitQuiet()
	close(c.quit)
	<-c.done
	var res CaptureResult
	var errs []error
	if err := attachFilter(c.fd, dropAll); err != nil {
		errs = append(errs, fmt.Errorf("detach: %w", err))
	}
	buf, oob := make([]byte, captureSnapLen), make([]byte, 64)
	if err := c.drain(buf, oob); err != nil {
		c.fail(err)
	}
	stats, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		errs = append(errs, fmt.Errorf("PACKET_STATISTICS: %w", err))
	} else {
		res.Received, res.DroppedByKernel = int(stats.Packets), int(stats.Drops)
	}
	// A frame that passed the old filter just before it was replaced
	// may have been queued after the first drain.
	if err := c.drain(buf, oob); err != nil {
		c.fail(err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	res.Pcap = &Pcap{LinkType: LinkTypeEthernet, SnapLen: captureSnapLen, Packets: c.packets}
	res.Captured = len(c.packets)
	if c.readErr != nil {
		errs = append(errs, c.readErr)
	}
	if res.DroppedByKernel != 0 {
		errs = append(errs, fmt.Errorf("kernel dropped %d packets", res.DroppedByKernel))
	}
	if queued := res.Received - res.DroppedByKernel; err == nil && c.read < queued {
		errs = append(errs, fmt.Errorf("kernel queued %d packets, %d read", queued, c.read))
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("incomplete capture on %s: %w", c.iface, err)
	}
	return res, nil
}

// waitQuiet returns once no packet has been kept for captureQuiet, or
// after captureQuietLimit.
func (c *Capture) waitQuiet() {
	deadline := time.Now().Add(captureQuietLimit)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		last := c.lastKept
		c.mu.Unlock()
		if time.Since(last) >= captureQuiet {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}
