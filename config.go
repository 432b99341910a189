package xdpflowreceiver

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/confmap"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
	"github.com/xdpflow/xdpflowreceiver/internal/metadata"
)

// Config is the configuration of the xdpflow receiver.
type Config struct {
	// Interfaces are the network interfaces the XDP program is attached
	// to: names, or patterns (*, ?, [...] as in path.Match) followed as
	// interfaces come and go. Default: [lo]. A name that matches no
	// interface fails Start with the list of the interfaces that exist; a
	// named interface deleted later is attached again when it comes back.
	Interfaces []string `mapstructure:"interfaces"`
	// ExcludeInterfaces are names or patterns of interfaces never attached
	// to, even where Interfaces matches them. Default: none.
	ExcludeInterfaces []string `mapstructure:"exclude_interfaces"`
	// AttachMode is auto, native or generic. auto tries native (driver)
	// mode and falls back to generic; the mode used is logged. Default: auto.
	AttachMode string `mapstructure:"attach_mode"`
	// Ports are the destination ports counted, 1-65535. An empty list
	// counts every port. Default: [8080].
	Ports []int `mapstructure:"ports"`
	// Protocols are the transports counted: tcp, udp. Default: [tcp, udp].
	Protocols []string `mapstructure:"protocols"`
	// Directions are the directions counted: receive (what arrives, the
	// XDP program), and transmit (what this host sends, a TC egress
	// program on the same interfaces). Every series carries
	// network.io.direction. receive is required. Default: [receive].
	Directions []string `mapstructure:"directions"`
	// NewConnectionsPerEvent is N: the kernel asks for a snapshot every N
	// new connections. Default: 5.
	NewConnectionsPerEvent int `mapstructure:"new_connections_per_event"`
	// CollectionInterval is how often every connection's counts are
	// exported, whether or not new connections arrive. Default: 10s.
	CollectionInterval time.Duration `mapstructure:"collection_interval"`
	// MinSnapshotInterval is the shortest time between two snapshots asked
	// for by new connections: a burst is coalesced into one snapshot per
	// interval. Default: 1s.
	MinSnapshotInterval time.Duration `mapstructure:"min_snapshot_interval"`
	// MaxConnections is the capacity of the kernel flow table. Packets of
	// new connections beyond it are counted in xdpflow.overflow.*.
	// Default: 65536; at most 16777216.
	MaxConnections int `mapstructure:"max_connections"`
	// IdleTimeout is how long a connection may go without packets before
	// it is exported one last time and removed from the flow table; if it
	// comes back it starts a new series. Default: 5m; at least 1s.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// ExportChangedOnly exports a series only when its counts changed
	// since its last accepted export, and otherwise every
	// UnchangedExportInterval; evicted series always get their final
	// export. Default: false, every series every collection_interval.
	ExportChangedOnly bool `mapstructure:"export_changed_only"`
	// UnchangedExportInterval is how often, with ExportChangedOnly, an
	// unchanged series is exported anyway, so that backends with a
	// staleness rule keep it (Prometheus: 5m). Default: 4m; at least
	// collection_interval.
	UnchangedExportInterval time.Duration `mapstructure:"unchanged_export_interval"`
	// Attributes are the attributes each series carries, out of
	// source.address, source.port, destination.address, destination.port,
	// network.transport and network.interface.name; network.type follows
	// the addresses. Connections that agree on them are one series,
	// summed in the kernel. Default: all but destination.address, one
	// series per connection.
	Attributes []string `mapstructure:"attributes"`
	// SourceAddress and DestinationAddress aggregate the addresses into
	// prefixes, in the kernel. Default: whole addresses.
	SourceAddress      AddressGrouping `mapstructure:"source_address"`
	DestinationAddress AddressGrouping `mapstructure:"destination_address"`
	// CIDRs are named prefixes that replace the addresses they hold where
	// match_cidrs is set; the narrowest that holds an address wins.
	// Default: none.
	CIDRs []NamedCIDR `mapstructure:"cidrs"`
	// OutsideCIDRs is what becomes of an address outside every CIDR:
	// "address" keeps it (truncated by the prefix lengths), "other" makes
	// one series of all of them. Default: address.
	OutsideCIDRs string `mapstructure:"outside_cidrs"`
	// StateDirectory, a directory on a BPF file system (e.g.
	// /sys/fs/bpf/xdpflow), keeps each receiver's flow table, statistics
	// and attachments in a subdirectory named after the receiver, so that
	// a restarted, upgraded, killed or reconfigured collector takes them
	// over: no packet between the two processes goes uncounted and every
	// series keeps its start time. A table made for another program
	// version, grouping or max_connections is replaced by a new one, with
	// a warning. Default: "" (nothing outlives the collector).
	StateDirectory string `mapstructure:"state_directory"`
	// MetricsBuilderConfig is the "metrics" section: each metric can be
	// disabled (metrics::<name>::enabled, documentation.md).
	metadata.MetricsBuilderConfig `mapstructure:",squash"`

	// stateDir is StateDirectory's subdirectory of this receiver, set by
	// newReceiver.
	stateDir string

	// prevent unkeyed literal initialization
	_ struct{}
}

// Unmarshal decodes the receiver's configuration. It refuses ports that
// are not whole numbers before decoding, which would truncate 80.5 to 80
// and wrap numbers beyond the integer range.
func (c *Config) Unmarshal(conf *confmap.Conf) error {
	if ports, ok := conf.Get("ports").([]any); ok {
		for _, p := range ports {
			if err := checkPortNumber(p); err != nil {
				return err
			}
		}
	}
	return conf.Unmarshal(c)
}

// checkPortNumber accepts the integer types the YAML decoder produces;
// it leaves their range to Validate, except where decoding into an int
// would wrap.
func checkPortNumber(p any) error {
	switch v := p.(type) {
	case int, int64:
		return nil
	case uint64: // beyond the int64 range
		return fmt.Errorf("ports: %d is out of range (1-65535)", v)
	case float64: // a decimal point, or beyond the uint64 range
		if v != math.Trunc(v) {
			return fmt.Errorf("ports: %v is not a whole number (1-65535)", v)
		}
		if v < 1 || v > 65535 {
			return fmt.Errorf("ports: %s is out of range (1-65535)", strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	return nil // strings, booleans: the decoder names the problem
}

func createDefaultConfig() *Config {
	return &Config{
		Interfaces:              []string{"lo"},
		AttachMode:              "auto",
		Ports:                   []int{8080},
		Protocols:               []string{"tcp", "udp"},
		Directions:              []string{directionReceive},
		NewConnectionsPerEvent:  5,
		CollectionInterval:      10 * time.Second,
		MinSnapshotInterval:     time.Second,
		MaxConnections:          65536,
		IdleTimeout:             5 * time.Minute,
		UnchangedExportInterval: 4 * time.Minute,
		Attributes:              defaultAttributes(),
		OutsideCIDRs:            defaultOutsideCIDRs,
		MetricsBuilderConfig:    metadata.NewDefaultMetricsBuilderConfig(),
	}
}

// Validate checks every field and reports each problem with the field's
// name and its allowed values.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(c.Interfaces) == 0 {
		add("interfaces: at least one interface is required (e.g. [lo] or [eth0])")
	}
	if d := duplicates(c.Interfaces, func(n string) string { return n }); d != "" {
		add("interfaces: %s listed more than once", d)
	}
	for _, name := range c.Interfaces {
		if err := checkInterfaceEntry(name); err != nil {
			add("interfaces: %v", err)
		}
	}
	for _, name := range c.ExcludeInterfaces {
		if err := checkInterfaceEntry(name); err != nil {
			add("exclude_interfaces: %v", err)
		} else if !isInterfacePattern(name) && slices.Contains(c.Interfaces, name) {
			add("exclude_interfaces: %s is also listed in interfaces", name)
		}
	}
	if _, err := datapath.ParseAttachMode(c.AttachMode); err != nil {
		add("attach_mode: %q is not one of auto, native, generic", c.AttachMode)
	}
	var outOfRange []string
	for _, p := range c.Ports {
		if p < 1 || p > 65535 {
			outOfRange = append(outOfRange, strconv.Itoa(p))
		}
	}
	if len(outOfRange) > 0 {
		add("ports: %s %s out of range (1-65535; an empty list counts every port)", summarise(outOfRange),
			map[bool]string{true: "is", false: "are"}[len(outOfRange) == 1])
	}
	if d := duplicates(c.Ports, func(p int) int { return p }); d != "" {
		add("ports: %s listed more than once", d)
	}
	if len(c.Protocols) == 0 {
		add("protocols: at least one of tcp, udp is required")
	}
	for _, p := range c.Protocols {
		if _, err := datapath.ParseProtocol(p); err != nil {
			add("protocols: %q is not one of tcp, udp", p)
		}
	}
	if d := duplicates(c.Protocols, strings.ToLower); d != "" {
		add("protocols: %s listed more than once", d)
	}
	errs = append(errs, c.validateDirections()...)
	if c.NewConnectionsPerEvent < 1 || c.NewConnectionsPerEvent > 1<<20 {
		add("new_connections_per_event: %d is out of range (1-%d)", c.NewConnectionsPerEvent, 1<<20)
	}
	if c.MaxConnections < 1 || c.MaxConnections > datapath.MaxConnectionsLimit {
		add("max_connections: %d is out of range (1-%d)", c.MaxConnections, datapath.MaxConnectionsLimit)
	}
	if c.CollectionInterval < minInterval {
		add("collection_interval: %s is too short (at least %s, e.g. 10s)", c.CollectionInterval, minInterval)
	}
	if c.MinSnapshotInterval < minInterval {
		add("min_snapshot_interval: %s is too short (at least %s, e.g. 1s)", c.MinSnapshotInterval, minInterval)
	} else if c.CollectionInterval >= minInterval && c.MinSnapshotInterval > c.CollectionInterval {
		add("min_snapshot_interval: %s must not exceed collection_interval (%s)", c.MinSnapshotInterval, c.CollectionInterval)
	}
	if c.ExportChangedOnly && c.CollectionInterval >= minInterval && c.UnchangedExportInterval < c.CollectionInterval {
		add("unchanged_export_interval: %s must be at least collection_interval (%s)", c.UnchangedExportInterval, c.CollectionInterval)
	}
	if c.StateDirectory != "" && !filepath.IsAbs(c.StateDirectory) {
		add("state_directory: %q is not an absolute path (e.g. /sys/fs/bpf/xdpflow)", c.StateDirectory)
	}
	if c.IdleTimeout < time.Second {
		add("idle_timeout: %s is too short (at least 1s, e.g. 5m)", c.IdleTimeout)
	}
	errs = append(errs, c.validateGrouping()...)
	errs = append(errs, c.validatePerConnectionMetrics()...)
	return errors.Join(errs...)
}

// Values of directions, those of network.io.direction.
const (
	directionReceive  = "receive"
	directionTransmit = "transmit"
)

// validateDirections checks directions: receive, and transmit if wanted,
// each once, transmit without a state directory.
func (c *Config) validateDirections() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, d := range c.Directions {
		if d != directionReceive && d != directionTransmit {
			add("directions: %q is not one of receive, transmit", d)
		}
	}
	if d := duplicates(c.Directions, func(d string) string { return d }); d != "" {
		add("directions: %s listed more than once", d)
	}
	if !slices.Contains(c.Directions, directionReceive) {
		add("directions: receive is required (the XDP program always counts what arrives): use [receive] or [receive, transmit]")
	}
	return errs
}

// transmit reports whether directions asks for transmit counting.
func (c *Config) transmit() bool { return slices.Contains(c.Directions, directionTransmit) }

// validatePerConnectionMetrics refuses what mdatagen's metrics section
// offers but the receiver does not do: per-connection series carry every
// attribute, summed by connection in the kernel, never re-aggregated.
func (c *Config) validatePerConnectionMetrics() []error {
	m, defaults := c.Metrics, metadata.DefaultMetricsConfig()
	return append(
		summedByConnection(metadata.MetricsInfo.XdpflowPackets.Name, m.XdpflowPackets.EnabledAttributes, m.XdpflowPackets.AggregationStrategy,
			len(defaults.XdpflowPackets.EnabledAttributes), defaults.XdpflowPackets.AggregationStrategy),
		summedByConnection(metadata.MetricsInfo.XdpflowBytes.Name, m.XdpflowBytes.EnabledAttributes, m.XdpflowBytes.AggregationStrategy,
			len(defaults.XdpflowBytes.EnabledAttributes), defaults.XdpflowBytes.AggregationStrategy)...)
}

// summedByConnection checks that metric name keeps all of its allAttrs
// attributes and the summing strategy.
func summedByConnection[K comparable](name string, attrs []K, strategy string, allAttrs int, summing string) []error {
	var errs []error
	if d := duplicates(attrs, func(k K) K { return k }); d != "" || len(attrs) != allAttrs {
		errs = append(errs, fmt.Errorf("metrics::%s::attributes: not supported: choose the attributes of every series with the receiver's attributes field, which groups connections in the kernel",
			name))
	}
	if strategy != summing {
		errs = append(errs, fmt.Errorf("metrics::%s::aggregation_strategy: only %q is supported, got %q", name, summing, strategy))
	}
	return errs
}

// minInterval is the floor of collection_interval and min_snapshot_interval:
// at most ten snapshots a second, each a read of the whole flow table.
const minInterval = 100 * time.Millisecond

// maxInterfaceNameLen is IFNAMSIZ less the terminating NUL.
const maxInterfaceNameLen = 15

// checkInterfaceName applies the kernel's rules for interface names
// (dev_valid_name), so that a name no interface can have fails validation
// rather than attachment. Surrounding spaces are refused, not trimmed.
func checkInterfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("%q has surrounding spaces", name)
	case len(name) > maxInterfaceNameLen:
		return fmt.Errorf("%q is longer than %d bytes, the Linux limit", name, maxInterfaceNameLen)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return fmt.Errorf("%q is not a valid interface name (no '/', ':' or white space)", name)
	}
	return nil
}

// duplicates lists, comma-separated, the values that appear more than
// once after normalising them with norm (see summarise).
func duplicates[T any, K comparable](values []T, norm func(T) K) string {
	seen := make(map[K]int, len(values))
	var dups []string
	for _, v := range values {
		k := norm(v)
		seen[k]++
		if seen[k] == 2 {
			dups = append(dups, fmt.Sprint(k))
		}
	}
	return summarise(dups)
}

// listedInErrors is how many values an error lists before it counts the rest.
const listedInErrors = 5

// summarise joins values with commas, the first listedInErrors of them
// and how many more: a long list's error stays one short line.
func summarise(values []string) string {
	if len(values) <= listedInErrors {
		return strings.Join(values, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(values[:listedInErrors], ", "), len(values)-listedInErrors)
}

// datapathOptions converts a validated Config into the loader's options.
func (c *Config) datapathOptions() (datapath.Options, datapath.AttachMode) {
	opts := datapath.Options{
		NewConnectionsPerEvent: uint32(c.NewConnectionsPerEvent),
		MaxConnections:         uint32(c.MaxConnections),
	}
	for _, p := range c.Ports {
		opts.Ports = append(opts.Ports, uint16(p))
	}
	for _, name := range c.Protocols {
		p, _ := datapath.ParseProtocol(name)
		opts.Protocols = append(opts.Protocols, p)
	}
	c.groupingOptions(&opts)
	opts.StateDir = c.stateDir
	opts.TrackChanges = c.ExportChangedOnly
	opts.Transmit = c.transmit()
	mode, _ := datapath.ParseAttachMode(c.AttachMode)
	return opts, mode
}
