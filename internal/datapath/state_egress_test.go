//go:build linux

package datapath

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// Environment of the child process of TestStateTransmitSurvivesSIGKILL:
// the namespace to attach in, the state directory and the egress hook.
// Without them TestStateTransmitChild does nothing.
const (
	stChildNetnsEnv = "XDPFLOW_STATE_CHILD_NETNS"
	stChildDirEnv   = "XDPFLOW_STATE_CHILD_DIR"
	stChildHookEnv  = "XDPFLOW_STATE_CHILD_HOOK"
)

// stateTransmitOptions counts both directions of port 8080 and keeps
// everything in dir.
func stateTransmitOptions(dir string) Options {
	opts := withTransmit(testOptions())
	opts.StateDir = dir
	return opts
}

// TestStateTransmitSurvivesSIGKILL runs, through TCX and through tc, a
// child process that loads both programs with a state directory, attaches
// them to the receiver veth and is killed with SIGKILL. Both programs
// stay attached and count, in both directions, the UDP echoes sent while
// no process runs; the next process takes both attachments over, giving
// them its programs (one egress program on the interface, the new one),
// and reads counts equal to captures on both ends of the veth; datagrams
// sent without a pause during the takeover are all counted, once. A clean
// Close keeps both attached; a receive-only process removes the egress
// program; Detach and ReleaseStaleLinks remove both, pins included.
func TestStateTransmitSurvivesSIGKILL(t *testing.T) {
	privtest.RequireRoot(t)
	for _, hook := range []string{HookTCX, HookTC} {
		t.Run(hook, func(t *testing.T) {
			withEgressHooks(t, hook)
			testStateTransmitSurvivesSIGKILL(t, hook)
		})
	}
}

func testStateTransmitSurvivesSIGKILL(t *testing.T, hook string) {
	pair := netnstest.New(t)
	dir := filepath.Join(privtest.MountBPFFS(t), "xdpflow")
	idx, err := netnstest.Ifindex(pair.Receiver, netnstest.ReceiverIface)
	if err != nil {
		t.Fatal(err)
	}
	xdpID, egressID := stRunKilledChild(t, pair, dir, hook)
	if x, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); !ok || ebpf.ProgramID(x.ProgID) != xdpID {
		t.Fatalf("after SIGKILL: XDP program %d (attached %v), want the child's %d kept by its pinned link", x.ProgID, ok, xdpID)
	}
	if ids := egressProgramIDs(t, pair.Receiver, idx); !slices.Equal(ids, []ebpf.ProgramID{egressID}) {
		t.Fatalf("after SIGKILL: egress programs %v, want the child's %d", ids, egressID)
	}
	captured := itUDPEcho(t, pair, uint32(idx), netnstest.SenderIPv4, netnstest.ReceiverIPv4)

	var second *Datapath
	during := stSendDuring(t, pair, uint32(idx), func() {
		second = loadStateful(t, stateTransmitOptions(dir))
		if used, err := itAttach(pair, second, AttachNative); err != nil || used != AttachNative {
			closeDatapath(t, second)
			t.Fatalf("second attach: %s, %v; want the pinned native link taken over", used, err)
		}
	})
	if r := second.State(); !r.Restored {
		t.Errorf("second load: %+v, want the child's table", r)
	}
	if got := second.EgressHook(netnstest.ReceiverIface); got != hook {
		t.Errorf("EgressHook after the takeover = %q, want %q", got, hook)
	}
	if ids := egressProgramIDs(t, pair.Receiver, idx); !slices.Equal(ids, []ebpf.ProgramID{programID(t, second.EgressProgram())}) {
		t.Errorf("after the takeover: egress programs %v, want only the second's %d", ids, programID(t, second.EgressProgram()))
	}
	if x, _ := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); ebpf.ProgramID(x.ProgID) != programID(t, second.Program()) {
		t.Errorf("after the takeover: XDP program %d, want the second's", x.ProgID)
	}
	itCheckCaptured(t, second, captured)             // counted while no process ran
	itCheckCaptured(t, second, []itCaptured{during}) // counted by one program, then the other
	itCheckCaptured(t, second, itUDPEcho(t, pair, uint32(idx), netnstest.SenderIPv6, netnstest.ReceiverIPv6))
	closeDatapath(t, second)
	stRequireAttached(t, pair, idx, dir, 1, "after a clean Close")

	receiveOnly := stateTransmitOptions(dir)
	receiveOnly.Transmit = false
	third := loadStateful(t, receiveOnly)
	if _, err := itAttach(pair, third, AttachNative); err != nil {
		closeDatapath(t, third)
		t.Fatalf("receive-only attach: %v", err)
	}
	closeDatapath(t, third)
	stRequireAttached(t, pair, idx, dir, 0, "after a receive-only process")

	fourth := loadStateful(t, stateTransmitOptions(dir))
	defer closeDatapath(t, fourth)
	if _, err := itAttach(pair, fourth, AttachNative); err != nil {
		t.Fatalf("attach: %v", err)
	}
	stRequireAttached(t, pair, idx, dir, 1, "attached again")
	if err := fourth.Detach(netnstest.ReceiverIface); err != nil {
		t.Fatal(err)
	}
	stRequireDetached(t, pair, idx, dir, "after Detach")
	if _, err := itAttach(pair, fourth, AttachGeneric); err != nil {
		t.Fatalf("attach: %v", err)
	}
	closeDatapath(t, fourth)

	fifth := loadStateful(t, stateTransmitOptions(dir))
	defer closeDatapath(t, fifth)
	// In the namespace of the interfaces, as Attach: tc filters are found
	// by ifindex.
	if err := pair.Do(pair.Receiver, func() error {
		return fifth.ReleaseStaleLinks(func(string) bool { return false })
	}); err != nil {
		t.Fatal(err)
	}
	stRequireDetached(t, pair, idx, dir, "after ReleaseStaleLinks")
}

// stSendDuring sends datagrams from the receiver's port 8080 to the
// sender, one every 100 µs (a pace the veth's peer never drops at), while
// takeover runs and for 100 ms after, and returns what a capture on the
// sender's veth saw of them: the transmit entry must hold as many, counted
// by the programs before and after the takeover, none twice, none lost.
func stSendDuring(t *testing.T, pair *netnstest.Pair, ifindex uint32, takeover func()) itCaptured {
	t.Helper()
	const clientPort = 40960
	client := netip.AddrPortFrom(netnstest.SenderIPv6, clientPort)
	capture := netnstest.StartCapture(t, pair.Sender, netnstest.SenderIface, func(f netnstest.Frame) bool {
		return f.Proto == unix.IPPROTO_UDP && f.SrcPort == 8080 && f.DstPort == clientPort
	})
	netnstest.ListenUDP(t, pair.Sender, client) // no port unreachable errors
	server := netnstest.ListenUDP(t, pair.Receiver, netip.AddrPortFrom(netnstest.ReceiverIPv6, 8080))
	defer server.Close()
	stop, sent := make(chan struct{}), make(chan int, 1)
	go func() {
		n := 0
		payload := make([]byte, 100)
		for i := 0; i < 200000; i++ { // bounded: 20 s at this pace
			select {
			case <-stop:
				sent <- n
				return
			default:
			}
			if _, err := server.WriteToUDPAddrPort(payload, client); err == nil {
				n++
			}
			time.Sleep(100 * time.Microsecond)
		}
		<-stop
		sent <- n
	}()
	halted := false
	halt := func() int {
		halted = true
		close(stop)
		return <-sent
	}
	defer func() { // takeover failed the test: end the sender all the same
		if !halted {
			halt()
		}
	}()
	takeover()
	time.Sleep(100 * time.Millisecond)
	n := halt()
	res, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	packets, bytes := res.Pcap.Count(nil)
	if packets != n {
		t.Errorf("sent %d datagrams during the takeover, the far side captured %d", n, packets)
	}
	t.Logf("%d datagrams sent during the takeover", n)
	key := FlowKey{SrcAddr: client.Addr().As16(), Ifindex: ifindex, SrcPort: clientPort, DstPort: 8080, Proto: UDP, Family: FamilyIPv6, Direction: Transmit}
	return itCaptured{name: "udp sent during the takeover", key: key, packets: packets, bytes: bytes}
}

// stRequireAttached checks that an XDP program and egress programs of
// ours are on the receiver veth, whose egress link is pinned in dir
// (through TCX) or not.
func stRequireAttached(t *testing.T, pair *netnstest.Pair, idx int, dir string, egress int, when string) {
	t.Helper()
	if _, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); !ok {
		t.Errorf("%s: no XDP program, want the pinned one", when)
	}
	ids := egressProgramIDs(t, pair.Receiver, idx)
	if len(ids) != egress {
		t.Errorf("%s: egress programs %v, want %d", when, ids, egress)
	}
	pins, _ := filepath.Glob(filepath.Join(dir, stateEgressPrefix+"*"))
	if len(ids) == 0 && len(pins) != 0 {
		t.Errorf("%s: egress pins %v with no egress program", when, pins)
	}
}

// stRequireDetached checks that nothing of ours is on the receiver veth
// and that no link is pinned in dir.
func stRequireDetached(t *testing.T, pair *netnstest.Pair, idx int, dir, when string) {
	t.Helper()
	if x, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); ok {
		t.Errorf("%s: XDP program %d attached", when, x.ProgID)
	}
	if ids := egressProgramIDs(t, pair.Receiver, idx); len(ids) != 0 {
		t.Errorf("%s: egress programs %v", when, ids)
	}
	for _, prefix := range []string{stateLinkPrefix, stateEgressPrefix} {
		if pins, _ := filepath.Glob(filepath.Join(dir, prefix+"*")); len(pins) != 0 {
			t.Errorf("%s: pinned links %v", when, pins)
		}
	}
}

// programID returns the kernel's ID of p.
func programID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("program ID unavailable")
	}
	return id
}

// egressProgramIDs returns the IDs of the programs on the egress of
// ifindex in ns: TCX programs and tc filters of ours.
func egressProgramIDs(t *testing.T, ns string, ifindex int) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	err := netnstest.Do(ns, func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXEgress})
		if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		if res != nil {
			for _, p := range res.Programs {
				ids = append(ids, p.ID)
			}
		}
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return err
		}
		filters, err := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
		if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: no clsact qdisc
			return err
		}
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, egressFilterName) {
				ids = append(ids, ebpf.ProgramID(bf.Id))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list egress programs: %v", err)
	}
	return ids
}

// stRunKilledChild starts TestStateTransmitChild in a child process,
// waits until it attached both programs through hook, kills it with
// SIGKILL and returns the IDs of its XDP and egress programs.
func stRunKilledChild(t *testing.T, pair *netnstest.Pair, dir, hook string) (xdp, egress ebpf.ProgramID) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStateTransmitChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), stChildNetnsEnv+"="+pair.Receiver, stChildDirEnv+"="+dir, stChildHookEnv+"="+hook)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	killed := false
	defer func() { // whatever happens, the child is dead and reaped
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	xdp = skWaitAttached(t, lines, &stderr)
	idx, err := netnstest.Ifindex(pair.Receiver, netnstest.ReceiverIface)
	if err != nil {
		t.Fatal(err)
	}
	ids := egressProgramIDs(t, pair.Receiver, idx)
	if len(ids) != 1 {
		t.Fatalf("the child attached egress programs %v, want one", ids)
	}
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill child %d: %v", cmd.Process.Pid, err)
	}
	err = cmd.Wait()
	killed = true
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want killed by SIGKILL; stderr:\n%s", err, stderr.String())
	}
	return xdp, ids[0]
}

// TestStateTransmitChild is the child process of
// TestStateTransmitSurvivesSIGKILL, selected by its environment; run by
// go test it does nothing. It loads both programs with the state
// directory, attaches them in the namespace it was given through the
// egress hook it was given, prints "attached <XDP program ID>" and waits
// to be killed. It never returns: it exits when its stdin reaches end of
// file or after skChildLifetime.
func TestStateTransmitChild(t *testing.T) {
	ns := os.Getenv(stChildNetnsEnv)
	if ns == "" {
		return
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "state child: "+format+"\n", args...)
		os.Exit(2)
	}
	egressHooks = []string{os.Getenv(stChildHookEnv)}
	d, err := Load(stateTransmitOptions(os.Getenv(stChildDirEnv)))
	if err != nil {
		fail("load: %v", err)
	}
	attachAndWaitForKill(d, ns, AttachNative, fail)
}
