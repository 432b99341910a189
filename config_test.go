package xdpflowreceiver

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
	"github.com/xdpflow/xdpflowreceiver/internal/metadata"
)

func TestLoadConfig(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)

	allSet := createDefaultConfig()
	allSet.Interfaces = []string{"eth0", "eth1"}
	allSet.AttachMode = "native"
	allSet.Ports = []int{80, 443}
	allSet.Protocols = []string{"tcp"}
	allSet.NewConnectionsPerEvent = 10
	allSet.CollectionInterval = 30 * time.Second
	allSet.MinSnapshotInterval = 2 * time.Second
	allSet.MaxConnections = 1024
	allSet.IdleTimeout = time.Minute

	bothDirections := createDefaultConfig()
	bothDirections.Directions = []string{"receive", "transmit"}
	bothDirections.StateDirectory = "/sys/fs/bpf/xdpflow" // kept for both directions

	allPorts := createDefaultConfig()
	allPorts.Ports = []int{}

	grouped := createDefaultConfig()
	grouped.Attributes = []string{"source.address", "destination.address", "destination.port", "network.transport"}
	grouped.SourceAddress = AddressGrouping{IPv4PrefixLength: 24, IPv6PrefixLength: 64, MatchCIDRs: true}
	grouped.CIDRs = []NamedCIDR{{CIDR: "10.244.0.0/16", Name: "pods"}, {CIDR: "fd00:10::/56"}}
	grouped.OutsideCIDRs = "other"

	someMetrics := createDefaultConfig()
	someMetrics.Metrics.XdpflowBytes.Enabled = false
	someMetrics.Metrics.XdpflowConnections.Enabled = false

	tests := []struct {
		id   component.ID
		want *Config
	}{
		{component.NewID(metadata.Type), createDefaultConfig()},
		{component.MustNewIDWithName(metadata.Type.String(), "all_set"), allSet},
		{component.MustNewIDWithName(metadata.Type.String(), "all_ports"), allPorts},
		{component.MustNewIDWithName(metadata.Type.String(), "some_metrics"), someMetrics},
		{component.MustNewIDWithName(metadata.Type.String(), "grouped"), grouped},
		{component.MustNewIDWithName(metadata.Type.String(), "both_directions"), bothDirections},
	}
	for _, tt := range tests {
		t.Run(tt.id.String(), func(t *testing.T) {
			cfg := NewFactory().CreateDefaultConfig()
			sub, err := cm.Sub(tt.id.String())
			require.NoError(t, err)
			require.NoError(t, sub.Unmarshal(cfg))
			require.NoError(t, confmap.Validate(cfg))
			// The metrics section remembers, unexported, what the user set.
			assert.Empty(t, cmp.Diff(tt.want, cfg, cmpopts.IgnoreUnexported(
				Config{}, AddressGrouping{}, NamedCIDR{}, metadata.XdpflowBytesMetricConfig{}, metadata.XdpflowConnectionsMetricConfig{}, metadata.XdpflowEventsDroppedMetricConfig{},
				metadata.XdpflowOverflowBytesMetricConfig{}, metadata.XdpflowOverflowPacketsMetricConfig{}, metadata.XdpflowPacketsMetricConfig{})))
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	cfg := createDefaultConfig()
	require.NoError(t, cfg.Validate())
	assert.Equal(t, []string{"lo"}, cfg.Interfaces)
	assert.Equal(t, []int{8080}, cfg.Ports)
	assert.Equal(t, 5, cfg.NewConnectionsPerEvent)
	assert.Equal(t, 10*time.Second, cfg.CollectionInterval)
	assert.Equal(t, time.Second, cfg.MinSnapshotInterval)
	assert.Equal(t, 65536, cfg.MaxConnections)
	assert.Equal(t, 5*time.Minute, cfg.IdleTimeout)
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no interfaces", func(c *Config) { c.Interfaces = nil }, "interfaces: at least one interface is required (e.g. [lo] or [eth0])"},
		{"empty interface", func(c *Config) { c.Interfaces = []string{""} }, "interfaces: empty interface name"},
		{"interface with spaces", func(c *Config) { c.Interfaces = []string{" eth0"} }, `interfaces: " eth0" has surrounding spaces`},
		{"blank interface", func(c *Config) { c.Interfaces = []string{" "} }, `interfaces: " " has surrounding spaces`},
		{"interface name too long", func(c *Config) { c.Interfaces = []string{"veth0123456789ab"} }, `interfaces: "veth0123456789ab" is longer than 15 bytes, the Linux limit`},
		{"interface name with slash", func(c *Config) { c.Interfaces = []string{"eth0/1"} }, `interfaces: "eth0/1" is not a valid interface name (no '/', ':' or white space)`},
		{"interface alias", func(c *Config) { c.Interfaces = []string{"eth0:1"} }, `interfaces: "eth0:1" is not a valid interface name (no '/', ':' or white space)`},
		{"bad pattern", func(c *Config) { c.Interfaces = []string{"eth[0-"} }, `interfaces: "eth[0-" is not a valid pattern (*, ?, [...]): syntax error in pattern`},
		{"pattern with spaces", func(c *Config) { c.Interfaces = []string{"eth* "} }, `interfaces: "eth* " has surrounding spaces`},
		{"bad exclude", func(c *Config) { c.ExcludeInterfaces = []string{" eth1"} }, `exclude_interfaces: " eth1" has surrounding spaces`},
		{"name included and excluded", func(c *Config) { c.Interfaces = []string{"eth0"}; c.ExcludeInterfaces = []string{"eth0"} }, "exclude_interfaces: eth0 is also listed in interfaces"},
		{"duplicate interfaces", func(c *Config) { c.Interfaces = []string{"lo", "eth0", "lo"} }, "interfaces: lo listed more than once"},
		{"attach mode", func(c *Config) { c.AttachMode = "offload" }, `attach_mode: "offload" is not one of auto, native, generic`},
		{"port 0", func(c *Config) { c.Ports = []int{0} }, "ports: 0 is out of range (1-65535; an empty list counts every port)"},
		{"port too big", func(c *Config) { c.Ports = []int{65536} }, "ports: 65536 is out of range (1-65535; an empty list counts every port)"},
		{"duplicate ports", func(c *Config) { c.Ports = []int{80, 443, 80} }, "ports: 80 listed more than once"},
		{"many duplicate ports", func(c *Config) { c.Ports = append(portRange(1, 100), portRange(1, 100)...) },
			"ports: 1, 2, 3, 4, 5 and 95 more listed more than once"},
		{"many ports out of range", func(c *Config) { c.Ports = append(portRange(65536, 65545), 0) },
			"ports: 65536, 65537, 65538, 65539, 65540 and 6 more are out of range (1-65535; an empty list counts every port)"},
		{"no protocols", func(c *Config) { c.Protocols = nil }, "protocols: at least one of tcp, udp is required"},
		{"unknown protocol", func(c *Config) { c.Protocols = []string{"sctp"} }, `protocols: "sctp" is not one of tcp, udp`},
		{"duplicate protocols", func(c *Config) { c.Protocols = []string{"tcp", "TCP"} }, "protocols: tcp listed more than once"},
		{"unknown direction", func(c *Config) { c.Directions = []string{"receive", "both"} }, `directions: "both" is not one of receive, transmit`},
		{"duplicate direction", func(c *Config) { c.Directions = []string{"receive", "receive"} }, "directions: receive listed more than once"},
		{"transmit only", func(c *Config) { c.Directions = []string{"transmit"} },
			"directions: receive is required (the XDP program always counts what arrives): use [receive] or [receive, transmit]"},
		{"no directions", func(c *Config) { c.Directions = nil },
			"directions: receive is required (the XDP program always counts what arrives): use [receive] or [receive, transmit]"},
		{"N zero", func(c *Config) { c.NewConnectionsPerEvent = 0 }, "new_connections_per_event: 0 is out of range (1-1048576)"},
		{"max connections zero", func(c *Config) { c.MaxConnections = 0 }, "max_connections: 0 is out of range (1-16777216)"},
		{"max connections too big", func(c *Config) { c.MaxConnections = 1<<24 + 1 }, "max_connections: 16777217 is out of range (1-16777216)"},
		{"collection interval zero", func(c *Config) { c.CollectionInterval = 0 }, "collection_interval: 0s is too short (at least 100ms, e.g. 10s)"},
		{"collection interval negative", func(c *Config) { c.CollectionInterval = -time.Second }, "collection_interval: -1s is too short (at least 100ms, e.g. 10s)"},
		{"collection interval 1ns", func(c *Config) { c.CollectionInterval = 1 }, "collection_interval: 1ns is too short (at least 100ms, e.g. 10s)"},
		{"min snapshot interval zero", func(c *Config) { c.MinSnapshotInterval = 0 }, "min_snapshot_interval: 0s is too short (at least 100ms, e.g. 1s)"},
		{"min snapshot interval 99ms", func(c *Config) { c.MinSnapshotInterval = 99 * time.Millisecond }, "min_snapshot_interval: 99ms is too short (at least 100ms, e.g. 1s)"},
		{"min snapshot above collection", func(c *Config) { c.MinSnapshotInterval = time.Minute }, "min_snapshot_interval: 1m0s must not exceed collection_interval (10s)"},
		{"idle timeout zero", func(c *Config) { c.IdleTimeout = 0 }, "idle_timeout: 0s is too short (at least 1s, e.g. 5m)"},
		{"idle timeout below a second", func(c *Config) { c.IdleTimeout = 500 * time.Millisecond }, "idle_timeout: 500ms is too short (at least 1s, e.g. 5m)"},
		{"attributes chosen", func(c *Config) {
			c.Metrics.XdpflowPackets.EnabledAttributes = c.Metrics.XdpflowPackets.EnabledAttributes[1:]
		},
			"metrics::xdpflow.packets::attributes: not supported: choose the attributes of every series with the receiver's attributes field, which groups connections in the kernel"},
		{"no attributes", func(c *Config) { c.Attributes = []string{} }, "attributes: at least one attribute is required (e.g. [source.address, destination.port])"},
		{"unknown attribute", func(c *Config) { c.Attributes = []string{"source.address", "network.type"} },
			`attributes: "network.type" is not one of source.address, source.port, destination.address, destination.port, network.transport, network.interface.name`},
		{"duplicate attribute", func(c *Config) { c.Attributes = []string{"source.port", "source.port"} }, "attributes: source.port listed more than once"},
		{"ipv4 prefix too long", func(c *Config) { c.SourceAddress.IPv4PrefixLength = 33 },
			"source_address::ipv4_prefix_length: 33 is out of range (1-32; 0 keeps the whole address)"},
		{"ipv6 prefix negative", func(c *Config) { c.SourceAddress.IPv6PrefixLength = -1 },
			"source_address::ipv6_prefix_length: -1 is out of range (1-128; 0 keeps the whole address)"},
		{"grouping a dropped address", func(c *Config) { c.DestinationAddress.IPv4PrefixLength = 24 },
			"destination_address: grouping destination.address needs destination.address in attributes"},
		{"match_cidrs without cidrs", func(c *Config) { c.SourceAddress.MatchCIDRs = true }, "source_address::match_cidrs: no cidrs are configured"},
		{"cidrs unused", func(c *Config) { c.CIDRs = []NamedCIDR{{CIDR: "10.0.0.0/8"}} }, "cidrs: set match_cidrs in source_address or destination_address to use them"},
		{"malformed cidr", func(c *Config) { c.SourceAddress.MatchCIDRs = true; c.CIDRs = []NamedCIDR{{CIDR: "10.0.0.0/33"}} },
			`cidrs[0]::cidr: "10.0.0.0/33" is not a CIDR such as 10.0.0.0/8 or fd00::/8`},
		{"cidr with host bits", func(c *Config) { c.SourceAddress.MatchCIDRs = true; c.CIDRs = []NamedCIDR{{CIDR: "10.1.2.3/16"}} },
			"cidrs[0]::cidr: CIDR 10.1.2.3/16 has host bits set (the prefix is 10.1.0.0/16)"},
		{"cidr of everything", func(c *Config) { c.SourceAddress.MatchCIDRs = true; c.CIDRs = []NamedCIDR{{CIDR: "0.0.0.0/0"}} },
			`cidrs[0]::cidr: CIDR 0.0.0.0/0 holds every address: group the rest as "other" instead`},
		{"mapped cidr", func(c *Config) {
			c.SourceAddress.MatchCIDRs = true
			c.CIDRs = []NamedCIDR{{CIDR: "::ffff:10.0.0.0/104"}}
		},
			"cidrs[0]::cidr: CIDR ::ffff:10.0.0.0/104 is IPv4-mapped: write it as IPv4"},
		{"duplicate cidr", func(c *Config) {
			c.SourceAddress.MatchCIDRs = true
			c.CIDRs = []NamedCIDR{{CIDR: "10.0.0.0/8", Name: "a"}, {CIDR: "10.0.0.0/8", Name: "b"}}
		}, "cidrs[1]::cidr: 10.0.0.0/8 is listed more than once"},
		{"cidr named other", func(c *Config) {
			c.SourceAddress.MatchCIDRs = true
			c.OutsideCIDRs = "other"
			c.CIDRs = []NamedCIDR{{CIDR: "10.0.0.0/8", Name: "other"}}
		}, `cidrs[0]::name: "other" names the series outside every CIDR (outside_cidrs: other)`},
		{"outside cidrs", func(c *Config) { c.OutsideCIDRs = "drop" }, `outside_cidrs: "drop" is not one of address, other`},
		{"relative state directory", func(c *Config) { c.StateDirectory = "bpf/xdpflow" },
			`state_directory: "bpf/xdpflow" is not an absolute path (e.g. /sys/fs/bpf/xdpflow)`},
		{"unchanged interval below collection", func(c *Config) { c.ExportChangedOnly = true; c.UnchangedExportInterval = 5 * time.Second },
			"unchanged_export_interval: 5s must be at least collection_interval (10s)"},
		{"aggregation strategy", func(c *Config) { c.Metrics.XdpflowBytes.AggregationStrategy = "max" },
			`metrics::xdpflow.bytes::aggregation_strategy: only "sum" is supported, got "max"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := createDefaultConfig()
			tt.modify(cfg)
			err := cfg.Validate()
			require.Error(t, err)
			assert.Equal(t, tt.want, err.Error())
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.Ports = []int{0}
	cfg.IdleTimeout = 0
	err := cfg.Validate()
	require.Error(t, err)
	assert.Len(t, strings.Split(err.Error(), "\n"), 2)
}

// Ports are whole numbers: YAML hands the decoder 80.5 as a float, which it
// would truncate to 80, and numbers beyond the integer range, which it
// would wrap.
func TestUnmarshalRejectsPortsThatAreNotWholeNumbers(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"ports: [80.5]", "ports: 80.5 is not a whole number (1-65535)"},
		{"ports: [443, 99999999999999999999]", "ports: 100000000000000000000 is out of range (1-65535)"},
		{"ports: [18446744073709551615]", "ports: 18446744073709551615 is out of range (1-65535)"},
		{"ports: [-1e3]", "ports: -1000 is out of range (1-65535)"},
		{"ports: [\"80\"]", "expected type 'int', got unconvertible type 'string'"},
	} {
		t.Run(tt.yaml, func(t *testing.T) {
			retrieved, err := confmap.NewRetrievedFromYAML([]byte(tt.yaml))
			require.NoError(t, err)
			conf, err := retrieved.AsConf()
			require.NoError(t, err)
			require.ErrorContains(t, conf.Unmarshal(createDefaultConfig()), tt.want)
		})
	}
	retrieved, err := confmap.NewRetrievedFromYAML([]byte("ports: [80, 8080.0, 0x1bb]"))
	require.NoError(t, err)
	conf, err := retrieved.AsConf()
	require.NoError(t, err)
	cfg := createDefaultConfig()
	require.NoError(t, conf.Unmarshal(cfg))
	assert.Equal(t, []int{80, 8080, 443}, cfg.Ports)
}

func TestInterfacesMatchNamesAndPatternsButNotExclusions(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.Interfaces = []string{"lo", "eth*", "ens[0-9]", "veth?x"}
	cfg.ExcludeInterfaces = []string{"eth9", "ens[5-9]"}
	require.NoError(t, cfg.Validate())
	for name, want := range map[string]bool{
		"lo": true, "eth0": true, "eth10": true, "ens3": true, "vethAx": true,
		"eth9": false, "ens5": false, "ens10": false, "lo0": false, "wlan0": false, "vethABx": false,
	} {
		assert.Equal(t, want, cfg.attachable(name), name)
	}
	assert.Equal(t, []string{"lo"}, cfg.namedInterfaces())
	assert.Empty(t, cfg.missingInterfaces(map[string]int{"lo": 1, "eth0": 2}, nil))
	assert.Equal(t, []string{"lo"}, cfg.missingInterfaces(map[string]int{"lo": 1}, []string{"lo"}), "attached, but gone with the interface")
	assert.Equal(t, []string{"lo"}, cfg.missingInterfaces(map[string]int{"eth0": 2}, nil))
}

func TestValidateRejectsMoreCIDRsThanTheKernelHolds(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.SourceAddress.MatchCIDRs = true
	for i := range datapath.MaxCIDRs + 1 {
		cfg.CIDRs = append(cfg.CIDRs, NamedCIDR{CIDR: fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)})
	}
	require.EqualError(t, cfg.Validate(), "cidrs: 16385 are more than the 16384 the kernel table holds")
	cfg.CIDRs = cfg.CIDRs[:datapath.MaxCIDRs]
	require.NoError(t, cfg.Validate())
}

// portRange returns the ports from first to last.
func portRange(first, last int) []int {
	var ports []int
	for p := first; p <= last; p++ {
		ports = append(ports, p)
	}
	return ports
}
