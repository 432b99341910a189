package xdpflowreceiver

import (
	"flag"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
	"github.com/xdpflow/xdpflowreceiver/internal/metadata"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/")

// kernelBase is the kernel time, in ns, that testEpoch maps to.
const kernelBase = 1_000_000_000_000

// testEpoch is the wall-clock time of kernel time kernelBase in golden files.
var testEpoch = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func testBuilder() metricsBuilder {
	return metricsBuilder{
		start:   pcommon.NewTimestampFromTime(testEpoch.Add(-time.Hour)),
		clock:   datapath.NewClockOffset(testEpoch, kernelBase),
		ifnames: map[uint32]string{2: "eth0", 3: "eth1"},
		version: "test",
		metrics: metadata.DefaultMetricsConfig(),
		dims:    datapath.ConnectionDimensions(),
	}
}

// testKey builds the key of a connection from addr:sport to dport.
func testKey(addr string, sport, dport uint16, proto datapath.Protocol, ifindex uint32) datapath.FlowKey {
	a := netip.MustParseAddr(addr)
	k := datapath.FlowKey{SrcAddr: a.As16(), SrcPort: sport, DstPort: dport, Proto: proto, Ifindex: ifindex, Family: datapath.FamilyIPv6}
	if a.Is4() {
		k.Family = datapath.FamilyIPv4
	}
	return k
}

// testValue is a flow first seen firstS seconds and last seen lastS seconds
// after testEpoch.
func testValue(packets, bytes uint64, firstS, lastS int) datapath.FlowValue {
	return datapath.FlowValue{
		Packets:     packets,
		Bytes:       bytes,
		FirstSeenNs: kernelBase + uint64(firstS)*uint64(time.Second),
		LastSeenNs:  kernelBase + uint64(lastS)*uint64(time.Second),
	}
}

func TestBuildMetricsGolden(t *testing.T) {
	var flows, evicted datapath.FlowTable
	// IPv4 TCP and UDP, IPv6 TCP, and a non-first fragment (ports 0).
	flows.Append(testKey("198.51.100.1", 40000, 8080, datapath.TCP, 2), testValue(12, 1500, 1, 9))
	flows.Append(testKey("198.51.100.7", 5353, 8080, datapath.UDP, 3), testValue(3, 300, 2, 3))
	flows.Append(testKey("fd00:db8::1", 41000, 8080, datapath.TCP, 2), testValue(7, 900, 4, 8))
	flows.Append(testKey("198.51.100.9", 0, 0, datapath.UDP, 2), testValue(1, 1514, 5, 5))
	// A connection evicted with its final counts, which came back later
	// and is a new series with a later start time.
	evicted.Append(testKey("198.51.100.2", 40001, 8080, datapath.TCP, 2), testValue(20, 2000, 0, 2))
	flows.Append(testKey("198.51.100.2", 40001, 8080, datapath.TCP, 2), testValue(2, 150, 8, 9))

	b := testBuilder()
	s := snapshot{
		time:        testEpoch.Add(10 * time.Second),
		flows:       &flows,
		evicted:     &evicted,
		stats:       datapath.Stats{OverflowPackets: 84, OverflowBytes: 5040, RingbufDrops: 3},
		connections: flows.Len(),
	}
	// As after a failed export: the final counts were carried over, and
	// the returning series is stamped one seriesStep later.
	s.later = laterSeries(&s, evicted.Len())
	md := b.build(&s, 0, s.flowCount())

	path := filepath.Join("testdata", "metrics", "snapshot.yaml")
	if *updateGolden {
		require.NoError(t, golden.WriteMetricsToFile(path, md, golden.SkipMetricTimestampNormalization()))
	}
	want, err := golden.ReadMetrics(path)
	require.NoError(t, err)
	require.NoError(t, pmetrictest.CompareMetrics(want, md, pmetrictest.IgnoreMetricDataPointsOrder()))
}

func TestBuildMetricsEmpty(t *testing.T) {
	b := testBuilder()
	md := b.build(&snapshot{time: testEpoch, flows: &datapath.FlowTable{}, evicted: &datapath.FlowTable{}}, 0, 0)
	path := filepath.Join("testdata", "metrics", "empty.yaml")
	if *updateGolden {
		require.NoError(t, golden.WriteMetricsToFile(path, md, golden.SkipMetricTimestampNormalization()))
	}
	want, err := golden.ReadMetrics(path)
	require.NoError(t, err)
	require.NoError(t, pmetrictest.CompareMetrics(want, md))
}

func TestDisabledMetricsAreNotEmitted(t *testing.T) {
	var flows datapath.FlowTable
	flows.Append(testKey("198.51.100.1", 40000, 8080, datapath.TCP, 2), testValue(12, 1500, 1, 9))
	s := snapshot{time: testEpoch.Add(10 * time.Second), flows: &flows, evicted: &datapath.FlowTable{}, connections: 1}
	b := testBuilder()
	b.metrics.XdpflowPackets.Enabled = false
	b.metrics.XdpflowOverflowBytes.Enabled = false
	b.metrics.XdpflowConnections.Enabled = false
	got := metricsByName(b.build(&s, 0, s.flowCount()))
	require.ElementsMatch(t, []string{metricBytes, metricOverflowPackets, metricEventsDropped}, keysOf(got))
	require.Equal(t, 1, got[metricBytes].Sum().DataPoints().Len())
	require.Equal(t, 7, got[metricBytes].Sum().DataPoints().At(0).Attributes().Len())

	b.metrics.XdpflowBytes.Enabled = false
	got = metricsByName(b.build(&s, 0, s.flowCount()))
	require.ElementsMatch(t, []string{metricOverflowPackets, metricEventsDropped}, keysOf(got))
}

// TestTransmitAttributes checks that the two directions of one connection
// carry the same attributes but network.io.direction: the remote side as
// source.address and source.port, the local port as destination.port, so
// that one on(...) clause joins them.
func TestTransmitAttributes(t *testing.T) {
	b := testBuilder()
	rx := testKey("198.51.100.1", 40000, 8080, datapath.TCP, 2)
	tx := rx
	tx.Direction = datapath.Transmit
	var flows datapath.FlowTable
	flows.Append(rx, testValue(3, 300, 1, 2))
	flows.Append(tx, testValue(5, 5000, 1, 2))
	s := snapshot{time: testEpoch.Add(10 * time.Second), flows: &flows, evicted: &datapath.FlowTable{}, connections: 2}
	points := metricsByName(b.build(&s, 0, s.flowCount()))[metricBytes].Sum().DataPoints()
	require.Equal(t, 2, points.Len())
	want := map[string]any{"source.address": "198.51.100.1", "source.port": int64(40000), "destination.port": int64(8080),
		"network.transport": "tcp", "network.type": "ipv4", "network.interface.name": "eth0"}
	for i, dir := range []string{"receive", "transmit"} {
		want["network.io.direction"] = dir
		assert.Equal(t, want, points.At(i).Attributes().AsRaw(), "%s point", dir)
	}
	assert.Equal(t, int64(300), points.At(0).IntValue())
	assert.Equal(t, int64(5000), points.At(1).IntValue())
}

// Aggregated addresses are exported as their prefix's network address, the
// prefix, and the name of a configured CIDR; "other" has only the name.
func TestGroupedAddressAttributes(t *testing.T) {
	b := testBuilder()
	b.dims = datapath.Dimensions{SrcAddr: true, DstAddr: true, DstPort: true}
	b.cidrNames = cidrNameTable{netip.MustParsePrefix("10.244.0.0/16"): "pods", netip.MustParsePrefix("fd00:10::/56"): ""}
	key := func(src, dst string, sprefix, dprefix uint8) datapath.FlowKey {
		k := testKey(src, 0, 8080, 0, 0)
		k.DstAddr = netip.MustParseAddr(dst).As16() // IPv4-mapped for IPv4
		k.SrcPrefix, k.DstPrefix = sprefix, dprefix
		return k
	}
	var flows datapath.FlowTable
	flows.Append(key("198.51.100.0", "10.244.0.0", 24, 16), testValue(1, 100, 0, 0))
	flows.Append(key("0.0.0.0", "198.51.100.2", datapath.PrefixOther, datapath.PrefixWhole), testValue(2, 200, 0, 0))
	flows.Append(key("fd00:db8::", "fd00:10::", 64, 56), testValue(3, 300, 0, 0))
	s := snapshot{time: testEpoch, flows: &flows, evicted: &datapath.FlowTable{}}
	points := b.build(&s, 0, s.flowCount()).ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Sum().DataPoints()
	want := []map[string]any{
		{"source.address": "198.51.100.0", "xdpflow.source.cidr": "198.51.100.0/24", "destination.address": "10.244.0.0",
			"xdpflow.destination.cidr": "10.244.0.0/16", "xdpflow.destination.cidr.name": "pods", "destination.port": int64(8080), "network.type": "ipv4", "network.io.direction": "receive"},
		{"xdpflow.source.cidr.name": "other", "destination.address": "198.51.100.2", "destination.port": int64(8080), "network.type": "ipv4", "network.io.direction": "receive"},
		{"source.address": "fd00:db8::", "xdpflow.source.cidr": "fd00:db8::/64", "destination.address": "fd00:10::",
			"xdpflow.destination.cidr": "fd00:10::/56", "destination.port": int64(8080), "network.type": "ipv6", "network.io.direction": "receive"},
	}
	require.Equal(t, len(want), points.Len())
	for i, w := range want {
		assert.Equal(t, w, points.At(i).Attributes().AsRaw(), "point %d", i)
	}
}
