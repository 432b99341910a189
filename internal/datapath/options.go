package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// AttachMode selects how the XDP program is attached to an interface.
type AttachMode int

const (
	// AttachAuto tries native (driver) mode and falls back to generic mode.
	AttachAuto AttachMode = iota
	// AttachNative attaches in the driver's receive path; fails where the
	// driver has no XDP support (e.g. lo).
	AttachNative
	// AttachGeneric attaches after the kernel built an skb; works on every
	// interface, at a higher per-packet cost.
	AttachGeneric
)

// String returns the configuration name of the mode: auto, native or generic.
func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachNative:
		return "native"
	case AttachGeneric:
		return "generic"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
}

// ParseAttachMode parses auto, native or generic.
func ParseAttachMode(s string) (AttachMode, error) {
	for _, m := range []AttachMode{AttachAuto, AttachNative, AttachGeneric} {
		if strings.EqualFold(s, m.String()) {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown attach mode %q (use auto, native or generic)", s)
}

// Protocol is an IP transport protocol number counted by the program.
type Protocol uint8

const (
	// TCP is IPPROTO_TCP.
	TCP Protocol = 6
	// UDP is IPPROTO_UDP.
	UDP Protocol = 17
)

// String returns tcp, udp or the protocol number.
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// ParseProtocol parses tcp or udp.
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (use tcp or udp)", s)
}

// MaxConnectionsLimit is the largest flow table the loader accepts.
// Each entry costs 288 bytes of kernel memory, preallocated at load: 18.9
// MB for 65536 entries, 4.8 GB at this limit. 208 are the table's (the
// memlock of the flows map in /proc/self/fdinfo on Linux 6.18: 13,632,784
// bytes for 65536 entries, with the 48-byte key that holds the
// destination address and the direction, and the value's epoch of change
// tracking; TestSYNFlood logs it), 80 the array ReadFlows walks the table
// into (dump_out: 5,246,976 bytes for 65536). TrackChanges adds 176 bytes
// an entry up to MaxChangedRead.
const MaxConnectionsLimit = 1 << 24

// Options are the load-time settings of the XDP program.
type Options struct {
	// Ports are the destination ports counted; empty means every port.
	Ports []uint16
	// Protocols are the transports counted; empty means TCP and UDP.
	Protocols []Protocol
	// NewConnectionsPerEvent is N: a trigger event is sent every N new
	// connections. Must be at least 1.
	NewConnectionsPerEvent uint32
	// MaxConnections bounds the flow table; packets of new connections
	// beyond it are added to the overflow counters. Must be at least 1.
	MaxConnections uint32
	// Dimensions are the key fields each series keeps; the zero value
	// means ConnectionDimensions.
	Dimensions Dimensions
	// Source and Destination aggregate the kept addresses.
	Source, Destination Aggregation
	// CIDRs are the prefixes Aggregation.CIDRs replaces addresses by;
	// naming them is the caller's business.
	CIDRs []netip.Prefix
	// OtherOutsideCIDRs makes an address outside every CIDR one "other"
	// series (zeroed, PrefixOther) instead of keeping it.
	OtherOutsideCIDRs bool
	// StateDir, a directory on a BPF file system, keeps the flow table,
	// the statistics and the attachments across processes: Load takes
	// over those an earlier process left there when they were made for
	// the same layout, grouping and MaxConnections (State says whether),
	// and Close leaves them attached and counting. With Transmit, the
	// egress program's TCX links are pinned there too, and a tc filter of
	// ours, which outlives its process anyway, stays on Close and is
	// given the next process's program in place. Empty: nothing outlives
	// the Datapath but a tc filter of a killed process, which the next
	// Attach replaces.
	StateDir string
	// TrackChanges makes ReadDirty available: packets list the entries
	// they change, once per epoch each, in two kernel lists of
	// min(MaxConnections, MaxChangedRead) keys of 48 bytes, beside a
	// buffer of as many entries of 80 bytes. It costs the hit path an
	// atomic read of the entry and a read of the epoch.
	TrackChanges bool
	// Transmit loads the TC egress program, which counts what the host
	// sends into the same flow table (FlowKey.Direction Transmit); Attach
	// then hooks it on each interface's egress too. False: receive only,
	// as before, and the egress program is not loaded.
	Transmit bool
}

// DefaultOptions returns the original design's settings: port 8080, TCP and
// UDP, a trigger every 5 new connections, 65536 connections.
func DefaultOptions() Options {
	return Options{
		Ports:                  []uint16{8080},
		Protocols:              []Protocol{TCP, UDP},
		NewConnectionsPerEvent: 5,
		MaxConnections:         65536,
	}
}

// withDefaults fills in what the zero values of o stand for: TCP and UDP,
// and ConnectionDimensions.
func (o Options) withDefaults() Options {
	if len(o.Protocols) == 0 {
		o.Protocols = []Protocol{TCP, UDP}
	}
	if o.Dimensions == (Dimensions{}) {
		o.Dimensions = ConnectionDimensions()
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	for _, p := range o.Ports {
		if p == 0 {
			errs = append(errs, errors.New("port 0 cannot be a destination port (use 1-65535)"))
		}
	}
	for _, p := range o.Protocols {
		if p != TCP && p != UDP {
			errs = append(errs, fmt.Errorf("protocol %d is not supported (use tcp or udp)", uint8(p)))
		}
	}
	if o.NewConnectionsPerEvent == 0 {
		errs = append(errs, errors.New("new connections per event must be at least 1"))
	}
	if o.MaxConnections == 0 || o.MaxConnections > MaxConnectionsLimit {
		errs = append(errs, fmt.Errorf("max connections %d is out of range (1-%d)", o.MaxConnections, MaxConnectionsLimit))
	}
	errs = append(errs, o.validateGrouping())
	return errors.Join(errs...)
}

// portBitmap returns the 65536-bit set of ports the program reads.
func portBitmap(ports []uint16) [1024]uint64 {
	var bm [1024]uint64
	for _, p := range ports {
		bm[p>>6] |= 1 << (p & 63)
	}
	return bm
}
