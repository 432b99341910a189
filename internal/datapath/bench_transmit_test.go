//go:build linux

package datapath

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// BenchmarkVethTransmit measures what transmit counting costs end to end:
// one thread in the sender namespace writes 22-byte UDP datagrams to a
// socket connected to the receiver for a fixed time, with nothing on the
// sender veth's egress, an empty TC program, or ours (attached through
// TCX, as Attach does, without the XDP program). The CPU time of that
// thread per datagram covers the whole send path (socket, IP, TC egress,
// the veth) and the receive path the veth's softirq runs on the same
// thread; the difference between ours and the empty program is what
// counting costs. Cases are interleaved round by round.
func BenchmarkVethTransmit(b *testing.B) {
	privtest.RequireRoot(b)
	pair := netnstest.New(b)
	d := datapathFor(b, withTransmit(allPorts(benchOptions()))) // closed before the pair is removed
	emptyTC := emptyTCProgram(b)
	sndIdx, err := netnstest.Ifindex(pair.Sender, netnstest.SenderIface)
	if err != nil {
		b.Fatal(err)
	}
	// A socket on port 8080 that nobody reads: the receiver drops the
	// datagrams at it once it is full.
	sink := netnstest.ListenUDP(b, pair.Receiver, netip.AddrPortFrom(netnstest.ReceiverIPv4, 8080))
	defer sink.Close()
	var conn *net.UDPConn
	err = pair.Do(pair.Sender, func() error {
		var err error
		conn, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netnstest.SenderIPv4, 50000)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(netnstest.ReceiverIPv4, 8080)))
		return err
	})
	if err != nil {
		b.Fatalf("UDP socket in the sender: %v", err)
	}
	defer conn.Close()
	payload := make([]byte, 22) // 64-byte frames

	send := func(dur time.Duration) (sent uint64, cpu time.Duration, err error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		threadCPU := func() time.Duration {
			var ru unix.Rusage
			_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
			return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		start, cpuStart := time.Now(), threadCPU()
		for time.Since(start) < dur {
			for range 64 {
				if _, err := conn.Write(payload); err == nil {
					sent++
				} else if !isNoBufs(err) {
					return 0, 0, fmt.Errorf("send: %w", err)
				}
			}
		}
		return sent, threadCPU() - cpuStart, nil
	}
	counted := func() uint64 {
		var n uint64
		for k, v := range readFlows(b, d) {
			if k.Direction == Transmit {
				n += v.Packets
			}
		}
		return n
	}

	type txCase struct {
		name, what     string
		attach, detach func() error
		cpuNs          []float64
		sent           uint64
	}
	var emptyLink link.Link
	var ourLink *egressLink
	inSender := func(fn func() error) func() error { return func() error { return pair.Do(pair.Sender, fn) } }
	cases := []*txCase{
		{name: "no-tc", what: "nothing on egress", attach: func() error { return nil }, detach: func() error { return nil }},
		{name: "empty-tc", what: "empty TC program, TCX", attach: inSender(func() error {
			var err error
			emptyLink, err = link.AttachTCX(link.TCXOptions{Interface: sndIdx, Program: emptyTC, Attach: ebpf.AttachTCXEgress})
			return err
		}), detach: func() error { return emptyLink.Close() }},
		{name: "ours", what: "xdpflow_egress, TCX", attach: inSender(func() error {
			var err error
			ourLink, err = attachTCX(sndIdx, d.EgressProgram())
			return err
		}), detach: func() error { return ourLink.close() }},
	}
	ours := cases[2]
	var oursCounted uint64
	start := time.Now()
	for r := range *benchVethN {
		for i := range cases {
			c := cases[(i+r)%len(cases)]
			if err := c.attach(); err != nil {
				b.Fatalf("%s: attach: %v", c.name, err)
			}
			before := counted()
			sent, cpu, err := send(*benchVeth)
			if err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			if err := c.detach(); err != nil {
				b.Fatalf("%s: detach: %v", c.name, err)
			}
			after := counted()
			if c == ours {
				oursCounted += after - before
			} else if after != before {
				b.Fatalf("%s: the detached program counted %d packets", c.name, after-before)
			}
			c.cpuNs = append(c.cpuNs, float64(cpu.Nanoseconds())/float64(sent))
			c.sent += sent
		}
	}
	elapsed := time.Since(start)

	stats := map[string]benchStat{}
	for _, c := range cases {
		stats[c.name] = summarize(c.cpuNs)
	}
	fmt.Printf("\nBenchmarkVethTransmit: 64-byte UDP frames from one socket thread, %s per case, %d rounds, %s; %s\n",
		*benchVeth, *benchVethN, elapsed.Round(time.Second), benchMachine())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tCPU ns/datagram min/med/max\tmedian/no-tc\tmedian − empty-tc\tsent\t  what\t")
	for _, c := range cases {
		s := stats[c.name]
		fmt.Fprintf(tw, "%s\t%.0f / %.0f / %.0f\t%.3fx\t%+.0f ns\t%d\t  %s\t\n", c.name, s.min, s.med, s.max,
			s.med/stats["no-tc"].med, s.med-stats["empty-tc"].med, c.sent, c.what)
	}
	tw.Flush()
	fmt.Printf("ours counted %d of the %d datagrams sent with it attached\n", oursCounted, ours.sent)
	if oursCounted != ours.sent {
		b.Errorf("ours counted %d packets, the socket sent %d", oursCounted, ours.sent)
	}
	for _, c := range cases {
		s := stats[c.name]
		b.Run(c.name, func(b *testing.B) {
			b.ReportMetric(s.med, "cpu-ns/pkt")
			b.ReportMetric(s.med/stats["no-tc"].med, "x-no-tc")
		})
	}
}

// isNoBufs reports whether err is a full send queue, which the sender
// retries past.
func isNoBufs(err error) bool {
	var errno unix.Errno
	if opErr, ok := err.(*net.OpError); ok {
		if se, ok := opErr.Err.(*os.SyscallError); ok {
			errno, _ = se.Err.(unix.Errno)
		}
	}
	return errno == unix.ENOBUFS || errno == unix.EAGAIN
}
