package xdpflowreceiver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
	"github.com/xdpflow/xdpflowreceiver/internal/metadata"
)

// The metrics are built by hand (metrics.go), because mdatagen's builder
// has one start time for every point and a connection's series starts
// with its first packet. This test holds the hand-written metrics to
// metadata.yaml: what mdatagen's builder emits for one point of each
// metric must describe the same metrics as what the receiver emits.
func TestMetricsMatchMetadata(t *testing.T) {
	t.Run("default attributes", func(t *testing.T) {
		var flows datapath.FlowTable
		flows.Append(testKey("198.51.100.1", 40000, 8080, datapath.TCP, 2), testValue(12, 1500, 1, 9))
		checkMetricsMatchMetadata(t, testBuilder(), &flows, metadata.NewDefaultMetricsBuilderConfig())
	})
	t.Run("every attribute", func(t *testing.T) {
		var flows datapath.FlowTable
		k := testKey("198.51.100.1", 40000, 8080, datapath.TCP, 2)
		k.SrcAddr[15], k.SrcPrefix = 0, 24
		k.DstAddr = netip.MustParseAddr("::ffff:10.244.0.0").As16()
		k.DstPrefix = 16
		flows.Append(k, testValue(12, 1500, 1, 9))
		b := testBuilder()
		b.dims = datapath.Dimensions{SrcAddr: true, SrcPort: true, DstAddr: true, DstPort: true, Proto: true, Ifindex: true}
		b.cidrNames = cidrNameTable{
			netip.MustParsePrefix("198.51.100.0/24"): "clients",
			netip.MustParsePrefix("10.244.0.0/16"):   "pods",
		}
		mbc := metadata.NewDefaultMetricsBuilderConfig()
		mbc.Metrics.XdpflowPackets.EnabledAttributes = nil
		mbc.Metrics.XdpflowBytes.EnabledAttributes = nil
		for _, a := range metadata.MetricsInfo.XdpflowPackets.Attributes {
			mbc.Metrics.XdpflowPackets.EnabledAttributes = append(mbc.Metrics.XdpflowPackets.EnabledAttributes, metadata.XdpflowPacketsMetricAttributeKey(a))
			mbc.Metrics.XdpflowBytes.EnabledAttributes = append(mbc.Metrics.XdpflowBytes.EnabledAttributes, metadata.XdpflowBytesMetricAttributeKey(a))
		}
		checkMetricsMatchMetadata(t, b, &flows, mbc)
	})
}

// checkMetricsMatchMetadata compares what b builds of flows with what
// mdatagen's builder configured with mbc emits.
func checkMetricsMatchMetadata(t *testing.T, b metricsBuilder, flows *datapath.FlowTable, mbc metadata.MetricsBuilderConfig) {
	t.Helper()
	s := snapshot{time: testEpoch.Add(10 * time.Second), flows: flows, evicted: &datapath.FlowTable{}, connections: 1}
	got := metricsByName(b.build(&s, 0, s.flowCount()))
	want := metricsByName(generatedMetrics(mbc))
	require.ElementsMatch(t, keysOf(want), keysOf(got), "metric names")
	for name, w := range want {
		g := got[name]
		assert.Equal(t, w.Description(), g.Description(), "%s description", name)
		assert.Equal(t, w.Unit(), g.Unit(), "%s unit", name)
		require.Equal(t, w.Type(), g.Type(), "%s type", name)
		if w.Type() == pmetric.MetricTypeSum {
			assert.Equal(t, w.Sum().IsMonotonic(), g.Sum().IsMonotonic(), "%s monotonic", name)
			assert.Equal(t, w.Sum().AggregationTemporality(), g.Sum().AggregationTemporality(), "%s temporality", name)
		}
		assert.ElementsMatch(t, attributeKeys(w), attributeKeys(g), "%s attributes", name)
	}
}

// generatedMetrics records one point of every metric through mdatagen's
// builder, which emits the attributes mbc enables.
func generatedMetrics(mbc metadata.MetricsBuilderConfig) pmetric.Metrics {
	mb := metadata.NewMetricsBuilder(mbc, receivertest.NewNopSettings(metadata.Type))
	ts := pcommon.NewTimestampFromTime(testEpoch)
	tcp, ipv4 := metadata.AttributeNetworkTransportTCP, metadata.AttributeNetworkTypeIpv4
	mb.RecordXdpflowPacketsDataPoint(ts, 1, "198.51.100.0", 40000, "10.244.0.0", 8080, tcp, ipv4, "eth0", metadata.AttributeNetworkIoDirectionTransmit, "198.51.100.0/24", "clients", "10.244.0.0/16", "pods")
	mb.RecordXdpflowBytesDataPoint(ts, 1, "198.51.100.0", 40000, "10.244.0.0", 8080, tcp, ipv4, "eth0", metadata.AttributeNetworkIoDirectionTransmit, "198.51.100.0/24", "clients", "10.244.0.0/16", "pods")
	mb.RecordXdpflowOverflowPacketsDataPoint(ts, 1)
	mb.RecordXdpflowOverflowBytesDataPoint(ts, 1)
	mb.RecordXdpflowEventsDroppedDataPoint(ts, 1)
	mb.RecordXdpflowConnectionsDataPoint(ts, 1)
	return mb.Emit()
}

func metricsByName(md pmetric.Metrics) map[string]pmetric.Metric {
	byName := map[string]pmetric.Metric{}
	ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	for i := range ms.Len() {
		byName[ms.At(i).Name()] = ms.At(i)
	}
	return byName
}

func keysOf(m map[string]pmetric.Metric) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// attributeKeys lists the attribute keys of m's first data point.
func attributeKeys(m pmetric.Metric) []string {
	var attrs pcommon.Map
	switch m.Type() {
	case pmetric.MetricTypeSum:
		attrs = m.Sum().DataPoints().At(0).Attributes()
	case pmetric.MetricTypeGauge:
		attrs = m.Gauge().DataPoints().At(0).Attributes()
	}
	var keys []string
	for k := range attrs.All() {
		keys = append(keys, k)
	}
	return keys
}
