package xdpflowreceiver

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// AddressGrouping aggregates one of a series' addresses in the kernel: by
// the named CIDRs, and by prefix length.
type AddressGrouping struct {
	// IPv4PrefixLength and IPv6PrefixLength truncate the address to a
	// prefix of that length (1-32, 1-128). Default: 0, the whole address.
	IPv4PrefixLength int `mapstructure:"ipv4_prefix_length"`
	IPv6PrefixLength int `mapstructure:"ipv6_prefix_length"`
	// MatchCIDRs replaces an address inside one of cidrs by the narrowest
	// that holds it. An address outside them all is truncated as above,
	// or becomes "other" (outside_cidrs). Default: false.
	MatchCIDRs bool `mapstructure:"match_cidrs"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// NamedCIDR is a prefix addresses are aggregated into, and its name.
type NamedCIDR struct {
	// CIDR is the prefix, e.g. 10.244.0.0/16 or fd00:10::/56.
	CIDR string `mapstructure:"cidr"`
	// Name is exported with the series of the addresses it holds, e.g.
	// pods. Several CIDRs may share a name. Default: none.
	Name string `mapstructure:"name"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// Attribute names a series can carry (attributes). network.type follows
// the addresses; the CIDR attributes are this receiver's own, hence the
// xdpflow namespace: no semantic convention names a prefix yet.
const (
	attrSourceAddress           = "source.address"
	attrSourcePort              = "source.port"
	attrDestinationAddress      = "destination.address"
	attrDestinationPort         = "destination.port"
	attrNetworkTransport        = "network.transport"
	attrNetworkType             = "network.type"
	attrInterfaceName           = "network.interface.name"
	attrNetworkIODirection      = "network.io.direction"
	attrSourceCIDR              = "xdpflow.source.cidr"
	attrSourceCIDRName          = "xdpflow.source.cidr.name"
	attrDestinationCIDR         = "xdpflow.destination.cidr"
	attrDestinationCIDRName     = "xdpflow.destination.cidr.name"
	outsideCIDRsAddress         = "address"
	outsideCIDRsOther           = "other"
	otherCIDRName               = outsideCIDRsOther
	defaultOutsideCIDRs         = outsideCIDRsAddress
	maxPrefixIPv4, maxPrefixIP6 = 32, 128
)

// dimensionAttributes are the attributes that attributes may list, in
// export order, each with the key field it keeps.
var dimensionAttributes = []struct {
	name string
	keep func(*datapath.Dimensions) *bool
}{
	{attrSourceAddress, func(d *datapath.Dimensions) *bool { return &d.SrcAddr }},
	{attrSourcePort, func(d *datapath.Dimensions) *bool { return &d.SrcPort }},
	{attrDestinationAddress, func(d *datapath.Dimensions) *bool { return &d.DstAddr }},
	{attrDestinationPort, func(d *datapath.Dimensions) *bool { return &d.DstPort }},
	{attrNetworkTransport, func(d *datapath.Dimensions) *bool { return &d.Proto }},
	{attrInterfaceName, func(d *datapath.Dimensions) *bool { return &d.Ifindex }},
}

func defaultAttributes() []string {
	return []string{attrSourceAddress, attrSourcePort, attrDestinationPort, attrNetworkTransport, attrInterfaceName}
}

// dimensions returns the key fields attributes keeps; attributes must be
// valid.
func (c *Config) dimensions() datapath.Dimensions {
	var d datapath.Dimensions
	for _, a := range dimensionAttributes {
		*a.keep(&d) = slices.Contains(c.Attributes, a.name)
	}
	return d
}

// validateGrouping checks attributes, the address groupings and the
// CIDRs, naming the field of each problem.
func (c *Config) validateGrouping() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Attributes) == 0 {
		add("attributes: at least one attribute is required (e.g. [source.address, destination.port])")
	}
	for _, name := range c.Attributes {
		if !slices.Contains(attributeNames(), name) {
			add("attributes: %q is not one of %s", name, strings.Join(attributeNames(), ", "))
		}
	}
	if d := duplicates(c.Attributes, func(s string) string { return s }); d != "" {
		add("attributes: %s listed more than once", d)
	}
	for _, g := range []struct {
		field, attr string
		grouping    AddressGrouping
	}{
		{"source_address", attrSourceAddress, c.SourceAddress},
		{"destination_address", attrDestinationAddress, c.DestinationAddress},
	} {
		if g.grouping.IPv4PrefixLength < 0 || g.grouping.IPv4PrefixLength > maxPrefixIPv4 {
			add("%s::ipv4_prefix_length: %d is out of range (1-32; 0 keeps the whole address)", g.field, g.grouping.IPv4PrefixLength)
		}
		if g.grouping.IPv6PrefixLength < 0 || g.grouping.IPv6PrefixLength > maxPrefixIP6 {
			add("%s::ipv6_prefix_length: %d is out of range (1-128; 0 keeps the whole address)", g.field, g.grouping.IPv6PrefixLength)
		}
		if g.grouping != (AddressGrouping{}) && !slices.Contains(c.Attributes, g.attr) {
			add("%s: grouping %s needs %s in attributes", g.field, g.attr, g.attr)
		}
		if g.grouping.MatchCIDRs && len(c.CIDRs) == 0 {
			add("%s::match_cidrs: no cidrs are configured", g.field)
		}
	}
	if len(c.CIDRs) > 0 && !c.SourceAddress.MatchCIDRs && !c.DestinationAddress.MatchCIDRs {
		add("cidrs: set match_cidrs in source_address or destination_address to use them")
	}
	errs = append(errs, c.validateCIDRs()...)
	return errs
}

func (c *Config) validateCIDRs() []error {
	var errs []error
	if len(c.CIDRs) > datapath.MaxCIDRs {
		errs = append(errs, fmt.Errorf("cidrs: %d are more than the %d the kernel table holds", len(c.CIDRs), datapath.MaxCIDRs))
	}
	seen := map[netip.Prefix]bool{}
	for i, nc := range c.CIDRs {
		p, err := netip.ParsePrefix(nc.CIDR)
		if err != nil {
			errs = append(errs, fmt.Errorf("cidrs[%d]::cidr: %q is not a CIDR such as 10.0.0.0/8 or fd00::/8", i, nc.CIDR))
			continue
		}
		if err := datapath.CheckCIDR(p); err != nil {
			errs = append(errs, fmt.Errorf("cidrs[%d]::cidr: %w", i, err))
		}
		if seen[p] {
			errs = append(errs, fmt.Errorf("cidrs[%d]::cidr: %s is listed more than once", i, p))
		}
		seen[p] = true
		if c.OutsideCIDRs == outsideCIDRsOther && nc.Name == otherCIDRName {
			errs = append(errs, fmt.Errorf("cidrs[%d]::name: %q names the series outside every CIDR (outside_cidrs: other)", i, nc.Name))
		}
	}
	if c.OutsideCIDRs != outsideCIDRsAddress && c.OutsideCIDRs != outsideCIDRsOther {
		errs = append(errs, fmt.Errorf("outside_cidrs: %q is not one of address, other", c.OutsideCIDRs))
	}
	return errs
}

func attributeNames() []string {
	names := make([]string, len(dimensionAttributes))
	for i, a := range dimensionAttributes {
		names[i] = a.name
	}
	return names
}

// groupingOptions sets the dimensions, aggregations and CIDRs of a
// validated Config in opts.
func (c *Config) groupingOptions(opts *datapath.Options) {
	opts.Dimensions = c.dimensions()
	opts.Source = c.SourceAddress.aggregation()
	opts.Destination = c.DestinationAddress.aggregation()
	opts.CIDRs = c.cidrNames().prefixes()
	opts.OtherOutsideCIDRs = c.OutsideCIDRs == outsideCIDRsOther
}

func (g AddressGrouping) aggregation() datapath.Aggregation {
	return datapath.Aggregation{PrefixIPv4: uint8(g.IPv4PrefixLength), PrefixIPv6: uint8(g.IPv6PrefixLength), CIDRs: g.MatchCIDRs}
}

// cidrNameTable maps each configured prefix to its name ("" when unnamed).
type cidrNameTable map[netip.Prefix]string

func (c *Config) cidrNames() cidrNameTable {
	t := make(cidrNameTable, len(c.CIDRs))
	for _, nc := range c.CIDRs {
		if p, err := netip.ParsePrefix(nc.CIDR); err == nil {
			t[p] = nc.Name
		}
	}
	return t
}

// prefixes returns the table's prefixes, sorted for a stable load.
func (t cidrNameTable) prefixes() []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(t))
	for p := range t {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return ps
}
