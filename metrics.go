package xdpflowreceiver

import (
	"net/netip"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
	"github.com/xdpflow/xdpflowreceiver/internal/metadata"
)

// Names of the metrics the receiver emits (metadata.yaml).
var (
	metricPackets         = metadata.MetricsInfo.XdpflowPackets.Name
	metricBytes           = metadata.MetricsInfo.XdpflowBytes.Name
	metricOverflowPackets = metadata.MetricsInfo.XdpflowOverflowPackets.Name
	metricOverflowBytes   = metadata.MetricsInfo.XdpflowOverflowBytes.Name
	metricEventsDropped   = metadata.MetricsInfo.XdpflowEventsDropped.Name
	metricConnections     = metadata.MetricsInfo.XdpflowConnections.Name
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
	// later maps the index (in flow order) of a connection that is not
	// the first in the snapshot with its key to how many came before it.
	// See laterSeries.
	later map[int]int
}

// seriesStep separates the timestamps of two series of one connection key
// in one snapshot. Prometheus has millisecond timestamps and rejects two
// samples of one series (its labels ignore start times) at one timestamp.
const seriesStep = time.Millisecond

// laterSeries finds the connections of s whose key already came earlier in
// flow order: an evicted connection whose final counts wait since a failed
// export (the first carried evicted flows of s), and which came back (a
// live entry) or was evicted again. A key can repeat only if one of those
// carried finals holds it, so without any (the usual case) it returns nil
// at no cost.
func laterSeries(s *snapshot, carried int) map[int]int {
	if carried == 0 {
		return nil
	}
	seen := make(map[datapath.FlowKey]int, carried)
	later := map[int]int{}
	for i := range s.flowCount() {
		k, _ := s.flow(i)
		n, ok := seen[*k]
		if n > 0 {
			later[i] = n
		}
		if ok || i < carried {
			seen[*k] = n + 1
		}
	}
	return later
}

// metricsBuilder converts snapshots into OTLP metrics.
type metricsBuilder struct {
	// start is the StartTimestamp of the receiver-wide cumulative sums.
	start   pcommon.Timestamp
	clock   datapath.ClockOffset
	ifnames map[uint32]string
	version string
	// metrics says which metrics are enabled.
	metrics metadata.MetricsConfig
	// dims are the attributes a series carries (attributes), cidrNames
	// the names of the configured CIDRs.
	dims      datapath.Dimensions
	cidrNames cidrNameTable
	// aggregates is set when addresses may stand for prefixes.
	aggregates bool
}

// newMetricsBuilder returns the builder of the metrics cfg asks for.
func newMetricsBuilder(cfg *Config, version string) metricsBuilder {
	return metricsBuilder{
		version:    version,
		metrics:    cfg.Metrics,
		dims:       cfg.dimensions(),
		cidrNames:  cfg.cidrNames(),
		aggregates: cfg.SourceAddress != (AddressGrouping{}) || cfg.DestinationAddress != (AddressGrouping{}),
	}
}

// begin readies b for the snapshots of a started receiver: kernel times
// convert with clock, and the receiver-wide sums start now. A table kept
// in the state directory (st) started earlier: its sums began then, and
// its times convert with the offset of then, unless the wall clock has
// stepped since.
func (b *metricsBuilder) begin(clock datapath.ClockOffset, st datapath.StateReport) {
	b.clock = clock
	b.start = pcommon.NewTimestampFromTime(time.Now())
	b.ifnames = map[uint32]string{}
	if st.Started.IsZero() {
		return
	}
	b.start = pcommon.NewTimestampFromTime(st.Started)
	if d := clock.Sub(st.Clock); d <= clockStepThreshold && d >= -clockStepThreshold {
		b.clock = st.Clock
	}
}

// maxFlowsPerExport bounds the connections in one export (one
// ConsumeMetrics call): the pdata of a snapshot of a million connections
// is never all in memory at once.
const maxFlowsPerExport = 8192

// flowCount is the number of connections in s: evicted, then live.
func (s *snapshot) flowCount() int { return s.evicted.Len() + s.flows.Len() }

// flow returns the i-th connection of s, counting evicted flows first, so
// that an ended series comes before the one that follows it.
func (s *snapshot) flow(i int) (*datapath.FlowKey, *datapath.FlowValue) {
	if i < s.evicted.Len() {
		return &s.evicted.Keys[i], &s.evicted.Values[i]
	}
	i -= s.evicted.Len()
	return &s.flows.Keys[i], &s.flows.Values[i]
}

// timestamp is the Timestamp of the i-th connection's points: the
// snapshot's time, one seriesStep later for each earlier series of the
// same key.
func (s *snapshot) timestamp(i int, now pcommon.Timestamp) pcommon.Timestamp {
	if n := s.later[i]; n > 0 {
		return now + pcommon.Timestamp(n)*pcommon.Timestamp(seriesStep)
	}
	return now
}

// build converts connections [from, to) of s into metrics; the export
// that starts at 0 also carries the receiver-wide metrics.
func (b *metricsBuilder) build(s *snapshot, from, to int) pmetric.Metrics {
	md := pmetric.NewMetrics()
	sm := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(metadata.ScopeName)
	sm.Scope().SetVersion(b.version)
	now := pcommon.NewTimestampFromTime(s.time)

	if b.metrics.XdpflowPackets.Enabled || b.metrics.XdpflowBytes.Enabled {
		b.appendFlows(sm.Metrics(), s, from, to, now)
	}
	if from == 0 {
		b.appendTotals(sm.Metrics(), s, now)
	}
	return md
}

// appendFlows adds connections [from, to) of s to the enabled
// per-connection metrics.
func (b *metricsBuilder) appendFlows(ms pmetric.MetricSlice, s *snapshot, from, to int, now pcommon.Timestamp) {
	packets := newSum(ms, metricPackets, "{packet}", "Packets per connection and direction; transmitted, as the wire carries them (a GSO packet as its segments).")
	bytes := newSum(ms, metricBytes, "By", "Bytes per connection and direction, whole frames from the Ethernet header on; transmitted, as the wire carries them (a GSO packet's headers repeated in each segment).")
	packets.DataPoints().EnsureCapacity(to - from)
	bytes.DataPoints().EnsureCapacity(to - from)
	for i := from; i < to; i++ {
		k, v := s.flow(i)
		b.appendFlow(packets, bytes, k, v, s.timestamp(i, now))
	}
	// Built together, since bytes copies the attributes of packets;
	// dropped here when disabled.
	ms.RemoveIf(func(m pmetric.Metric) bool {
		return m.Name() == metricPackets && !b.metrics.XdpflowPackets.Enabled ||
			m.Name() == metricBytes && !b.metrics.XdpflowBytes.Enabled
	})
}

// appendTotals adds the receiver-wide metrics: overflow, dropped events,
// and the size of the flow table.
func (b *metricsBuilder) appendTotals(ms pmetric.MetricSlice, s *snapshot, now pcommon.Timestamp) {
	if b.metrics.XdpflowOverflowPackets.Enabled {
		b.appendCounter(ms, metricOverflowPackets, "{packet}", "Packets not attributed to a connection because the flow table was full.", s.stats.OverflowPackets, now)
	}
	if b.metrics.XdpflowOverflowBytes.Enabled {
		b.appendCounter(ms, metricOverflowBytes, "By", "Bytes not attributed to a connection because the flow table was full.", s.stats.OverflowBytes, now)
	}
	if b.metrics.XdpflowEventsDropped.Enabled {
		b.appendCounter(ms, metricEventsDropped, "{event}", "New-connection events lost because the ring buffer was full; their connections are still read by the next snapshot.", s.stats.RingbufDrops, now)
	}
	if !b.metrics.XdpflowConnections.Enabled {
		return
	}
	g := ms.AppendEmpty()
	g.SetName(metricConnections)
	g.SetUnit("{connection}")
	g.SetDescription("Connections in the kernel flow table.")
	dp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(now)
	dp.SetIntValue(int64(s.connections))
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
	attrs.EnsureCapacity(b.attributeCount())
	if b.dims.SrcAddr {
		b.putAddress(attrs, k.Source(), k.SrcPrefix, attrSourceAddress, attrSourceCIDR, attrSourceCIDRName)
	}
	if b.dims.SrcPort {
		attrs.PutInt(attrSourcePort, int64(k.SrcPort))
	}
	if b.dims.DstAddr {
		b.putAddress(attrs, k.Destination(), k.DstPrefix, attrDestinationAddress, attrDestinationCIDR, attrDestinationCIDRName)
	}
	if b.dims.DstPort {
		attrs.PutInt(attrDestinationPort, int64(k.DstPort))
	}
	if b.dims.Proto {
		attrs.PutStr(attrNetworkTransport, k.Proto.String())
	}
	switch k.Family {
	case datapath.FamilyIPv4:
		attrs.PutStr(attrNetworkType, "ipv4")
	case datapath.FamilyIPv6:
		attrs.PutStr(attrNetworkType, "ipv6")
	}
	if b.dims.Ifindex {
		attrs.PutStr(attrInterfaceName, b.ifnames[k.Ifindex])
	}
	attrs.PutStr(attrNetworkIODirection, k.Direction.String())
}

// attributeCount is how many attributes a series carries at most: the
// dimensions kept, network.type, network.io.direction, and the prefix and name of each
// aggregated address.
func (b *metricsBuilder) attributeCount() int {
	n := 2 // network.type, network.io.direction
	for _, kept := range []bool{b.dims.SrcAddr, b.dims.SrcPort, b.dims.DstAddr, b.dims.DstPort, b.dims.Proto, b.dims.Ifindex} {
		if kept {
			n++
		}
	}
	if len(b.cidrNames) > 0 || b.aggregates {
		n += 4
	}
	return n
}

// putAddress adds the attributes of an address the kernel may have
// aggregated: the address itself; or the prefix's network address, the
// prefix, and the name of a configured CIDR; or only the name "other".
func (b *metricsBuilder) putAddress(attrs pcommon.Map, addr netip.Addr, prefix uint8, addrKey, cidrKey, nameKey string) {
	switch prefix {
	case datapath.PrefixWhole:
		attrs.PutStr(addrKey, addr.String())
		return
	case datapath.PrefixOther:
		attrs.PutStr(nameKey, otherCIDRName)
		return
	}
	p := netip.PrefixFrom(addr, int(prefix))
	attrs.PutStr(addrKey, addr.String())
	attrs.PutStr(cidrKey, p.String())
	if name := b.cidrNames[p]; name != "" {
		attrs.PutStr(nameKey, name)
	}
}
