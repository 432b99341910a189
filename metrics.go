package xdpflowreceiver

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// Names and units of the metrics the receiver emits.
const (
	scopeName = "github.com/xdpflow/xdpflowreceiver"

	metricPackets         = "xdpflow.packets"
	metricBytes           = "xdpflow.bytes"
	metricOverflowPackets = "xdpflow.overflow.packets"
	metricOverflowBytes   = "xdpflow.overflow.bytes"
	metricEventsDropped   = "xdpflow.events.dropped"
	metricConnections     = "xdpflow.connections"
)

// Attribute keys, from the OpenTelemetry semantic conventions.
const (
	attrSourceAddress    = "source.address"
	attrSourcePort       = "source.port"
	attrDestinationPort  = "destination.port"
	attrNetworkTransport = "network.transport"
	attrNetworkType      = "network.type"
	attrInterfaceName    = "network.interface.name"
)

// snapshot is everything one export is built from.
type snapshot struct {
	// time is the Timestamp of every data point.
	time time.Time
	// flows are the connections in the kernel table; evicted are those
	// removed from it, exported with their final counts.
	flows, evicted *datapath.FlowTable
	stats          datapath.Stats
	// connections is the number of entries left in the kernel table.
	connections int
}

// metricsBuilder converts snapshots into OTLP metrics.
type metricsBuilder struct {
	// start is the StartTimestamp of the receiver-wide cumulative sums.
	start   pcommon.Timestamp
	clock   datapath.ClockOffset
	ifnames map[uint32]string
	version string
}

func (b *metricsBuilder) build(s snapshot) pmetric.Metrics {
	md := pmetric.NewMetrics()
	sm := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(scopeName)
	sm.Scope().SetVersion(b.version)
	now := pcommon.NewTimestampFromTime(s.time)

	packets := newSum(sm.Metrics(), metricPackets, "{packet}", "Packets received per connection.")
	bytes := newSum(sm.Metrics(), metricBytes, "By", "Bytes received per connection, whole frames from the Ethernet header on.")
	n := s.flows.Len() + s.evicted.Len()
	packets.DataPoints().EnsureCapacity(n)
	bytes.DataPoints().EnsureCapacity(n)
	for _, t := range []*datapath.FlowTable{s.flows, s.evicted} {
		for i := range t.Keys {
			b.appendFlow(packets, bytes, &t.Keys[i], &t.Values[i], now)
		}
	}

	b.appendCounter(sm.Metrics(), metricOverflowPackets, "{packet}", "Packets not attributed to a connection because the flow table was full.", s.stats.OverflowPackets, now)
	b.appendCounter(sm.Metrics(), metricOverflowBytes, "By", "Bytes not attributed to a connection because the flow table was full.", s.stats.OverflowBytes, now)
	b.appendCounter(sm.Metrics(), metricEventsDropped, "{event}", "New-connection events lost because the ring buffer was full; their connections are still read by the next snapshot.", s.stats.RingbufDrops, now)

	g := sm.Metrics().AppendEmpty()
	g.SetName(metricConnections)
	g.SetUnit("{connection}")
	g.SetDescription("Connections in the kernel flow table.")
	dp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(now)
	dp.SetIntValue(int64(s.connections))
	return md
}

func newSum(ms pmetric.MetricSlice, name, unit, desc string) pmetric.Sum {
	m := ms.AppendEmpty()
	m.SetName(name)
	m.SetUnit(unit)
	m.SetDescription(desc)
	sum := m.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	return sum
}

func (b *metricsBuilder) appendCounter(ms pmetric.MetricSlice, name, unit, desc string, v uint64, now pcommon.Timestamp) {
	dp := newSum(ms, name, unit, desc).DataPoints().AppendEmpty()
	dp.SetStartTimestamp(b.start)
	dp.SetTimestamp(now)
	dp.SetIntValue(int64(v))
}

// appendFlow adds one connection's packets and bytes points. Their start
// time is the connection's first packet, so a connection that is evicted
// and comes back starts a new series.
func (b *metricsBuilder) appendFlow(packets, bytes pmetric.Sum, k *datapath.FlowKey, v *datapath.FlowValue, now pcommon.Timestamp) {
	start := pcommon.NewTimestampFromTime(b.clock.Wall(v.FirstSeenNs))
	p := packets.DataPoints().AppendEmpty()
	p.SetStartTimestamp(start)
	p.SetTimestamp(now)
	p.SetIntValue(int64(v.Packets))
	b.putFlowAttributes(p.Attributes(), k)

	by := bytes.DataPoints().AppendEmpty()
	by.SetStartTimestamp(start)
	by.SetTimestamp(now)
	by.SetIntValue(int64(v.Bytes))
	p.Attributes().CopyTo(by.Attributes())
}

func (b *metricsBuilder) putFlowAttributes(attrs pcommon.Map, k *datapath.FlowKey) {
	attrs.EnsureCapacity(6)
	attrs.PutStr(attrSourceAddress, k.Addr().String())
	attrs.PutInt(attrSourcePort, int64(k.SrcPort))
	attrs.PutInt(attrDestinationPort, int64(k.DstPort))
	attrs.PutStr(attrNetworkTransport, k.Proto.String())
	if k.Family == datapath.FamilyIPv4 {
		attrs.PutStr(attrNetworkType, "ipv4")
	} else {
		attrs.PutStr(attrNetworkType, "ipv6")
	}
	attrs.PutStr(attrInterfaceName, b.ifnames[k.Ifindex])
}
