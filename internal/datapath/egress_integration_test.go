//go:build linux

package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// withEgressHooks makes Attach try only hooks until the test ends: tests
// of the tc fallback run it on kernels that have TCX.
// A test that forces TCX skips on a kernel without it (before 6.6),
// where its tc case covers the fallback.
func withEgressHooks(t *testing.T, hooks ...string) {
	t.Helper()
	if len(hooks) == 1 && hooks[0] == HookTCX && !haveTCX(t) {
		t.Skipf("skipped: Linux %s has no TCX (6.6+); the tc case runs the fallback", kernelRelease())
	}
	saved := egressHooks
	egressHooks = hooks
	t.Cleanup(func() { egressHooks = saved })
}

// itLoadTransmit loads the program counting TCP and UDP to and from local
// port 8080 in both directions; it is closed when the test ends.
func itLoadTransmit(t *testing.T) *Datapath {
	t.Helper()
	opts := withTransmit(DefaultOptions())
	opts.MaxConnections = 1024
	return loadDatapath(t, opts)
}

// TestIntegrationEgress runs TCP conversations and UDP echoes between the
// sender and the receiver namespace, with both programs attached to the receiver veth
// through TCX and through tc, and checks both directions of each
// connection against AF_PACKET captures: what the receiver's veth
// received, and what the sender's received (the receiver's transmit).
// Offloads are off on the veth (netnstest), so a frame is a packet.
func TestIntegrationEgress(t *testing.T) {
	privtest.RequireRoot(t)
	for _, hook := range []string{HookTCX, HookTC} {
		t.Run(hook, func(t *testing.T) {
			withEgressHooks(t, hook)
			pair := netnstest.New(t)
			d := itLoadTransmit(t)
			if _, err := itAttach(pair, d, AttachNative); err != nil {
				t.Fatalf("Attach: %v", err)
			}
			if got := d.EgressHook(netnstest.ReceiverIface); got != hook {
				t.Fatalf("EgressHook = %q, want %q", got, hook)
			}
			idx, err := netnstest.Ifindex(pair.Receiver, netnstest.ReceiverIface)
			if err != nil {
				t.Fatal(err)
			}
			for _, src := range []netip.Addr{netnstest.SenderIPv4, netnstest.SenderIPv6} {
				dst := netnstest.ReceiverIPv4
				if src.Is6() {
					dst = netnstest.ReceiverIPv6
				}
				itEgressConversation(t, pair, d, uint32(idx), src, dst)
				itEgressUDPEcho(t, pair, d, uint32(idx), src, dst)
			}
			if err := d.Detach(netnstest.ReceiverIface); err != nil {
				t.Fatalf("Detach: %v", err)
			}
			if n := egressPrograms(t, pair.Receiver, idx); n != 0 {
				t.Errorf("after Detach: %d egress programs on %s, want 0", n, netnstest.ReceiverIface)
			}
		})
	}
}

// itEgressConversation runs one conversation from src to dst:8080 and
// checks the receive and transmit entries of its connection against
// captures on both ends.
func itEgressConversation(t *testing.T, pair *netnstest.Pair, d *Datapath, ifindex uint32, src, dst netip.Addr) {
	t.Helper()
	received := netnstest.StartCapture(t, pair.Receiver, netnstest.ReceiverIface, netnstest.ToPort(unix.IPPROTO_TCP, 8080))
	sent := netnstest.StartCapture(t, pair.Sender, netnstest.SenderIface, func(f netnstest.Frame) bool {
		return f.Proto == unix.IPPROTO_TCP && f.SrcPort == 8080
	})
	conv := netnstest.TCPConversation{Rounds: 20, Bulk: 64 << 10, Timeout: itIOTimeout}
	client := conv.Converse(t, pair, src, netip.AddrPortFrom(dst, 8080))
	// The server's last ACK of the client's FIN may still be on its way.
	time.Sleep(100 * time.Millisecond)
	rx, err := received.Stop()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := sent.Stop()
	if err != nil {
		t.Fatal(err)
	}

	key := connKey(client, ifindex, 8080, TCP, Receive)
	txKey := connKey(client, ifindex, 8080, TCP, Transmit)
	flows := itFlows(t, d)
	for _, c := range []struct {
		name string
		key  FlowKey
		pcap *netnstest.Pcap
	}{{"receive", key, rx.Pcap}, {"transmit", txKey, tx.Pcap}} {
		packets, bytes := c.pcap.Count(func(netnstest.Frame) bool { return true })
		v, ok := flows[c.key]
		if !ok {
			t.Errorf("%s %s: no entry %+v; table %+v", src, c.name, c.key, flows)
			continue
		}
		if v.Packets != uint64(packets) || v.Bytes != bytes {
			t.Errorf("%s %s: %d packets, %d bytes; the capture has %d, %d", src, c.name, v.Packets, v.Bytes, packets, bytes)
		}
	}
}

// egressPrograms returns the number of programs on the egress of ifindex
// in ns: TCX programs and tc filters of ours.
func egressPrograms(t *testing.T, ns string, ifindex int) int {
	t.Helper()
	n := 0
	err := netnstest.Do(ns, func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXEgress})
		if err != nil && !errors.Is(err, ebpf.ErrNotSupported) && (haveTCX(t) || !errors.Is(err, unix.EINVAL)) {
			return err
		}
		if res != nil {
			n += len(res.Programs)
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
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list egress programs: %v", err)
	}
	return n
}

// requireCloseDetachesEgress checks that d has one egress program on the
// interface ifindex of namespace ns, closes d, and checks that none is
// left there.
func requireCloseDetachesEgress(t *testing.T, d *Datapath, ns string, ifindex int) {
	t.Helper()
	if n := egressPrograms(t, ns, ifindex); n != 1 {
		t.Errorf("attached: %d egress programs of ours, want 1", n)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := egressPrograms(t, ns, ifindex); n != 0 {
		t.Errorf("after Close: %d egress programs of ours, want 0", n)
	}
}

// TestEgressCloseDetaches checks that Close removes the egress program
// from every interface, through either hook.
func TestEgressCloseDetaches(t *testing.T) {
	privtest.RequireRoot(t)
	for _, hook := range []string{HookTCX, HookTC} {
		t.Run(hook, func(t *testing.T) {
			withEgressHooks(t, hook)
			pair := netnstest.New(t)
			opts := withTransmit(DefaultOptions())
			opts.MaxConnections = 1024
			d, err := Load(opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := itAttach(pair, d, AttachGeneric); err != nil {
				d.Close()
				t.Fatalf("Attach: %v", err)
			}
			idx, err := netnstest.Ifindex(pair.Receiver, netnstest.ReceiverIface)
			if err != nil {
				t.Fatal(err)
			}
			requireCloseDetachesEgress(t, d, pair.Receiver, idx)
		})
	}
}

// TestEgressTCFilterBlocked checks that a tc filter of another user at our
// priority and handle makes Attach fail, naming the hook, and is left in
// place, with nothing of ours attached.
func TestEgressTCFilterBlocked(t *testing.T) {
	privtest.RequireRoot(t)
	withEgressHooks(t, HookTC)
	pair := netnstest.New(t)
	idx, err := netnstest.Ifindex(pair.Receiver, netnstest.ReceiverIface)
	if err != nil {
		t.Fatal(err)
	}
	other := loadDatapath(t, withTransmit(testOptions()))
	err = netnstest.Do(pair.Receiver, func() error {
		if err := netlink.QdiscAdd(&netlink.GenericQdisc{
			QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
			QdiscType:  "clsact",
		}); err != nil {
			return err
		}
		return netlink.FilterAdd(tcFilter(idx, other.EgressProgram(), "someone_else"))
	})
	if err != nil {
		t.Fatalf("add another user's filter: %v", err)
	}
	d := itLoadTransmit(t)
	_, err = itAttach(pair, d, AttachGeneric)
	if err == nil || !strings.Contains(err.Error(), "with tc") || !strings.Contains(err.Error(), "left untouched") {
		t.Fatalf("Attach with a foreign filter at our priority: %v, want an error naming tc and the other program", err)
	}
	if n := egressPrograms(t, pair.Receiver, idx); n != 0 {
		t.Errorf("%d filters of ours after the failed attach, want 0", n)
	}
	var foreign int
	_ = netnstest.Do(pair.Receiver, func() error {
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			return err
		}
		filters, err := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == "someone_else" {
				foreign++
			}
		}
		return err
	})
	if foreign != 1 {
		t.Errorf("the other user's filter: %d found after the failed attach, want it left in place", foreign)
	}
	if xdp, attached := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); attached {
		t.Errorf("XDP program %d left attached after the egress attach failed", xdp.ProgID)
	}
}

// TestEgressTCReplacesStaleFilter checks that a filter of ours a killed
// process left on the interface (tc filters outlive their process) is
// replaced by Attach, not counted twice.
func TestEgressTCReplacesStaleFilter(t *testing.T) {
	privtest.RequireRoot(t)
	withEgressHooks(t, HookTC)
	pair := netnstest.New(t)
	idx, err := netnstest.Ifindex(pair.Receiver, netnstest.ReceiverIface)
	if err != nil {
		t.Fatal(err)
	}
	killed := loadDatapath(t, withTransmit(testOptions()))
	err = netnstest.Do(pair.Receiver, func() error {
		_, err := attachTCFilter(idx, killed.EgressProgram()) // never closed, as after a SIGKILL
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	d := itLoadTransmit(t)
	if _, err := itAttach(pair, d, AttachGeneric); err != nil {
		t.Fatalf("Attach over a stale filter of ours: %v", err)
	}
	requireCloseDetachesEgress(t, d, pair.Receiver, idx)
}

// TestEgressInterfaceDeleted checks that an interface deleted while
// attached is no error at Close, through either hook.
func TestEgressInterfaceDeleted(t *testing.T) {
	privtest.RequireRoot(t)
	for _, hook := range []string{HookTCX, HookTC} {
		t.Run(hook, func(t *testing.T) {
			withEgressHooks(t, hook)
			pair := netnstest.New(t)
			d := itLoadTransmit(t)
			if _, err := itAttach(pair, d, AttachGeneric); err != nil {
				t.Fatalf("Attach: %v", err)
			}
			if err := netnstest.DeleteLink(pair.Receiver, netnstest.ReceiverIface); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Errorf("Close after the interface was deleted: %v", err)
			}
		})
	}
}

// TestEgressFollowedInterface checks that an interface Follow attaches
// when it appears gets the egress program too, and that its deletion
// leaves nothing to detach.
func TestEgressFollowedInterface(t *testing.T) {
	privtest.RequireRoot(t)
	pair := netnstest.New(t)
	d := itLoadTransmit(t)
	const name = "veth-rcv2"
	events := make(chan InterfaceEvent, 16)
	err := pair.Do(pair.Receiver, func() error {
		return d.Follow(func(n string) bool { return n == name }, AttachGeneric, func(ev InterfaceEvent) { events <- ev })
	})
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	err = netnstest.AddVeth(
		netnstest.VethEnd{NS: pair.Sender, Name: "veth-snd2", MAC: []byte{2, 0, 0x5e, 0x10, 0, 0x11},
			IPv4: netip.MustParsePrefix("198.51.100.11/32"), IPv6: netip.MustParsePrefix("fd00:db8::11/128")},
		netnstest.VethEnd{NS: pair.Receiver, Name: name, MAC: []byte{2, 0, 0x5e, 0x10, 0, 0x12},
			IPv4: netip.MustParsePrefix("198.51.100.12/32"), IPv6: netip.MustParsePrefix("fd00:db8::12/128")})
	if err != nil {
		t.Fatal(err)
	}
	waitEvent := func(attached bool) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Err != nil {
					t.Fatalf("follow %s: %v", ev.Interface, ev.Err)
				}
				if ev.Interface == name && ev.Attached == attached {
					return
				}
			case <-timeout:
				t.Fatalf("%s: no event attached=%v within 10s", name, attached)
			}
		}
	}
	waitEvent(true)
	if hook, want := d.EgressHook(name), defaultEgressHook(t); hook != want {
		t.Errorf("EgressHook(%s) = %q, want %q", name, hook, want)
	}
	idx, err := netnstest.Ifindex(pair.Receiver, name)
	if err != nil {
		t.Fatal(err)
	}
	if n := egressPrograms(t, pair.Receiver, idx); n != 1 {
		t.Errorf("%d egress programs on %s, want 1", n, name)
	}
	if err := netnstest.DeleteLink(pair.Receiver, name); err != nil {
		t.Fatal(err)
	}
	waitEvent(false)
	if hook := d.EgressHook(name); hook != "" {
		t.Errorf("EgressHook(%s) = %q after the deletion, want none", name, hook)
	}
}

// connKey is the key of one direction of a connection between remote and
// this host's localPort on interface ifindex, as both programs store it:
// the remote side as the source (see TestBothDirectionsOfOneConnection).
func connKey(remote netip.AddrPort, ifindex uint32, localPort uint16, proto Protocol, dir Direction) FlowKey {
	family := uint8(FamilyIPv4)
	if remote.Addr().Is6() {
		family = FamilyIPv6
	}
	return FlowKey{SrcAddr: remote.Addr().As16(), Ifindex: ifindex, SrcPort: remote.Port(), DstPort: localPort, Proto: proto, Family: family, Direction: dir}
}

// countSenderEgress builds a veth pair, switches the sender's features
// named by patterns on, and attaches a datapath counting transmit (every
// port) to the sender's veth; it returns the pair, the datapath and that
// veth's ifindex.
func countSenderEgress(t *testing.T, features ...string) (*netnstest.Pair, *Datapath, int) {
	t.Helper()
	pair := netnstest.New(t)
	if err := netnstest.SetFeatures(pair.Sender, netnstest.SenderIface, true, features...); err != nil {
		t.Fatal(err)
	}
	opts := withTransmit(allPorts(DefaultOptions()))
	opts.MaxConnections = 1024
	d := loadDatapath(t, opts)
	err := pair.Do(pair.Sender, func() error {
		_, err := d.Attach(netnstest.SenderIface, AttachGeneric)
		return err
	})
	if err != nil {
		t.Fatalf("Attach to %s: %v", netnstest.SenderIface, err)
	}
	idx, err := netnstest.Ifindex(pair.Sender, netnstest.SenderIface)
	if err != nil {
		t.Fatal(err)
	}
	return pair, d, idx
}

// TestIntegrationEgressGSO sends bulk TCP from the sender namespace with
// generic segmentation offload on its veth, so that the egress program,
// attached there, sees GSO packets of many segments, which the kernel
// cuts after it, before the veth: the transmit entry must equal, in
// packets and bytes, a capture of the segments on the far side, over IPv4
// and IPv6. (TSO proper hands the super-packets to the peer whole:
// TestIntegrationEgressTSO.)
func TestIntegrationEgressGSO(t *testing.T) {
	privtest.RequireRoot(t)
	pair, d, idx := countSenderEgress(t, "tx-generic-segmentation")
	for _, fam := range []struct{ src, dst netip.Addr }{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6},
	} {
		capture := netnstest.StartCapture(t, pair.Receiver, netnstest.ReceiverIface, netnstest.ToPort(unix.IPPROTO_TCP, 8080))
		conv := netnstest.TCPConversation{Rounds: 1, Bulk: 4 << 20, Timeout: itIOTimeout}
		client := conv.Converse(t, pair, fam.src, netip.AddrPortFrom(fam.dst, 8080))
		res, err := capture.Stop()
		if err != nil {
			t.Fatal(err)
		}
		packets, bytes := res.Pcap.Count(func(f netnstest.Frame) bool { return f.Src == client.Addr() && f.SrcPort == client.Port() })
		key := connKey(netip.AddrPortFrom(fam.dst, 8080), uint32(idx), client.Port(), TCP, Transmit)
		v, ok := itFlows(t, d)[key]
		if !ok {
			t.Errorf("%s: no transmit entry %+v; table %+v", fam.src, key, itFlows(t, d))
			continue
		}
		if v.Packets != uint64(packets) || v.Bytes != bytes {
			t.Errorf("%s: transmitted %d packets, %d bytes; the far side captured %d, %d", fam.src, v.Packets, v.Bytes, packets, bytes)
		}
		t.Logf("%s: transmitted %d packets, %d bytes; the far side captured %d, %d", fam.src, v.Packets, v.Bytes, packets, bytes)
	}
}

// TestIntegrationEgressTSO sends bulk TCP from the sender namespace with
// TSO on its veth, which then hands the stack's super-packets to its peer
// whole: a capture on the far side reads each with its virtio-net header
// (gso_size), computes the segments a wire would carry and their bytes,
// headers repeated, and the transmit entry must equal them, over IPv4 and
// IPv6. The capture must hold GSO packets, or TSO was not in effect.
func TestIntegrationEgressTSO(t *testing.T) {
	privtest.RequireRoot(t)
	pair, d, idx := countSenderEgress(t, "tx-tcp-segmentation", "tx-tcp6-segmentation")
	for _, fam := range []struct {
		src, dst netip.Addr
		gsoType  uint8
	}{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4, netnstest.GSOTCPv4},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6, netnstest.GSOTCPv6},
	} {
		capture := netnstest.StartGSOCapture(t, pair.Receiver, netnstest.ReceiverIface, netnstest.ToPort(unix.IPPROTO_TCP, 8080))
		conv := netnstest.TCPConversation{Rounds: 1, Bulk: 4 << 20, Timeout: itIOTimeout}
		client := conv.Converse(t, pair, fam.src, netip.AddrPortFrom(fam.dst, 8080))
		res, err := capture.Stop()
		if err != nil {
			t.Fatal(err)
		}
		var packets, gsoPackets int
		var bytes uint64
		for _, p := range res.Pcap.Packets {
			f, err := netnstest.DecodeEthernet(p.Data)
			if err != nil || f.Src != client.Addr() || f.SrcPort != client.Port() {
				continue
			}
			n, b, err := p.WireSegments()
			if err != nil {
				t.Fatal(err)
			}
			if p.GSO.Size != 0 {
				gsoPackets++
				if p.GSO.Type != fam.gsoType {
					t.Errorf("%s: GSO type %d, want %d", fam.src, p.GSO.Type, fam.gsoType)
				}
			}
			packets += n
			bytes += b
		}
		if gsoPackets == 0 {
			t.Fatalf("%s: no GSO packet among the %d captured: TSO was not in effect", fam.src, len(res.Pcap.Packets))
		}
		key := connKey(netip.AddrPortFrom(fam.dst, 8080), uint32(idx), client.Port(), TCP, Transmit)
		v, ok := itFlows(t, d)[key]
		if !ok {
			t.Errorf("%s: no transmit entry %+v; table %+v", fam.src, key, itFlows(t, d))
			continue
		}
		if v.Packets != uint64(packets) || v.Bytes != bytes {
			t.Errorf("%s: transmitted %d packets, %d bytes; the far side's %d captured packets (%d GSO) are %d segments, %d bytes on a wire",
				fam.src, v.Packets, v.Bytes, len(res.Pcap.Packets), gsoPackets, packets, bytes)
		}
		t.Logf("%s: transmitted %d packets, %d bytes; the far side's %d captured packets (%d GSO) are %d segments, %d bytes on a wire",
			fam.src, v.Packets, v.Bytes, len(res.Pcap.Packets), gsoPackets, packets, bytes)
	}
}

// itEgressUDPEcho sends datagrams of many sizes from src to dst:8080,
// where a server echoes each, and checks the receive and transmit entries
// of the flow against captures on both ends.
func itEgressUDPEcho(t *testing.T, pair *netnstest.Pair, d *Datapath, ifindex uint32, src, dst netip.Addr) {
	t.Helper()
	itCheckCaptured(t, d, itUDPEcho(t, pair, ifindex, src, dst))
}

// itCaptured is what a capture saw of the flow of key.
type itCaptured struct {
	name    string
	key     FlowKey
	packets int
	bytes   uint64
}

// itCheckCaptured checks that the entry of each flow equals its capture.
func itCheckCaptured(t *testing.T, d *Datapath, captured []itCaptured) {
	t.Helper()
	flows := itFlows(t, d)
	for _, c := range captured {
		v := flows[c.key]
		if v.Packets != uint64(c.packets) || v.Bytes != c.bytes {
			t.Errorf("%s: %d packets, %d bytes; the capture has %d, %d", c.name, v.Packets, v.Bytes, c.packets, c.bytes)
		}
	}
}

// itUDPEcho sends datagrams of many sizes from src to dst:8080, where a
// server echoes each, and returns what captures on both ends saw of the
// flow: the receiver's received and its transmitted datagrams.
func itUDPEcho(t *testing.T, pair *netnstest.Pair, ifindex uint32, src, dst netip.Addr) []itCaptured {
	t.Helper()
	received := netnstest.StartCapture(t, pair.Receiver, netnstest.ReceiverIface, netnstest.ToPort(unix.IPPROTO_UDP, 8080))
	sent := netnstest.StartCapture(t, pair.Sender, netnstest.SenderIface, func(f netnstest.Frame) bool {
		return f.Proto == unix.IPPROTO_UDP && f.SrcPort == 8080
	})
	server := netnstest.ListenUDP(t, pair.Receiver, netip.AddrPortFrom(dst, 8080))
	client := netnstest.ListenUDP(t, pair.Sender, netip.AddrPortFrom(src, 0))
	buf := make([]byte, 65536)
	sizes := netnstest.UDPSizes(50, netnstest.MaxUDPPayload(src))
	for i, size := range sizes {
		if _, err := client.WriteToUDPAddrPort(make([]byte, size), netip.AddrPortFrom(dst, 8080)); err != nil {
			t.Fatalf("send datagram %d: %v", i, err)
		}
		_ = server.SetReadDeadline(time.Now().Add(itIOTimeout))
		n, from, err := server.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("server: datagram %d: %v", i, err)
		}
		if _, err := server.WriteToUDPAddrPort(buf[:n], from); err != nil {
			t.Fatalf("server: echo %d: %v", i, err)
		}
		_ = client.SetReadDeadline(time.Now().Add(itIOTimeout))
		if _, _, err := client.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatalf("client: echo %d: %v", i, err)
		}
	}
	rx, err := received.Stop()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := sent.Stop()
	if err != nil {
		t.Fatal(err)
	}
	local := client.LocalAddr().(*net.UDPAddr).AddrPort()
	key := connKey(netip.AddrPortFrom(src, local.Port()), ifindex, 8080, UDP, Receive)
	txKey := connKey(netip.AddrPortFrom(src, local.Port()), ifindex, 8080, UDP, Transmit)
	var out []itCaptured
	for _, c := range []struct {
		name string
		key  FlowKey
		pcap *netnstest.Pcap
	}{{"receive", key, rx.Pcap}, {"transmit", txKey, tx.Pcap}} {
		packets, bytes := c.pcap.Count(func(netnstest.Frame) bool { return true })
		if packets != len(sizes) {
			t.Errorf("%s udp %s: the capture has %d datagrams, want the %d sent", src, c.name, packets, len(sizes))
		}
		out = append(out, itCaptured{name: fmt.Sprintf("%s udp %s", src, c.name), key: c.key, packets: packets, bytes: bytes})
	}
	return out
}

// haveTCX reports whether the kernel has TCX: a query of the egress
// programs of lo, which kernels before 6.6 refuse with EINVAL.
func haveTCX(t *testing.T) bool {
	t.Helper()
	_, err := link.QueryPrograms(link.QueryOptions{Target: int(loopbackIndexTB(t)), Attach: ebpf.AttachTCXEgress})
	return err == nil
}

// defaultEgressHook is the hook Attach picks on this kernel.
func defaultEgressHook(t *testing.T) string {
	if haveTCX(t) {
		return HookTCX
	}
	return HookTC
}
