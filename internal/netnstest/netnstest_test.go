//go:build linux

package netnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// listenUDP opens a UDP socket bound to addr inside namespace ns.
func listenUDP(t *testing.T, ns string, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := Do(ns, func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpRoundTrip sends a datagram from fromNS to an echo socket in toNS and
// waits for the echo.
func udpRoundTrip(t *testing.T, fromNS string, from netip.Addr, toNS string, to netip.Addr) {
	t.Helper()
	server := listenUDP(t, toNS, netip.AddrPortFrom(to, 7007))
	client := listenUDP(t, fromNS, netip.AddrPortFrom(from, 0))
	deadline := time.Now().Add(5 * time.Second)
	server.SetDeadline(deadline)
	client.SetDeadline(deadline)

	msg := fmt.Sprintf("ping %s -> %s", from, to)
	if _, err := client.WriteToUDPAddrPort([]byte(msg), netip.AddrPortFrom(to, 7007)); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
	buf := make([]byte, 1500)
	n, peer, err := server.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != msg || peer.Addr() != from {
		t.Fatalf("server got %q from %v (%v), want %q from %v", buf[:n], peer, err, msg, from)
	}
	if _, err := server.WriteToUDPAddrPort(buf[:n], peer); err != nil {
		t.Fatalf("echo: %v", err)
	}
	n, peer, err = client.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != msg || peer.Addr() != to {
		t.Fatalf("client got %q from %v (%v), want %q from %v", buf[:n], peer, err, msg, to)
	}
}

func TestPair(t *testing.T) {
	privtest.RequireRoot(t)
	var p *Pair
	t.Run("network", func(t *testing.T) {
		p = New(t)
		for _, ns := range []string{p.Sender, p.Receiver} {
			if !strings.HasPrefix(ns, fmt.Sprintf("%s%d-", Prefix, os.Getpid())) || !Exists(ns) {
				t.Errorf("namespace %q: want prefix %s<pid>- and to exist", ns, Prefix)
			}
		}

		t.Run("udp-both-ways", func(t *testing.T) {
			udpRoundTrip(t, p.Sender, SenderIPv4, p.Receiver, ReceiverIPv4)
			udpRoundTrip(t, p.Receiver, ReceiverIPv4, p.Sender, SenderIPv4)
			udpRoundTrip(t, p.Sender, SenderIPv6, p.Receiver, ReceiverIPv6)
			udpRoundTrip(t, p.Receiver, ReceiverIPv6, p.Sender, SenderIPv6)
		})

		t.Run("interfaces", func(t *testing.T) {
			for _, e := range []struct {
				ns, iface    string
				mac, peerMAC net.HardwareAddr
				peers        []netip.Addr
			}{
				{p.Sender, SenderIface, SenderMAC, ReceiverMAC, []netip.Addr{ReceiverIPv4, ReceiverIPv6}},
				{p.Receiver, ReceiverIface, ReceiverMAC, SenderMAC, []netip.Addr{SenderIPv4, SenderIPv6}},
			} {
				var ifc *net.Interface
				err := p.Do(e.ns, func() error {
					var err error
					ifc, err = net.InterfaceByName(e.iface)
					return err
				})
				if err != nil {
					t.Fatalf("%s in %s: %v", e.iface, e.ns, err)
				}
				if ifc.HardwareAddr.String() != e.mac.String() || ifc.Flags&net.FlagUp == 0 {
					t.Errorf("%s: mac %s flags %v, want %s and up", e.iface, ifc.HardwareAddr, ifc.Flags, e.mac)
				}
				if idx, err := Ifindex(e.ns, e.iface); err != nil || idx != ifc.Index {
					t.Errorf("Ifindex(%s, %s) = %d, %v; want %d", e.ns, e.iface, idx, err, ifc.Index)
				}
				for _, peer := range e.peers {
					if n, ok := neighbour(t, e.ns, ifc.Index, peer); !ok || n.State != netlink.NUD_PERMANENT || n.HardwareAddr.String() != e.peerMAC.String() {
						t.Errorf("%s: neighbour entry for %s: %+v (found %v), want permanent with lladdr %s", e.ns, peer, n, ok, e.peerMAC)
					}
				}
				features, err := nsFeatures(e.ns, e.iface)
				if err != nil {
					t.Fatal(err)
				}
				// ethtool -k's tcp-segmentation-offload,
				// generic-segmentation-offload and generic-receive-offload.
				var names []string
				for name := range features {
					names = append(names, name)
				}
				offloads, err := matchFeatures(names, offloadFeatures)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range offloads {
					if features[f] {
						t.Errorf("%s %s: %s is on", e.ns, e.iface, f)
					}
				}
			}
		})

		t.Run("do", func(t *testing.T) {
			want := errors.New("boom")
			if err := p.Do(p.Sender, func() error { return want }); err != want {
				t.Errorf("Do returned %v, want fn's error", err)
			}
			err := p.Do(p.Sender, func() error { panic("oops") })
			if err == nil || !strings.Contains(err.Error(), "oops") {
				t.Errorf("Do of a panicking fn returned %v", err)
			}
			if err := Do(Prefix+"no-such-namespace", func() error { return nil }); err == nil {
				t.Error("Do in a missing namespace succeeded")
			}
			// The namespace is the thread's, not the process's: the calling
			// goroutine does not see the veths.
			if _, err := net.InterfaceByName(SenderIface); err == nil {
				t.Errorf("%s is visible outside its namespace", SenderIface)
			}
		})

		t.Run("capture", func(t *testing.T) {
			c := StartCapture(t, p.Receiver, ReceiverIface, ToPort(17, 7008))
			all := StartCapture(t, p.Receiver, ReceiverIface, nil)
			server := listenUDP(t, p.Receiver, netip.AddrPortFrom(ReceiverIPv4, 7008))
			other := listenUDP(t, p.Receiver, netip.AddrPortFrom(ReceiverIPv4, 7009))
			client := listenUDP(t, p.Sender, netip.AddrPortFrom(SenderIPv4, 40100))
			server.SetDeadline(time.Now().Add(5 * time.Second))
			other.SetDeadline(time.Now().Add(5 * time.Second))
			client.SetDeadline(time.Now().Add(5 * time.Second))
			var wantBytes uint64
			const n = 10
			buf := make([]byte, 2000)
			began := time.Now()
			for i := range n {
				payload := make([]byte, 100*i)
				wantBytes += uint64(14 + 20 + 8 + len(payload))
				if _, err := client.WriteToUDPAddrPort(payload, netip.AddrPortFrom(ReceiverIPv4, 7008)); err != nil {
					t.Fatal(err)
				}
				if _, err := client.WriteToUDPAddrPort(payload, netip.AddrPortFrom(ReceiverIPv4, 7009)); err != nil {
					t.Fatal(err)
				}
				_, from, err := server.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := other.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatal(err)
				}
				// An outbound frame, which no capture may hold.
				if _, err := server.WriteToUDPAddrPort([]byte("echo"), from); err != nil {
					t.Fatal(err)
				}
				if _, _, err := client.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatal(err)
				}
			}
			res, err := c.Stop()
			if err != nil {
				t.Fatalf("Stop: %v", err)
			}
			stopped := time.Now()
			if res.Pcap.LinkType != LinkTypeEthernet || res.Captured != n || len(res.Pcap.Packets) != n {
				t.Errorf("link type %d, %d packets captured (%d in Pcap); want %d and %d", res.Pcap.LinkType, res.Captured, len(res.Pcap.Packets), LinkTypeEthernet, n)
			}
			if res.Received < 2*n || res.DroppedByKernel != 0 {
				t.Errorf("%d packets received, %d dropped; want at least %d and none", res.Received, res.DroppedByKernel, 2*n)
			}
			packets, bytes := res.Pcap.Count(func(f Frame) bool {
				return f.Src == SenderIPv4 && f.SrcPort == 40100 && f.DstPort == 7008 && f.Proto == 17
			})
			if packets != n || bytes != wantBytes {
				t.Errorf("pcap: %d packets %d bytes, want %d and %d", packets, bytes, n, wantBytes)
			}
			for i, pkt := range res.Pcap.Packets {
				// Reception or, while the kernel switches timestamps on,
				// read time (see CaptureResult.Pcap).
				if pkt.Time.Before(began) || pkt.Time.After(stopped) {
					t.Errorf("packet %d: timestamp %v outside [%v, %v], from the traffic's start to Stop", i, pkt.Time, began, stopped)
				}
			}
			resAll, err := all.Stop()
			if err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if resAll.Captured < 2*n || resAll.Captured != resAll.Received {
				t.Errorf("unfiltered capture: %d packets captured, %d received; want at least %d, all", resAll.Captured, resAll.Received, 2*n)
			}
			for i, pkt := range resAll.Pcap.Packets {
				if src := net.HardwareAddr(pkt.Data[6:12]); src.String() != SenderMAC.String() {
					t.Errorf("unfiltered capture: packet %d is from %s, not from the sender: an outbound packet", i, src)
				}
			}
			if res2, err2 := c.Stop(); err2 != nil || res2.Captured != res.Captured {
				t.Errorf("second Stop = %+v, %v", res2, err2)
			}
		})
	})
	if p == nil {
		t.Fatal("New did not return")
	}
	for _, ns := range []string{p.Sender, p.Receiver} {
		if Exists(ns) {
			t.Errorf("namespace %s still exists after cleanup", ns)
		}
	}
	// What `ip netns list` lists, and the namespaces' bind mounts.
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == p.Sender || e.Name() == p.Receiver {
			t.Errorf("%s still lists namespace %s", netnsDir, e.Name())
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{p.Sender, p.Receiver} {
		if strings.Contains(string(mounts), filepath.Join(netnsDir, ns)+" ") {
			t.Errorf("namespace %s is still mounted:\n%s", ns, mounts)
		}
	}
}

// neighbour returns the neighbour entry for ip on the interface with index
// ifindex in namespace ns.
func neighbour(t *testing.T, ns string, ifindex int, ip netip.Addr) (netlink.Neigh, bool) {
	t.Helper()
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	var entries []netlink.Neigh
	err := Do(ns, func() error {
		var err error
		entries, err = netlink.NeighList(ifindex, family)
		return err
	})
	if err != nil {
		t.Fatalf("neighbours of interface %d in %s: %v", ifindex, ns, err)
	}
	for _, n := range entries {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return n, true
		}
	}
	return netlink.Neigh{}, false
}

func TestSweepStale(t *testing.T) {
	privtest.RequireRoot(t)
	// A PID that is not alive: a child that has exited and been reaped
	// (this test binary, running no test).
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	dead := cmd.Process.Pid
	if processAlive(dead) {
		t.Skipf("pid %d was reused at once", dead)
	}
	stale := fmt.Sprintf("%s%d-1-snd", Prefix, dead)
	live := fmt.Sprintf("%s%d-999999-snd", Prefix, os.Getpid())
	for _, ns := range []string{stale, live} {
		if err := addNamed(ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if Exists(ns) {
				if err := deleteNamed(ns); err != nil {
					t.Error(err)
				}
			}
		})
	}
	if err := SweepStale(); err != nil {
		t.Fatalf("SweepStale: %v", err)
	}
	if Exists(stale) {
		t.Errorf("stale namespace %s of dead pid %d survived the sweep", stale, dead)
	}
	if !Exists(live) {
		t.Errorf("namespace %s of this live process was swept", live)
	}
}
