package xdpflowreceiver

import (
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
	var flows datapath.FlowTable
	flows.Append(testKey("198.51.100.1", 40000, 8080, datapath.TCP, 2), testValue(12, 1500, 1, 9))
	b := testBuilder()
	s := snapshot{time: testEpoch.Add(10 * time.Second), flows: &flows, evicted: &datapath.FlowTable{}, connections: 1}
	got := metricsByName(b.build(&s, 0, s.flowCount()))

	want := metricsByName(generatedMetrics())
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
// builder.
func generatedMetrics() pmetric.Metrics {
	mb := metadata.NewMetricsBuilder(metadata.NewDefaultMetricsBuilderConfig(), receivertest.NewNopSettings(metadata.Type))
	ts := pcommon.NewTimestampFromTime(testEpoch)
	mb.RecordXdpflowPacketsDataPoint(ts, 1, "198.51.100.1", 40000, 8080, metadata.AttributeNetworkTransportTCP, metadata.AttributeNetworkTypeIpv4, "eth0")
	mb.RecordXdpflowBytesDataPoint(ts, 1, "198.51.100.1", 40000, 8080, metadata.AttributeNetworkTransportTCP, metadata.AttributeNetworkTypeIpv4, "eth0")
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
