//go:build linux

package xdpflowreceiver

// Root integration tests of the real receiver: created through the
// factory, started inside the receiver namespace of a two-namespace veth
// network (internal/netnstest) so that it attaches its XDP program to
// veth-rcv, exporting into a consumertest sink while real TCP and UDP
// traffic crosses the veth. They need root, and skip without it.

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
	"github.com/xdpflow/xdpflowreceiver/internal/metadata"
	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

const (
	// ritPort is the destination port the receivers under test count.
	ritPort = 8080
	// ritIOTimeout bounds every socket operation.
	ritIOTimeout = 10 * time.Second
	// ritClockSlack is the error allowed between the receiver's kernel
	// time to wall-clock conversion and the test's own: both read the same
	// timekeeper, so only the offsets' measurement error counts.
	ritClockSlack = time.Millisecond
)

// ritCoarseLag is how much earlier than its first packet a connection's
// start timestamp may be. The program stamps packets with the coarse
// monotonic clock, which the kernel advances only at a tick and only by
// whole tick lengths: it lags the precise clock by up to about two ticks
// (measured here: 2-7.4 ms at HZ=250), more when a tick is late (a VM's
// vCPU descheduled), so allow three ticks.
var ritCoarseLag = datapath.MaxLag()

// ritModes are the attach modes every test runs in; veth supports both.
var ritModes = []string{"native", "generic"}

// ritConfig is a receiver on veth-rcv counting TCP and UDP to port 8080,
// exporting every 200ms, at most one trigger snapshot per 50ms.
func ritConfig(mode string) *Config {
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	cfg.Interfaces = []string{netnstest.ReceiverIface}
	cfg.AttachMode = mode
	cfg.Ports = []int{ritPort}
	cfg.CollectionInterval = 200 * time.Millisecond
	cfg.MinSnapshotInterval = minInterval
	return cfg
}

// ritNew creates a receiver through the factory, logging to t; a warning
// or error it logs fails the test (nothing in these tests should cause
// one). If tel is not nil, the receiver's own telemetry goes to it. The
// receiver is shut down when the test ends (a no-op when the test already
// did it).
func ritNew(t *testing.T, cfg *Config, next consumer.Metrics, tel *componenttest.Telemetry) receiver.Metrics {
	t.Helper()
	logger := zaptest.NewLogger(t, zaptest.WrapOptions(zap.Hooks(func(e zapcore.Entry) error {
		if e.Level >= zapcore.WarnLevel {
			t.Errorf("receiver logged at %s: %s", e.Level, e.Message)
		}
		return nil
	})))
	return createReceiver(t, cfg, next, tel, logger)
}

// createReceiver validates cfg and creates a receiver through the factory
// that logs to logger and, if tel is not nil, sends its own telemetry to
// tel. It is shut down when the test ends (a no-op when the test already
// did it).
func createReceiver(t *testing.T, cfg *Config, next consumer.Metrics, tel *componenttest.Telemetry, logger *zap.Logger) receiver.Metrics {
	t.Helper()
	require.NoError(t, cfg.Validate())
	f := NewFactory()
	set := receivertest.NewNopSettings(f.Type())
	set.ID = component.NewID(f.Type()) // as in a collector: stable, for state_directory
	set.Logger = logger
	if tel != nil {
		set.MeterProvider = tel.NewTelemetrySettings().MeterProvider
	}
	r, err := f.CreateMetrics(context.Background(), set, cfg, next)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := r.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown at cleanup: %v", err)
		}
	})
	return r
}

// ritStart starts r on a thread inside the receiver namespace, so the
// program is attached to the interfaces there.
func ritStart(pair *netnstest.Pair, r component.Component) error {
	return pair.Do(pair.Receiver, func() error {
		return r.Start(context.Background(), componenttest.NewNopHost())
	})
}

// ritConn identifies one connection's series by its attributes.
type ritConn struct {
	addr      string
	sport     int64
	dport     int64
	transport string
	netType   string
	iface     string
	direction string // network.io.direction
}

func (c ritConn) String() string {
	return fmt.Sprintf("%s %s %s [%s]:%d -> %d on %s", c.direction, c.transport, c.netType, c.addr, c.sport, c.dport, c.iface)
}

// ritConnOf is the series of traffic from src:sport to port 8080 arriving
// on veth-rcv.
func ritConnOf(transport string, src netip.Addr, sport uint16) ritConn {
	c := ritConn{addr: src.String(), sport: int64(sport), dport: ritPort, transport: transport, netType: "ipv6", iface: netnstest.ReceiverIface, direction: directionReceive}
	if src.Is4() {
		c.netType = "ipv4"
	}
	return c
}

// ritPoint is one connection's packets and bytes in one export.
type ritPoint struct {
	start, ts      pcommon.Timestamp
	packets, bytes int64
}

// ritExport is one snapshot, decoded: one ConsumeMetrics call, or several
// beyond 8192 connections (see ritDecode).
type ritExport struct {
	ts    pcommon.Timestamp
	conns map[ritConn]ritPoint
	// parts is the number of ConsumeMetrics calls the snapshot took (more
	// than one beyond 8192 connections); the first carries the totals.
	parts     int
	hasTotals bool
	// Receiver-wide sums and their (shared) start timestamp.
	wideStart                                     pcommon.Timestamp
	overflowPackets, overflowBytes, eventsDropped int64
	connections                                   int64
}

// ritDecode decodes the ConsumeMetrics calls into snapshots and checks
// their shape: one resource, one scope, the packets and bytes sums, one
// packets and one bytes point per connection with the same attributes
// and timestamps, and a single timestamp for every point of the snapshot.
// A snapshot of more than 8192 connections is exported in parts, with
// the same timestamp, the first of which carries the receiver-wide
// metrics; the parts are merged into one snapshot.
func ritDecode(t *testing.T, all []pmetric.Metrics) []ritExport {
	t.Helper()
	var exports []ritExport
	for i, md := range all {
		e := ritDecodeOne(t, i, md)
		if !e.hasTotals {
			if len(exports) == 0 || exports[len(exports)-1].ts != e.ts {
				t.Errorf("export %d: no receiver-wide metrics, and not a later part of the snapshot before it", i)
				continue
			}
			last := &exports[len(exports)-1]
			for c, p := range e.conns {
				if _, dup := last.conns[c]; dup {
					t.Errorf("export %d: %s already in an earlier part of the snapshot", i, c)
				}
				last.conns[c] = p
			}
			last.parts++
			continue
		}
		e.parts = 1
		exports = append(exports, e)
	}
	return exports
}

func ritDecodeOne(t *testing.T, idx int, md pmetric.Metrics) ritExport {
	t.Helper()
	e := ritExport{conns: map[ritConn]ritPoint{}}
	errorf := func(format string, args ...any) {
		t.Helper()
		t.Errorf("export %d: %s", idx, fmt.Sprintf(format, args...))
	}
	if md.ResourceMetrics().Len() != 1 || md.ResourceMetrics().At(0).ScopeMetrics().Len() != 1 {
		errorf("want 1 resource with 1 scope, got %d resources", md.ResourceMetrics().Len())
		return e
	}
	sm := md.ResourceMetrics().At(0).ScopeMetrics().At(0)
	if sm.Scope().Name() != metadata.ScopeName {
		errorf("scope %q, want %q", sm.Scope().Name(), metadata.ScopeName)
	}
	seenTS := map[pcommon.Timestamp]bool{}
	bytesPoints := map[ritConn]ritPoint{}
	seen := map[string]bool{}
	ms := sm.Metrics()
	for i := 0; i < ms.Len(); i++ {
		m := ms.At(i)
		if seen[m.Name()] {
			errorf("metric %s twice", m.Name())
		}
		seen[m.Name()] = true
		switch m.Name() {
		case metricPackets, metricBytes:
			if m.Type() != pmetric.MetricTypeSum || !m.Sum().IsMonotonic() || m.Sum().AggregationTemporality() != pmetric.AggregationTemporalityCumulative {
				errorf("%s is not a monotonic cumulative sum", m.Name())
				continue
			}
			dst := e.conns
			if m.Name() == metricBytes {
				dst = bytesPoints
			}
			dps := m.Sum().DataPoints()
			for j := 0; j < dps.Len(); j++ {
				dp := dps.At(j)
				seenTS[dp.Timestamp()] = true
				c, err := ritConnFromAttrs(dp.Attributes())
				if err != nil {
					errorf("%s point %d: %v", m.Name(), j, err)
					continue
				}
				if _, dup := dst[c]; dup {
					errorf("%s: two points for %s", m.Name(), c)
				}
				dst[c] = ritPoint{start: dp.StartTimestamp(), ts: dp.Timestamp(), packets: dp.IntValue()}
			}
		case metricOverflowPackets, metricOverflowBytes, metricEventsDropped:
			if m.Type() != pmetric.MetricTypeSum || !m.Sum().IsMonotonic() || m.Sum().AggregationTemporality() != pmetric.AggregationTemporalityCumulative || m.Sum().DataPoints().Len() != 1 {
				errorf("%s is not a monotonic cumulative sum with one point", m.Name())
				continue
			}
			dp := m.Sum().DataPoints().At(0)
			seenTS[dp.Timestamp()] = true
			if dp.Attributes().Len() != 0 {
				errorf("%s has attributes %v", m.Name(), dp.Attributes().AsRaw())
			}
			if e.wideStart != 0 && dp.StartTimestamp() != e.wideStart {
				errorf("%s start %v, other receiver-wide sums %v", m.Name(), dp.StartTimestamp(), e.wideStart)
			}
			e.wideStart = dp.StartTimestamp()
			switch m.Name() {
			case metricOverflowPackets:
				e.overflowPackets = dp.IntValue()
			case metricOverflowBytes:
				e.overflowBytes = dp.IntValue()
			default:
				e.eventsDropped = dp.IntValue()
			}
		case metricConnections:
			if m.Type() != pmetric.MetricTypeGauge || m.Gauge().DataPoints().Len() != 1 {
				errorf("%s is not a gauge with one point", m.Name())
				continue
			}
			dp := m.Gauge().DataPoints().At(0)
			seenTS[dp.Timestamp()] = true
			e.connections = dp.IntValue()
		default:
			errorf("unexpected metric %s", m.Name())
		}
	}
	e.hasTotals = len(seen) == 6
	if !seen[metricPackets] || !seen[metricBytes] || (len(seen) != 2 && len(seen) != 6) {
		errorf("metrics %v: want the packets and bytes sums, and in the first part of a snapshot the four receiver-wide metrics", seen)
	}
	for c, p := range e.conns {
		b, ok := bytesPoints[c]
		if !ok || b.start != p.start || b.ts != p.ts {
			errorf("%s: packets point %+v, bytes point %+v (present %v)", c, p, b, ok)
		}
		p.bytes = b.packets
		e.conns[c] = p
	}
	if len(bytesPoints) != len(e.conns) {
		errorf("%d packets points, %d bytes points", len(e.conns), len(bytesPoints))
	}
	if len(seenTS) != 1 {
		errorf("points carry %d different timestamps, want 1", len(seenTS))
	}
	for ts := range seenTS {
		e.ts = ts
	}
	return e
}

func ritConnFromAttrs(attrs pcommon.Map) (ritConn, error) {
	var c ritConn
	if attrs.Len() != 7 {
		return c, fmt.Errorf("%d attributes, want 7: %v", attrs.Len(), attrs.AsRaw())
	}
	str := func(k string, dst *string) bool {
		v, ok := attrs.Get(k)
		if !ok || v.Type() != pcommon.ValueTypeStr {
			return false
		}
		*dst = v.Str()
		return true
	}
	num := func(k string, dst *int64) bool {
		v, ok := attrs.Get(k)
		if !ok || v.Type() != pcommon.ValueTypeInt {
			return false
		}
		*dst = v.Int()
		return true
	}
	if !str(attrSourceAddress, &c.addr) || !num(attrSourcePort, &c.sport) || !num(attrDestinationPort, &c.dport) ||
		!str(attrNetworkTransport, &c.transport) || !str(attrNetworkType, &c.netType) || !str(attrInterfaceName, &c.iface) ||
		!str(attrNetworkIODirection, &c.direction) {
		return c, fmt.Errorf("missing or mistyped attribute: %v", attrs.AsRaw())
	}
	return c, nil
}

// ritCheckExports checks what must hold across the exports of one
// receiver run in [began, ended], none of which evicts (idle_timeout is
// 5m): export timestamps increase and lie in the run; every point's
// timestamp is at or after its start; a connection once exported is in
// every later export with the same start timestamp and counts that never
// decrease; the receiver-wide sums keep their start and never decrease.
func ritCheckExports(t *testing.T, exports []ritExport, began, ended time.Time) {
	t.Helper()
	for i, e := range exports {
		if ts := e.ts.AsTime(); ts.Before(began) || ts.After(ended) {
			t.Errorf("export %d: timestamp %v outside the run [%v, %v]", i, ts, began, ended)
		}
		if ws := e.wideStart.AsTime(); ws.Before(began) || ws.After(e.ts.AsTime()) {
			t.Errorf("export %d: receiver-wide start %v, want within [%v, %v]", i, ws, began, e.ts.AsTime())
		}
		for c, p := range e.conns {
			if p.ts < p.start {
				t.Errorf("export %d: %s timestamp %v before its start %v", i, c, p.ts.AsTime(), p.start.AsTime())
			}
			if p.start.AsTime().Before(began.Add(-ritClockSlack - ritCoarseLag)) {
				t.Errorf("export %d: %s starts at %v, before the receiver started (%v)", i, c, p.start.AsTime(), began)
			}
		}
		if i == 0 {
			continue
		}
		prev := exports[i-1]
		if e.ts <= prev.ts {
			t.Errorf("export %d: timestamp %v not after export %d's %v", i, e.ts.AsTime(), i-1, prev.ts.AsTime())
		}
		if e.wideStart != prev.wideStart {
			t.Errorf("export %d: receiver-wide start %v, was %v", i, e.wideStart.AsTime(), prev.wideStart.AsTime())
		}
		if e.overflowPackets < prev.overflowPackets || e.overflowBytes < prev.overflowBytes || e.eventsDropped < prev.eventsDropped {
			t.Errorf("export %d: receiver-wide sums decreased: overflow %d packets %d bytes, %d events dropped after %d, %d, %d",
				i, e.overflowPackets, e.overflowBytes, e.eventsDropped, prev.overflowPackets, prev.overflowBytes, prev.eventsDropped)
		}
		for c, p := range prev.conns {
			cur, ok := e.conns[c]
			switch {
			case !ok:
				t.Errorf("export %d: %s missing; it was in export %d", i, c, i-1)
			case cur.start != p.start:
				t.Errorf("export %d: %s start %v, was %v", i, c, cur.start.AsTime(), p.start.AsTime())
			case cur.packets < p.packets || cur.bytes < p.bytes:
				t.Errorf("export %d: %s went from %d packets %d bytes to %d packets %d bytes", i, c, p.packets, p.bytes, cur.packets, cur.bytes)
			}
		}
	}
}

// ritHistory returns the distinct packet counts a connection was exported
// with, in export order, and the number of exports it appears in.
func ritHistory(exports []ritExport, c ritConn) (values []int64, appearances int) {
	for _, e := range exports {
		p, ok := e.conns[c]
		if !ok {
			continue
		}
		appearances++
		if len(values) == 0 || values[len(values)-1] != p.packets {
			values = append(values, p.packets)
		}
	}
	return values, appearances
}

// ritMoment is an instant read on the wall clock and on the kernel's
// coarse monotonic clock, which the program stamps packets with.
type ritMoment struct {
	wall   time.Time
	coarse uint64
}

func ritNow(t *testing.T) ritMoment {
	t.Helper()
	var ts unix.Timespec
	require.NoError(t, unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts))
	return ritMoment{wall: time.Now(), coarse: uint64(ts.Nano())}
}

// ritWindow brackets a connection's first packet: from was read before
// it was sent, to after it had passed the program.
type ritWindow struct{ from, to ritMoment }

func (w ritWindow) String() string {
	return fmt.Sprintf("[%s, %s]", w.from.wall.Format(time.RFC3339Nano), w.to.wall.Format(time.RFC3339Nano))
}

// ritCheckStart checks that a connection's start timestamp (the same in
// every export, see ritCheckExports) is its first packet's time: exactly
// the program's coarse-clock stamp, which lies between the coarse clock
// readings of w, converted to wall-clock time; and, on the wall clock,
// within w allowing for the coarse clock's lag. It returns how much
// earlier than w.from the start timestamp is (negative: later).
func ritCheckStart(t *testing.T, p ritPoint, c ritConn, w ritWindow) time.Duration {
	t.Helper()
	clock, err := datapath.MeasureClockOffset()
	require.NoError(t, err)
	start := p.start.AsTime()
	lo, hi := clock.Wall(w.from.coarse), clock.Wall(w.to.coarse)
	if start.Before(lo.Add(-ritClockSlack)) || start.After(hi.Add(ritClockSlack)) {
		t.Errorf("%s: start %v is not its first packet's kernel time: the coarse clock read %v before it was sent, %v after it arrived",
			c, start.Format(time.RFC3339Nano), lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano))
	}
	if start.Before(w.from.wall.Add(-ritCoarseLag-ritClockSlack)) || start.After(w.to.wall.Add(ritClockSlack)) {
		t.Errorf("%s: start %v, want its first packet's time, within %v (less up to %v of coarse clock lag)",
			c, start.Format(time.RFC3339Nano), w, ritCoarseLag)
	}
	return w.from.wall.Sub(start)
}

// ritListenUDP opens UDP sockets on addr and each of ports, inside
// namespace ns; they are closed when the test ends.
func ritListenUDP(t *testing.T, ns string, addr netip.Addr, ports ...uint16) []*net.UDPConn {
	t.Helper()
	conns := make([]*net.UDPConn, 0, len(ports))
	for _, p := range ports {
		conns = append(conns, netnstest.ListenUDP(t, ns, netip.AddrPortFrom(addr, p)))
	}
	return conns
}

// ritSendUDP sends the datagrams in order to server (in the receiver
// namespace) at to, sleeping gap after each, and every batch datagrams
// waits until the server has received every datagram sent so far. It
// returns the datagrams' frame bytes (see netnstest.SendUDP).
func ritSendUDP(t *testing.T, server *net.UDPConn, to netip.AddrPort, dgrams []netnstest.Datagram, batch int, gap time.Duration) uint64 {
	t.Helper()
	return netnstest.SendUDP(t, server, to, dgrams, netnstest.UDPPacing{Batch: batch, Gap: gap, Timeout: ritIOTimeout})
}

// ritUDPFlow is the UDP traffic of one connection and what it must give.
type ritUDPFlow struct {
	conn    ritConn
	packets int
	bytes   uint64
	first   ritWindow // brackets the first datagram
}

// ritUDPConversation sends k datagrams of known sizes (0 to MTU-sized) from
// src:sport to dst:8080, in chunks separated by pause so that interval
// snapshots see the counts grow.
func ritUDPConversation(t *testing.T, pair *netnstest.Pair, src, dst netip.Addr, sport uint16, k, chunks int, pause time.Duration) ritUDPFlow {
	t.Helper()
	server := ritListenUDP(t, pair.Receiver, dst, ritPort)[0]
	client := ritListenUDP(t, pair.Sender, src, sport)[0]
	sizes := netnstest.UDPSizes(k, netnstest.MaxUDPPayload(src))
	f := ritUDPFlow{conn: ritConnOf("udp", src, sport), packets: k}
	to := netip.AddrPortFrom(dst, ritPort)
	// The first datagram alone, received before the others are sent.
	f.first.from = ritNow(t)
	f.bytes = ritSendUDP(t, server, to, []netnstest.Datagram{{From: client, Size: sizes[0]}}, 1, 0)
	f.first.to = ritNow(t)
	per := (k + chunks - 1) / chunks
	for c := 0; c*per < k; c++ {
		if c > 0 {
			time.Sleep(pause)
		}
		chunk := make([]netnstest.Datagram, 0, per)
		for _, s := range sizes[max(1, c*per):min(k, (c+1)*per)] {
			chunk = append(chunk, netnstest.Datagram{From: client, Size: s})
		}
		f.bytes += ritSendUDP(t, server, to, chunk, 32, 0)
	}
	return f
}

// ritTCPConversation runs a TCP conversation from src in the sender
// namespace to to in the receiver namespace: 50 request/response round
// trips, then a bulk write of bulk bytes from the client (see
// netnstest.TCPConversation). It returns the client's address and the
// window of its SYN, the connection's first packet.
func ritTCPConversation(t *testing.T, pair *netnstest.Pair, src netip.Addr, to netip.AddrPort, bulk int) (client netip.AddrPort, syn ritWindow) {
	t.Helper()
	client = netnstest.TCPConversation{
		Rounds:     50,
		Bulk:       bulk,
		Timeout:    ritIOTimeout,
		BeforeDial: func() { syn.from = ritNow(t) },
		// The SYN-ACK came back: the SYN passed the program.
		AfterDial: func() { syn.to = ritNow(t) },
	}.Converse(t, pair, src, to)
	return client, syn
}

// TestIntegrationReceiverTraffic runs the real receiver on veth-rcv while
// UDP (IPv4, IPv6) and TCP (IPv4, IPv6) traffic arrives, shuts it down and
// checks every export: UDP sums equal the datagrams sent exactly, TCP sums
// equal a capture's count of the same packets, start timestamps are the
// first packets' times and never change, sums never decrease.
func TestIntegrationReceiverTraffic(t *testing.T) {
	privtest.RequireRoot(t)
	for _, mode := range ritModes {
		t.Run(mode, func(t *testing.T) {
			pair := netnstest.New(t)
			sink := new(consumertest.MetricsSink)
			cfg := ritConfig(mode)
			tel := ritTelemetry(t)
			r := ritNew(t, cfg, sink, tel)
			began := time.Now()
			require.NoError(t, ritStart(pair, r))
			capture := netnstest.StartCapture(t, pair.Receiver, netnstest.ReceiverIface, netnstest.ToPort(6, ritPort))

			// UDP in 3 chunks, 2 collection intervals apart.
			pause := 2 * cfg.CollectionInterval
			udp4 := ritUDPConversation(t, pair, netnstest.SenderIPv4, netnstest.ReceiverIPv4, 40004, 300, 3, pause)
			udp6 := ritUDPConversation(t, pair, netnstest.SenderIPv6, netnstest.ReceiverIPv6, 40006, 300, 3, pause)

			type tcpFlow struct {
				conn   ritConn
				client netip.AddrPort
				syn    ritWindow
			}
			var tcps []tcpFlow
			for _, fam := range []struct{ src, dst netip.Addr }{
				{netnstest.SenderIPv4, netnstest.ReceiverIPv4},
				{netnstest.SenderIPv6, netnstest.ReceiverIPv6},
			} {
				client, syn := ritTCPConversation(t, pair, fam.src, netip.AddrPortFrom(fam.dst, ritPort), 200<<10)
				tcps = append(tcps, tcpFlow{ritConnOf("tcp", fam.src, client.Port()), client, syn})
			}
			// Stop waits until no packet to port 8080 has arrived for a
			// while; every packet captured passed the XDP program first.
			res, err := capture.Stop()
			require.NoError(t, err, "capture")
			ritShutdown(t, r, sink, tel)
			ended := time.Now()

			exports := ritDecode(t, sink.AllMetrics())
			require.GreaterOrEqual(t, len(exports), 2, "interval snapshots and the shutdown snapshot")
			ritCheckExports(t, exports, began, ended)
			final := exports[len(exports)-1]

			for _, f := range []ritUDPFlow{udp4, udp6} {
				p, ok := final.conns[f.conn]
				if !ok {
					t.Errorf("%s not in the final export; it has %v", f.conn, ritKeys(final))
					continue
				}
				assert.Equal(t, int64(f.packets), p.packets, "%s packets", f.conn)
				assert.Equal(t, int64(f.bytes), p.bytes, "%s bytes", f.conn)
				lag := ritCheckStart(t, p, f.conn, f.first)
				values, n := ritHistory(exports, f.conn)
				assert.GreaterOrEqual(t, len(values), 2, "%s: interval snapshots must see the counts grow; exported packets %v", f.conn, values)
				t.Logf("%s mode, %s: exported packets=%d bytes=%d start=%s (in %d exports, packet values %v); sent %d datagrams, %d frame bytes, the first in %v (start %v before it)",
					mode, f.conn, p.packets, p.bytes, p.start.AsTime().Format(time.RFC3339Nano), n, values,
					f.packets, f.bytes, f.first, lag)
			}

			for i, p := range res.Pcap.Packets {
				if p.OrigLen > 1514 {
					t.Errorf("captured packet %d has %d bytes: larger than the MTU, offloads are on", i, p.OrigLen)
					break
				}
			}
			capturedTCP := 0
			for _, f := range tcps {
				pkts, byts := res.Pcap.Count(func(fr netnstest.Frame) bool {
					return fr.Proto == 6 && fr.Src == f.client.Addr() && fr.SrcPort == f.client.Port() && fr.DstPort == ritPort
				})
				capturedTCP += pkts
				p, ok := final.conns[f.conn]
				if !ok {
					t.Errorf("%s not in the final export; it has %v", f.conn, ritKeys(final))
					continue
				}
				if pkts < 100 || byts < 200<<10 {
					t.Errorf("%s: the capture saw only %d packets %d bytes", f.conn, pkts, byts)
				}
				assert.Equal(t, int64(pkts), p.packets, "%s packets vs the capture", f.conn)
				assert.Equal(t, int64(byts), p.bytes, "%s bytes vs the capture", f.conn)
				lag := ritCheckStart(t, p, f.conn, f.syn)
				t.Logf("%s mode, %s: exported packets=%d bytes=%d start=%s; capture: %d packets %d bytes; SYN sent in %v (start %v before it)",
					mode, f.conn, p.packets, p.bytes, p.start.AsTime().Format(time.RFC3339Nano), pkts, byts, f.syn, lag)
			}
			assert.Equal(t, len(res.Pcap.Packets), capturedTCP, "the capture holds packets of other connections")

			// Exactly these four connections, nothing lost or overflowed.
			assert.Len(t, final.conns, 4, "connections in the final export: %v", ritKeys(final))
			assert.Equal(t, int64(4), final.connections, "xdpflow.connections")
			assert.Zero(t, final.overflowPackets, "xdpflow.overflow.packets")
			assert.Zero(t, final.overflowBytes, "xdpflow.overflow.bytes")
			assert.Zero(t, final.eventsDropped, "xdpflow.events.dropped")
			t.Logf("%s mode: %d exports in %v", mode, len(exports), ended.Sub(began).Round(time.Millisecond))
		})
	}
}

func ritKeys(e ritExport) []string {
	keys := make([]string, 0, len(e.conns))
	for c := range e.conns {
		keys = append(keys, c.String())
	}
	sort.Strings(keys)
	return keys
}

// ritTelemetry returns a telemetry to read the receiver's own metrics
// from, shut down when the test ends (after the receiver).
func ritTelemetry(t *testing.T) *componenttest.Telemetry {
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	return tel
}

// ritShutdown shuts r down and checks that it took exactly one shutdown
// snapshot, exported last: after Shutdown was called.
func ritShutdown(t *testing.T, r receiver.Metrics, sink *consumertest.MetricsSink, tel *componenttest.Telemetry) {
	t.Helper()
	called := time.Now()
	require.NoError(t, r.Shutdown(context.Background()))
	causes := ritSnapshotsByCause(t, tel)
	require.Equal(t, int64(1), causes[causeShutdown], "shutdown snapshots; snapshots by cause: %v", causes)
	all := sink.AllMetrics()
	require.NotEmpty(t, all)
	last := ritDecodeOne(t, len(all)-1, all[len(all)-1])
	require.False(t, last.ts.AsTime().Before(called), "the last export (%v) is not the shutdown snapshot (Shutdown called at %v)", last.ts.AsTime(), called)
	var total int64
	for _, n := range causes {
		total += n
	}
	require.Len(t, ritDecode(t, all), int(total), "snapshots exported vs otelcol_xdpflow_snapshots %v", causes)
}

// ritSnapshotsByCause returns otelcol_xdpflow_snapshots by cause.
func ritSnapshotsByCause(t *testing.T, tel *componenttest.Telemetry) map[string]int64 {
	t.Helper()
	m, err := tel.GetMetric("otelcol_xdpflow_snapshots")
	require.NoError(t, err)
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "otelcol_xdpflow_snapshots is a %T", m.Data)
	out := map[string]int64{}
	for _, dp := range sum.DataPoints {
		cause, _ := dp.Attributes.Value("cause")
		out[cause.AsString()] += dp.Value
	}
	return out
}

// TestIntegrationReceiverTriggerBurst opens 1,000 new UDP connections
// (one datagram each, distinct source ports) with new_connections_per_event
// 5 and no interval snapshot (collection_interval 1h): the 200 trigger
// events must be coalesced into at most ceil(burst/min_snapshot_interval)+1
// snapshots, the last of which, like the shutdown snapshot, holds every
// connection.
func TestIntegrationReceiverTriggerBurst(t *testing.T) {
	privtest.RequireRoot(t)
	const conns, basePort = 1000, 41000
	for _, mode := range ritModes {
		t.Run(mode, func(t *testing.T) {
			pair := netnstest.New(t)
			cfg := ritConfig(mode)
			cfg.CollectionInterval = time.Hour
			cfg.MinSnapshotInterval = 100 * time.Millisecond
			cfg.NewConnectionsPerEvent = 5
			cfg.MaxConnections = 4096
			tel := ritTelemetry(t)
			sink := new(consumertest.MetricsSink)
			r := ritNew(t, cfg, sink, tel)

			ports := make([]uint16, conns)
			for i := range ports {
				ports[i] = uint16(basePort + i)
			}
			server := ritListenUDP(t, pair.Receiver, netnstest.ReceiverIPv4, ritPort)[0]
			clients := ritListenUDP(t, pair.Sender, netnstest.SenderIPv4, ports...)
			dgrams := make([]netnstest.Datagram, conns)
			sizes := map[uint16]int{}
			for i, c := range clients {
				dgrams[i] = netnstest.Datagram{From: c, Size: 16 + i%100}
				sizes[ports[i]] = dgrams[i].Size
			}

			began := time.Now()
			require.NoError(t, ritStart(pair, r))
			time.Sleep(2 * cfg.MinSnapshotInterval)
			require.Empty(t, sink.AllMetrics(), "snapshots before any traffic")

			// About 1ms per datagram: the burst lasts about 10 intervals.
			burstStart := time.Now()
			ritSendUDP(t, server, netip.AddrPortFrom(netnstest.ReceiverIPv4, ritPort), dgrams, 25, time.Millisecond)
			burst := time.Since(burstStart)
			// A trigger left pending at the end of the burst is served
			// within one min_snapshot_interval; wait for three.
			time.Sleep(3 * cfg.MinSnapshotInterval)
			snapshots := len(sink.AllMetrics())
			causes := ritSnapshotsByCause(t, tel)
			require.NoError(t, r.Shutdown(context.Background()))
			ended := time.Now()

			// The receiver reads the burst's events up to EventReadGap
			// after the kernel wrote them, so it sees a burst that long
			// more; a snapshot begins at most once an interval in it, and
			// one more serves the trigger left pending at its end.
			seen := burst + datapath.EventReadGap
			maxSnapshots := int(math.Ceil(float64(seen)/float64(cfg.MinSnapshotInterval))) + 1
			t.Logf("%s mode: %d new connections in %v: %d trigger snapshots (bound ceil((burst+%v)/%v)+1 = %d); self-telemetry snapshots by cause %v",
				mode, conns, burst.Round(time.Microsecond), snapshots, datapath.EventReadGap, cfg.MinSnapshotInterval, maxSnapshots, causes)
			assert.GreaterOrEqual(t, snapshots, 1, "the burst must cause a snapshot")
			if burst >= 3*cfg.MinSnapshotInterval {
				assert.GreaterOrEqual(t, snapshots, 2, "a burst of %v must cause snapshots during it and after it", burst)
			}
			assert.LessOrEqual(t, snapshots, maxSnapshots, "burst of %v", burst)
			assert.Equal(t, map[string]int64{causeTrigger: int64(snapshots)}, causes, "every snapshot before Shutdown is a trigger snapshot")
			assert.Equal(t, map[string]int64{causeTrigger: int64(snapshots), causeShutdown: 1}, ritSnapshotsByCause(t, tel))

			exports := ritDecode(t, sink.AllMetrics())
			require.Len(t, exports, snapshots+1, "trigger snapshots and the shutdown snapshot")
			ritCheckExports(t, exports, began, ended)
			minGap := time.Hour
			for i, e := range exports[:snapshots] {
				if e.ts.AsTime().Before(burstStart) {
					t.Errorf("snapshot %d at %v, before the burst began (%v)", i, e.ts.AsTime(), burstStart)
				}
				// Snapshots begin at least min_snapshot_interval apart, but
				// their timestamps are taken after the flow table is read,
				// which on a loaded machine can take milliseconds: the
				// gaps between timestamps are only logged.
				if i > 0 {
					minGap = min(minGap, e.ts.AsTime().Sub(exports[i-1].ts.AsTime()))
				}
			}
			var counts []int64
			for _, e := range exports {
				counts = append(counts, e.connections)
			}
			t.Logf("%s mode: xdpflow.connections per export: %v; shortest gap between trigger snapshots %v", mode, counts, minGap)

			// The trigger of the last 5 connections was served: the last
			// trigger snapshot already holds all of them, as does the
			// shutdown snapshot.
			for _, i := range []int{snapshots - 1, snapshots} {
				e := exports[i]
				assert.Equal(t, int64(conns), e.connections, "export %d: xdpflow.connections", i)
				require.Len(t, e.conns, conns, "export %d: per-connection series", i)
				for c, p := range e.conns {
					size, ok := sizes[uint16(c.sport)]
					want := ritConnOf("udp", netnstest.SenderIPv4, uint16(c.sport))
					if !ok || c != want || p.packets != 1 || p.bytes != int64(14+20+8+size) {
						t.Errorf("export %d: %s: %d packets %d bytes, want a known connection with 1 packet of %d bytes", i, c, p.packets, p.bytes, 14+20+8+size)
					}
				}
				assert.Zero(t, e.overflowPackets, "export %d: xdpflow.overflow.packets", i)
				assert.Zero(t, e.eventsDropped, "export %d: xdpflow.events.dropped", i)
			}
		})
	}
}

// TestIntegrationReceiverOverflow sends one datagram from each of 40
// source ports to a receiver with max_connections 16: the first 16
// connections are exported, the other 24 datagrams are in the overflow
// sums with their exact bytes.
func TestIntegrationReceiverOverflow(t *testing.T) {
	privtest.RequireRoot(t)
	const maxConns, conns, basePort = 16, 40, 42000
	for _, mode := range ritModes {
		t.Run(mode, func(t *testing.T) {
			pair := netnstest.New(t)
			cfg := ritConfig(mode)
			cfg.MaxConnections = maxConns
			sink := new(consumertest.MetricsSink)
			tel := ritTelemetry(t)
			r := ritNew(t, cfg, sink, tel)
			ports := make([]uint16, conns)
			for i := range ports {
				ports[i] = uint16(basePort + i)
			}
			server := ritListenUDP(t, pair.Receiver, netnstest.ReceiverIPv4, ritPort)[0]
			clients := ritListenUDP(t, pair.Sender, netnstest.SenderIPv4, ports...)

			began := time.Now()
			require.NoError(t, ritStart(pair, r))
			var storedBytes, overflowBytes uint64
			want := map[ritConn]int64{}
			for i, c := range clients {
				// One at a time, each received before the next is sent,
				// so the first 16 are the ones the table holds.
				b := ritSendUDP(t, server, netip.AddrPortFrom(netnstest.ReceiverIPv4, ritPort), []netnstest.Datagram{{From: c, Size: 7 * i}}, 1, 0)
				if i < maxConns {
					storedBytes += b
					want[ritConnOf("udp", netnstest.SenderIPv4, ports[i])] = int64(b)
				} else {
					overflowBytes += b
				}
			}
			ritShutdown(t, r, sink, tel)
			ended := time.Now()

			exports := ritDecode(t, sink.AllMetrics())
			require.NotEmpty(t, exports)
			ritCheckExports(t, exports, began, ended)
			final := exports[len(exports)-1]
			assert.Len(t, final.conns, maxConns, "per-connection series: %v", ritKeys(final))
			for c, b := range want {
				p, ok := final.conns[c]
				if !ok || p.packets != 1 || p.bytes != b {
					t.Errorf("%s: %d packets %d bytes (exported %v), want 1 packet of %d bytes", c, p.packets, p.bytes, ok, b)
				}
			}
			assert.Equal(t, int64(maxConns), final.connections, "xdpflow.connections")
			assert.Equal(t, int64(conns-maxConns), final.overflowPackets, "xdpflow.overflow.packets")
			assert.Equal(t, int64(overflowBytes), final.overflowBytes, "xdpflow.overflow.bytes")
			t.Logf("%s mode: final export: %d connections, overflow %d packets %d bytes; sent %d connections: %d stored (%d bytes), %d overflowing (%d bytes)",
				mode, len(final.conns), final.overflowPackets, final.overflowBytes, conns, maxConns, storedBytes, conns-maxConns, overflowBytes)
		})
	}
}

// ritProgID returns the ID of the XDP program a started receiver loaded.
func ritProgID(t *testing.T, r receiver.Metrics) uint32 {
	t.Helper()
	xr, ok := r.(*xdpflowReceiver)
	require.True(t, ok, "receiver is a %T", r)
	xr.mu.Lock()
	dp, ok := xr.src.(*datapath.Datapath)
	xr.mu.Unlock()
	require.True(t, ok, "datapath is a %T", xr.src)
	info, err := dp.Program().Info()
	require.NoError(t, err)
	id, ok := info.ID()
	require.True(t, ok, "program ID unavailable")
	return uint32(id)
}

// ritCountsUDP sends 64 datagrams from sport through a started receiver r,
// shuts it down and checks its final export counts them exactly.
func ritCountsUDP(t *testing.T, pair *netnstest.Pair, r receiver.Metrics, sink *consumertest.MetricsSink, tel *componenttest.Telemetry, sport uint16) {
	t.Helper()
	server := ritListenUDP(t, pair.Receiver, netnstest.ReceiverIPv4, ritPort)[0]
	client := ritListenUDP(t, pair.Sender, netnstest.SenderIPv4, sport)[0]
	var dgrams []netnstest.Datagram
	for _, s := range netnstest.UDPSizes(64, 1400) {
		dgrams = append(dgrams, netnstest.Datagram{From: client, Size: s})
	}
	wantBytes := ritSendUDP(t, server, netip.AddrPortFrom(netnstest.ReceiverIPv4, ritPort), dgrams, 32, 0)
	ritShutdown(t, r, sink, tel)
	exports := ritDecode(t, sink.AllMetrics())
	require.NotEmpty(t, exports, "no export")
	final := exports[len(exports)-1]
	c := ritConnOf("udp", netnstest.SenderIPv4, sport)
	p, ok := final.conns[c]
	require.True(t, ok, "%s not exported; got %v", c, ritKeys(final))
	assert.Equal(t, int64(len(dgrams)), p.packets, "%s packets", c)
	assert.Equal(t, int64(wantBytes), p.bytes, "%s bytes", c)
	assert.Len(t, final.conns, 1, "series: %v", ritKeys(final))
}

// TestIntegrationReceiverUnknownInterface: an interface that does not
// exist fails Start with an error naming it and the interfaces that do
// exist; an interface attached before the failing one is detached again,
// so nothing is left attached, Shutdown returns nil, and another receiver
// can attach to it.
func TestIntegrationReceiverUnknownInterface(t *testing.T) {
	privtest.RequireRoot(t)
	const missing = "veth-missing"
	for _, mode := range ritModes {
		t.Run(mode, func(t *testing.T) {
			pair := netnstest.New(t)
			for _, ifaces := range [][]string{{missing}, {netnstest.ReceiverIface, missing}} {
				cfg := ritConfig(mode)
				cfg.Interfaces = ifaces
				sink := new(consumertest.MetricsSink)
				r := ritNew(t, cfg, sink, nil)
				err := ritStart(pair, r)
				require.Error(t, err, "Start with interfaces %v", ifaces)
				t.Logf("Start with interfaces %v: %v", ifaces, err)
				assert.Contains(t, err.Error(), "attach xdp to "+missing+": interface not found")
				// The receiver namespace holds exactly lo and veth-rcv.
				assert.Contains(t, err.Error(), "(interfaces here: lo, "+netnstest.ReceiverIface+")")
				if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); ok {
					t.Errorf("program %d attached to %s after the failed Start with %v", xdp.ProgID, netnstest.ReceiverIface, ifaces)
				}
				assert.NoError(t, r.Shutdown(context.Background()))
				assert.NoError(t, r.Shutdown(context.Background()))
				assert.Empty(t, sink.AllMetrics(), "a receiver that failed to start exported")
			}

			// veth-rcv is free: a receiver attaches to it and counts.
			sink := new(consumertest.MetricsSink)
			tel := ritTelemetry(t)
			r := ritNew(t, ritConfig(mode), sink, tel)
			require.NoError(t, ritStart(pair, r))
			ritCountsUDP(t, pair, r, sink, tel, 40100)
		})
	}
}

// TestIntegrationReceiverSecondOnSameInterface: a second receiver on an
// interface the first holds fails Start with an error naming the
// interface and the conflict; the first keeps its attachment and counts.
func TestIntegrationReceiverSecondOnSameInterface(t *testing.T) {
	privtest.RequireRoot(t)
	for _, mode := range ritModes {
		t.Run(mode, func(t *testing.T) {
			pair := netnstest.New(t)
			sink1 := new(consumertest.MetricsSink)
			tel1 := ritTelemetry(t)
			first := ritNew(t, ritConfig(mode), sink1, tel1)
			require.NoError(t, ritStart(pair, first))
			id := ritProgID(t, first)
			if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); !ok || xdp.ProgID != id {
				t.Fatalf("the link shows program %d (attached %v), want the first receiver's %d", xdp.ProgID, ok, id)
			}

			for _, secondMode := range []string{mode, "auto"} {
				sink2 := new(consumertest.MetricsSink)
				second := ritNew(t, ritConfig(secondMode), sink2, nil)
				err := ritStart(pair, second)
				require.Error(t, err, "second receiver (%s mode) started on the first's interface", secondMode)
				t.Logf("second receiver, %s mode: %v", secondMode, err)
				assert.Contains(t, err.Error(), "attach xdp to "+netnstest.ReceiverIface)
				assert.Contains(t, err.Error(), "another XDP program is attached to this interface")
				assert.NoError(t, second.Shutdown(context.Background()))
				assert.Empty(t, sink2.AllMetrics(), "the second receiver exported")
				if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); !ok || xdp.ProgID != id {
					t.Fatalf("after the refused Start the link shows program %d (attached %v), want %d", xdp.ProgID, ok, id)
				}
			}

			ritCountsUDP(t, pair, first, sink1, tel1, 40200)
			if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); ok {
				t.Errorf("program %d still attached after Shutdown", xdp.ProgID)
			}
		})
	}
}
