package datapath

import (
	"errors"
	"fmt"
	"net/netip"
)

// Dimensions are the fields of a connection's key that its series keeps.
// The program zeroes the others before it looks the key up, so that the
// connections that agree on the kept fields are one entry of the flow
// table, counted exactly as one series.
type Dimensions struct {
	SrcAddr, SrcPort, DstAddr, DstPort, Proto, Ifindex bool
}

// ConnectionDimensions keeps every field but the destination address: one
// series per connection, the program's original key.
func ConnectionDimensions() Dimensions {
	return Dimensions{SrcAddr: true, SrcPort: true, DstPort: true, Proto: true, Ifindex: true}
}

// Aggregation says how a kept address is aggregated.
type Aggregation struct {
	// PrefixIPv4 and PrefixIPv6 truncate the address to a prefix of that
	// length (1-32, 1-128); 0 keeps the whole address.
	PrefixIPv4, PrefixIPv6 uint8
	// CIDRs replaces an address inside one of Options.CIDRs by the
	// narrowest of them that holds it. An address outside them all is
	// truncated as above, or with Options.OtherOutsideCIDRs zeroed.
	CIDRs bool
}

// MaxCIDRs is the most CIDRs Options takes.
const MaxCIDRs = 16384

// validateGrouping checks the dimensions, prefixes and CIDRs of o.
func (o Options) validateGrouping() error {
	var errs []error
	for _, a := range []struct {
		which string
		agg   Aggregation
	}{{"source", o.Source}, {"destination", o.Destination}} {
		if a.agg.PrefixIPv4 > 32 {
			errs = append(errs, fmt.Errorf("%s IPv4 prefix length %d is out of range (1-32; 0 keeps the address)", a.which, a.agg.PrefixIPv4))
		}
		if a.agg.PrefixIPv6 > 128 {
			errs = append(errs, fmt.Errorf("%s IPv6 prefix length %d is out of range (1-128; 0 keeps the address)", a.which, a.agg.PrefixIPv6))
		}
	}
	if len(o.CIDRs) > MaxCIDRs {
		errs = append(errs, fmt.Errorf("%d CIDRs are more than the %d the program holds", len(o.CIDRs), MaxCIDRs))
	}
	seen := make(map[netip.Prefix]bool, len(o.CIDRs))
	for _, p := range o.CIDRs {
		if err := CheckCIDR(p); err != nil {
			errs = append(errs, err)
		}
		if seen[p] {
			errs = append(errs, fmt.Errorf("CIDR %s listed twice", p))
		}
		seen[p] = true
	}
	return errors.Join(errs...)
}

// CheckCIDR accepts a valid prefix in its canonical form, of at least one
// bit, and not an IPv4-mapped IPv6 one (write IPv4 prefixes as IPv4).
func CheckCIDR(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("CIDR %s is not valid", p)
	case p != p.Masked():
		return fmt.Errorf("CIDR %s has host bits set (the prefix is %s)", p, p.Masked())
	case p.Bits() == 0:
		return fmt.Errorf("CIDR %s holds every address: group the rest as \"other\" instead", p)
	case p.Addr().Is4In6():
		return fmt.Errorf("CIDR %s is IPv4-mapped: write it as IPv4", p)
	}
	return nil
}

// MappedBits returns the prefix length of p over the 16-byte address the
// program stores: IPv4 prefixes extend the ::ffff:0:0/96 prefix.
func MappedBits(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 96 + p.Bits()
	}
	return p.Bits()
}

// prefixMask returns the mask of the first bits bits of a 16-byte
// address, as the program's four 32-bit words.
func prefixMask(bits int) [4]uint32 {
	var b [16]byte
	for i := range b {
		switch {
		case bits >= 8*(i+1):
			b[i] = 0xff
		case bits > 8*i:
			b[i] = byte(0xff << (8*(i+1) - bits))
		}
	}
	var w [4]uint32
	for i := range w {
		// Host order: the program reads the bytes as native words.
		w[i] = uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24
	}
	return w
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
