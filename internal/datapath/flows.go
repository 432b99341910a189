package datapath

import (
	"fmt"
	"net/netip"
)

// Address families stored in FlowKey.Family.
const (
	FamilyIPv4 = 4
	FamilyIPv6 = 6
)

// Values of FlowKey.SrcPrefix and DstPrefix besides a prefix length.
const (
	// PrefixWhole: the key holds the whole address.
	PrefixWhole = 0
	// PrefixOther: the address was outside every CIDR and is zeroed.
	PrefixOther = 0xff
)

// Direction is the way the packets of a series went: Receive or Transmit.
type Direction uint8

// Values of FlowKey.Direction (XDPFLOW_DIR_* in headers/xdpflow.h).
const (
	// Receive: packets arriving at the interface, counted by XDP.
	Receive Direction = 0
	// Transmit: packets leaving by the interface, counted on TC egress.
	Transmit Direction = 1
)

// String returns receive or transmit, the values of the semantic
// conventions' network.io.direction.
func (d Direction) String() string {
	switch d {
	case Receive:
		return "receive"
	case Transmit:
		return "transmit"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// FlowKey identifies one series: one direction of a connection, or the
// connections that share the fields the dimensions keep
// (Options.Dimensions; the others are zero) and their aggregated
// addresses. Its layout mirrors struct flow_key in headers/xdpflow.h byte
// for byte (checked by a test).
//
// The sides are named as a received packet names them, in both
// directions: Src* is the remote side, Dst* this host's. A transmitted
// packet's destination is in SrcAddr and SrcPort, its source in DstAddr
// and DstPort, so that the two directions of one connection differ only in
// Direction, and the port filter, dimensions and aggregation apply to the
// same side in both.
type FlowKey struct {
	// SrcAddr and DstAddr are the remote and local addresses; IPv4 is
	// stored IPv4-mapped.
	SrcAddr [16]byte
	DstAddr [16]byte
	// Ifindex is the interface the packets arrived on or left by.
	Ifindex uint32
	// SrcPort and DstPort are the remote and local ports, 0 for
	// non-first fragments.
	SrcPort uint16
	DstPort uint16
	// Proto is the transport protocol number.
	Proto Protocol
	// Family is FamilyIPv4 or FamilyIPv6; 0 when neither address is kept.
	Family uint8
	// SrcPrefix and DstPrefix are what the addresses stand for: the whole
	// address (PrefixWhole), a prefix of that length (of the family, up to
	// 32 or 128) or no address (PrefixOther).
	SrcPrefix uint8
	DstPrefix uint8
	// Direction is Receive or Transmit.
	Direction Direction
	// struct flow_key's explicit padding, always zero: blank, so that
	// keys compare without it and batch lookups fill it in place.
	_ [3]byte
}

// Source returns the source address, unmapped for IPv4.
func (k FlowKey) Source() netip.Addr { return k.addr(k.SrcAddr) }

// Destination returns the destination address, unmapped for IPv4.
func (k FlowKey) Destination() netip.Addr { return k.addr(k.DstAddr) }

func (k FlowKey) addr(b [16]byte) netip.Addr {
	a := netip.AddrFrom16(b)
	if k.Family == FamilyIPv4 {
		return a.Unmap()
	}
	return a
}

// FlowValue holds the counters of one connection: struct flow_counters,
// without the lock, eviction flag and key copy of the kernel's value,
// which would take 56 more bytes per connection of every table read.
type FlowValue struct {
	// Packets counts frames: received, as XDP sees them; transmitted, as
	// the wire carries them (a GSO packet as its segments).
	Packets uint64
	// Bytes counts whole frames from the Ethernet header on, without FCS;
	// transmitted, with a GSO packet's headers repeated in each segment
	// and a VLAN tag the driver inserts.
	Bytes uint64
	// FirstSeenNs and LastSeenNs are kernel CLOCK_MONOTONIC_COARSE nanoseconds; convert
	// them with ClockOffset.Wall.
	FirstSeenNs uint64
	LastSeenNs  uint64
}

// FlowTable is a set of flows read from the kernel, as two parallel
// slices. Its buffers are reused by the next read into it.
type FlowTable struct {
	Keys   []FlowKey
	Values []FlowValue
}

// Len returns the number of flows.
func (t *FlowTable) Len() int { return len(t.Keys) }

// Reset empties the table, keeping its buffers.
func (t *FlowTable) Reset() {
	t.Keys = t.Keys[:0]
	t.Values = t.Values[:0]
}

// Append adds one flow.
func (t *FlowTable) Append(k FlowKey, v FlowValue) {
	t.Keys = append(t.Keys, k)
	t.Values = append(t.Values, v)
}

// growKeys makes room for n more keys and returns the free tail to fill.
func (t *FlowTable) growKeys(n int) []FlowKey {
	l := len(t.Keys)
	if cap(t.Keys)-l < n {
		keys := make([]FlowKey, l, 2*cap(t.Keys)+n)
		copy(keys, t.Keys)
		t.Keys = keys
	}
	if cap(t.Values)-l < n {
		values := make([]FlowValue, l, 2*cap(t.Values)+n)
		copy(values, t.Values)
		t.Values = values
	}
	return t.Keys[l : l+n]
}
