//go:build linux

package netnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// This file creates, configures, inspects and deletes links through
// rtnetlink (github.com/vishvananda/netlink), inside a namespace by way
// of Do: netlink sockets opened on a thread belong to its namespace.

// VethEnd is the configuration of one end of a veth pair.
type VethEnd struct {
	// NS is the name of the namespace the end lives in.
	NS string
	// Name is the interface name.
	Name string
	// MAC is the hardware address.
	MAC net.HardwareAddr
	// IPv4 and IPv6 are the end's addresses with their prefix lengths.
	IPv4, IPv6 netip.Prefix
}

// AddVeth creates a veth pair between a.NS and b.NS and configures both
// ends as New configures a Pair's: the addresses (IPv6 without duplicate
// address detection, so it is usable at once), the link up, permanent
// neighbour entries for the peer's two addresses, and TSO, GSO and GRO
// off. When an end's prefix holds only its own address (/32, /128), the
// peer is not on link: AddVeth adds host routes to the peer's addresses
// over the end, with the end's addresses as source.
//
// AddVeth does not wait for the link to carry traffic, which it starts to
// do asynchronously, after some milliseconds. Deleting either end (see
// DeleteLink) or its namespace deletes the pair; when a configuration
// step fails, the pair is left for the caller to delete.
func AddVeth(a, b VethEnd) error {
	peerNS, err := nsHandle(b.NS)
	if err != nil {
		return err
	}
	defer peerNS.Close()
	veth := netlink.NewVeth(netlink.NewLinkAttrs())
	veth.Name, veth.HardwareAddr = a.Name, a.MAC
	veth.PeerName, veth.PeerHardwareAddr, veth.PeerNamespace = b.Name, b.MAC, netlink.NsFd(peerNS)
	err = Do(a.NS, func() error { return netlink.LinkAdd(veth) })
	if err != nil {
		return fmt.Errorf("add veth pair %s (netns %s), %s (netns %s): %w", a.Name, a.NS, b.Name, b.NS, err)
	}
	for _, e := range [][2]VethEnd{{a, b}, {b, a}} {
		if err := Do(e[0].NS, func() error { return configureEnd(e[0], e[1]) }); err != nil {
			return fmt.Errorf("configure %s in netns %s: %w", e[0].Name, e[0].NS, err)
		}
	}
	return nil
}

// configureEnd configures end, whose peer is peer, in the calling thread's
// namespace.
func configureEnd(end, peer VethEnd) error {
	link, err := netlink.LinkByName(end.Name)
	if err != nil {
		return err
	}
	idx := link.Attrs().Index
	for _, p := range []netip.Prefix{end.IPv4, end.IPv6} {
		addr := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %s: %w", p, err)
		}
	}
	// Routes over a link need it up.
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	for _, pr := range []struct{ own, peer netip.Prefix }{{end.IPv4, peer.IPv4}, {end.IPv6, peer.IPv6}} {
		if !pr.own.IsSingleIP() {
			continue
		}
		dst := netip.PrefixFrom(pr.peer.Addr(), pr.peer.Addr().BitLen())
		route := &netlink.Route{LinkIndex: idx, Dst: ipNet(dst), Src: pr.own.Addr().AsSlice(), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteAdd(route); err != nil {
			return fmt.Errorf("add route to %s: %w", dst, err)
		}
	}
	for _, ip := range []netip.Addr{peer.IPv4.Addr(), peer.IPv6.Addr()} {
		family := netlink.FAMILY_V4
		if ip.Is6() {
			family = netlink.FAMILY_V6
		}
		n := &netlink.Neigh{LinkIndex: idx, Family: family, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: peer.MAC}
		if err := netlink.NeighSet(n); err != nil {
			return fmt.Errorf("set neighbour %s: %w", ip, err)
		}
	}
	return disableOffloads(end.Name)
}

// ipNet converts p, keeping its address bits (not masked).
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// setLinkUp sets the interface iface of the calling thread's namespace up.
func setLinkUp(iface string) error {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", iface, err)
	}
	return nil
}

// DeleteLink deletes the interface iface of namespace ns; deleting one end
// of a veth pair deletes the other.
func DeleteLink(ns, iface string) error {
	err := Do(ns, func() error {
		link, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		return netlink.LinkDel(link)
	})
	if err != nil {
		return fmt.Errorf("delete %s in netns %s: %w", iface, ns, err)
	}
	return nil
}

// isLinkNotFound reports whether err says that a link does not exist.
func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// Ifindex returns the index of the interface named iface in namespace ns.
func Ifindex(ns, iface string) (int, error) {
	var idx int
	err := Do(ns, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return fmt.Errorf("interface %s in netns %s: %w", iface, ns, err)
		}
		idx = ifc.Index
		return nil
	})
	return idx, err
}

// RouteDevice returns the name of the interface through which namespace
// ns routes packets to dst, as `ip route get` reports it.
func RouteDevice(ns string, dst netip.Addr) (string, error) {
	var name string
	err := Do(ns, func() error {
		routes, err := netlink.RouteGet(dst.AsSlice())
		if err != nil {
			return err
		}
		if len(routes) == 0 {
			return errors.New("no route")
		}
		link, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			return err
		}
		name = link.Attrs().Name
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("route to %s in netns %s: %w", dst, ns, err)
	}
	return name, nil
}

// RxPackets returns the receive packet counter of the interface iface in
// namespace ns (rx_packets in its sysfs statistics).
func RxPackets(ns, iface string) (uint64, error) {
	var n uint64
	err := Do(ns, func() error {
		link, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		if link.Attrs().Statistics == nil {
			return errors.New("no statistics")
		}
		n = link.Attrs().Statistics.RxPackets
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("rx_packets of %s in netns %s: %w", iface, ns, err)
	}
	return n, nil
}

// XDPAttachment is the XDP program attached to an interface, as
// `ip -d link show` reports it.
type XDPAttachment struct {
	// ProgID is the program's ID.
	ProgID uint32
	// Mode is the attachment mode attribute (IFLA_XDP_ATTACHED):
	// 1 driver (native), 2 generic (skb), 3 offloaded.
	Mode int
}

// LinkXDP returns the XDP attachment of the interface iface in namespace
// ns, read through rtnetlink (the link's IFLA_XDP attribute), or ok false
// when no program is attached. It fails the test if the link cannot be
// read, or if it reports an attachment without a program ID.
func LinkXDP(tb testing.TB, ns, iface string) (x XDPAttachment, ok bool) {
	tb.Helper()
	var xdp *netlink.LinkXdp
	err := Do(ns, func() error {
		link, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		xdp = link.Attrs().Xdp
		return nil
	})
	if err != nil {
		tb.Fatalf("link %s in netns %s: %v", iface, ns, err)
	}
	if xdp == nil || !xdp.Attached {
		return XDPAttachment{}, false
	}
	if xdp.ProgId == 0 {
		tb.Fatalf("link %s in netns %s: XDP attached (mode %d) without a program ID", iface, ns, xdp.AttachMode)
	}
	return XDPAttachment{ProgID: xdp.ProgId, Mode: int(xdp.AttachMode)}, true
}
