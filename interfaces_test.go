//go:build linux

package xdpflowreceiver

// Root integration tests of the real receiver on several interfaces: an
// attached interface deleted while the receiver runs, two receivers of one
// process on different interfaces, and lo, which has no native XDP. They
// reuse the helpers of integration_test.go and add a second veth pair
// (veth-snd2/veth-rcv2) between the namespaces of a netnstest.Pair.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// The second veth pair: veth-snd2 in the sender namespace, veth-rcv2 in
// the receiver namespace. Its addresses are host addresses (/32, /128)
// inside the first pair's prefixes, reached through host routes over the
// second pair, so traffic between them crosses veth-rcv2 and never
// veth-rcv.
const (
	iftSender2Iface   = "veth-snd2"
	iftReceiver2Iface = "veth-rcv2"
)

var (
	iftSender2MAC    = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x11}
	iftReceiver2MAC  = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x12}
	iftSender2IPv4   = netip.MustParseAddr("198.51.100.11")
	iftReceiver2IPv4 = netip.MustParseAddr("198.51.100.12")
	iftSender2IPv6   = netip.MustParseAddr("fd00:db8::11")
	iftReceiver2IPv6 = netip.MustParseAddr("fd00:db8::12")
)

// iftAddSecondVeth adds the second veth pair to pair, configured like the
// first (permanent neighbours, offloads off), and returns once a datagram
// has crossed it in each family. The pair is deleted when the test ends,
// if it still exists.
func iftAddSecondVeth(t *testing.T, pair *netnstest.Pair) {
	t.Helper()
	t.Cleanup(func() {
		if _, err := netnstest.Ifindex(pair.Sender, iftSender2Iface); err != nil {
			return // deleted by the test
		}
		if err := netnstest.DeleteLink(pair.Sender, iftSender2Iface); err != nil {
			t.Errorf("delete the second veth pair: %v", err)
		}
	})
	// Host addresses: AddVeth adds the host routes to the peer.
	require.NoError(t, netnstest.AddVeth(
		netnstest.VethEnd{NS: pair.Sender, Name: iftSender2Iface, MAC: iftSender2MAC,
			IPv4: netip.PrefixFrom(iftSender2IPv4, 32), IPv6: netip.PrefixFrom(iftSender2IPv6, 128)},
		netnstest.VethEnd{NS: pair.Receiver, Name: iftReceiver2Iface, MAC: iftReceiver2MAC,
			IPv4: netip.PrefixFrom(iftReceiver2IPv4, 32), IPv6: netip.PrefixFrom(iftReceiver2IPv6, 128)}))
	// The link comes up asynchronously: probe (ephemeral ports, not
	// counted) until a datagram crosses in each family.
	for _, fam := range []struct{ src, dst netip.Addr }{
		{iftSender2IPv4, iftReceiver2IPv4},
		{iftSender2IPv6, iftReceiver2IPv6},
	} {
		dst := ritListenUDP(t, pair.Receiver, fam.dst, 0)[0]
		src := ritListenUDP(t, pair.Sender, fam.src, 0)[0]
		toAddr := dst.LocalAddr().(*net.UDPAddr).AddrPort()
		buf := make([]byte, 64)
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := src.WriteToUDPAddrPort([]byte("probe"), toAddr)
			require.NoError(t, err, "probe %s -> %s", fam.src, toAddr)
			require.NoError(t, dst.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
			if _, from, err := dst.ReadFromUDPAddrPort(buf); err == nil {
				require.Equal(t, fam.src, from.Addr().Unmap(), "probe source")
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no probe datagram crossed the second veth pair from %s to %s within 10s", fam.src, toAddr)
			}
		}
		dst.Close()
		src.Close()
	}
	// Traffic to the second receiver addresses leaves by the second pair.
	for _, dst := range []netip.Addr{iftReceiver2IPv4, iftReceiver2IPv6} {
		dev, err := netnstest.RouteDevice(pair.Sender, dst)
		require.NoError(t, err)
		require.Equal(t, iftSender2Iface, dev, "route to %s", dst)
	}
}

// iftWaitAttached waits until the program progID is attached to iface in
// namespace ns.
func iftWaitAttached(t *testing.T, ns, iface string, progID uint32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if xdp, ok := netnstest.LinkXDP(t, ns, iface); ok && xdp.ProgID == progID {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("program %d not attached to %s within 5s", progID, iface)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// iftNewObserved creates a receiver through the factory whose log entries
// (every level) are kept in the returned observer and also written to t.
// It is shut down when the test ends (a no-op if the test did it).
func iftNewObserved(t *testing.T, cfg *Config, next consumer.Metrics, tel *componenttest.Telemetry) (receiver.Metrics, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	return createReceiver(t, cfg, next, tel, logger), logs
}

// iftUDP is one UDP connection to port 8080: its sockets and what it sent.
type iftUDP struct {
	conn     ritConn
	server   *net.UDPConn
	client   *net.UDPConn
	packets  int64
	bytes    int64
	to       netip.AddrPort
	maxBytes int
}

// iftNewUDP opens the sockets of a UDP connection from src:sport in the
// sender namespace to dst:8080 in the receiver namespace, arriving on
// iface.
func iftNewUDP(t *testing.T, pair *netnstest.Pair, src, dst netip.Addr, sport uint16, iface string) *iftUDP {
	t.Helper()
	c := ritConnOf("udp", src, sport)
	c.iface = iface
	return &iftUDP{
		conn:     c,
		server:   ritListenUDP(t, pair.Receiver, dst, ritPort)[0],
		client:   ritListenUDP(t, pair.Sender, src, sport)[0],
		to:       netip.AddrPortFrom(dst, ritPort),
		maxBytes: netnstest.MaxUDPPayload(src),
	}
}

// send sends k datagrams of sizes from 0 to the MTU, checks they all
// arrived and adds them to the connection's expected counts.
func (u *iftUDP) send(t *testing.T, k int) {
	t.Helper()
	var dgrams []netnstest.Datagram
	for _, s := range netnstest.UDPSizes(k, u.maxBytes) {
		dgrams = append(dgrams, netnstest.Datagram{From: u.client, Size: s})
	}
	u.bytes += int64(ritSendUDP(t, u.server, u.to, dgrams, 32, 0))
	u.packets += int64(k)
}

// iftWaitExport waits, at most 10 seconds, for an export in which every
// connection of want has exactly its wanted counts, and returns the
// number of ConsumeMetrics calls made until then.
func iftWaitExport(t *testing.T, sink *consumertest.MetricsSink, want ...*iftUDP) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		all := sink.AllMetrics()
		for i := len(all) - 1; i >= 0; i-- {
			e := ritDecodeOne(t, i, all[i])
			ok := true
			for _, u := range want {
				if p := e.conns[u.conn]; p.packets != u.packets || p.bytes != u.bytes {
					ok = false
				}
			}
			if ok {
				return len(all)
			}
		}
		if time.Now().After(deadline) {
			var lines []string
			for _, u := range want {
				lines = append(lines, fmt.Sprintf("%s: want %d packets %d bytes", u.conn, u.packets, u.bytes))
			}
			t.Fatalf("no export with the wanted counts within 10s (%d exports):\n%s", len(all), strings.Join(lines, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// iftWaitExports waits, at most 10 seconds, until sink holds n calls.
func iftWaitExports(t *testing.T, sink *consumertest.MetricsSink, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(sink.AllMetrics()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d exports after 10s, waiting for %d", len(sink.AllMetrics()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// iftCheckFinal checks that the last export holds exactly the connections
// of want, with exactly their counts, and nothing overflowed.
func iftCheckFinal(t *testing.T, what string, exports []ritExport, want ...*iftUDP) {
	t.Helper()
	require.NotEmpty(t, exports, "%s: no export", what)
	final := exports[len(exports)-1]
	for _, u := range want {
		p, ok := final.conns[u.conn]
		if !ok {
			t.Errorf("%s: %s not in the final export; it has %v", what, u.conn, ritKeys(final))
			continue
		}
		assert.Equal(t, u.packets, p.packets, "%s: %s packets", what, u.conn)
		assert.Equal(t, u.bytes, p.bytes, "%s: %s bytes", what, u.conn)
	}
	assert.Len(t, final.conns, len(want), "%s: connections in the final export: %v", what, ritKeys(final))
	assert.Equal(t, int64(len(want)), final.connections, "%s: xdpflow.connections", what)
	assert.Zero(t, final.overflowPackets, "%s: xdpflow.overflow.packets", what)
	assert.Zero(t, final.eventsDropped, "%s: xdpflow.events.dropped", what)
}

func iftCounts(p ritPoint) string { return fmt.Sprintf("%d packets %d bytes", p.packets, p.bytes) }

// iftAttachLogs returns the "XDP program attached" entries of logs as
// interface -> "attach_mode/requested_attach_mode".
func iftAttachLogs(logs *observer.ObservedLogs) map[string]string {
	out := map[string]string{}
	for _, e := range logs.FilterMessage("XDP program attached").All() {
		m := e.ContextMap()
		out[fmt.Sprint(m["interface"])] = fmt.Sprintf("%v/%v", m["attach_mode"], m["requested_attach_mode"])
	}
	return out
}

// TestIntegrationReceiverInterfaceDeleted attaches one receiver to veth-rcv
// and veth-rcv2, sends UDP over both, then deletes veth-rcv2 while the
// receiver runs. The receiver logs one warning naming it (however many
// snapshots follow), keeps exporting the counts made on it unchanged,
// keeps counting veth-rcv exactly, attaches to veth-rcv2 again when it is
// created again and counts its new connections, and shuts down without
// error.
func TestIntegrationReceiverInterfaceDeleted(t *testing.T) {
	privtest.RequireRoot(t)
	const deletedMsg = "Interface deleted"
	for _, mode := range ritModes {
		t.Run(mode, func(t *testing.T) {
			pair := netnstest.New(t)
			iftAddSecondVeth(t, pair)
			cfg := ritConfig(mode)
			cfg.Interfaces = []string{netnstest.ReceiverIface, iftReceiver2Iface}
			sink := new(consumertest.MetricsSink)
			tel := ritTelemetry(t)
			r, logs := iftNewObserved(t, cfg, sink, tel)
			began := time.Now()
			require.NoError(t, ritStart(pair, r))
			assert.Equal(t, map[string]string{
				netnstest.ReceiverIface: mode + "/" + mode,
				iftReceiver2Iface:       mode + "/" + mode,
			}, iftAttachLogs(logs), "attach log entries")
			id := ritProgID(t, r)
			for _, iface := range cfg.Interfaces {
				xdp, ok := netnstest.LinkXDP(t, pair.Receiver, iface)
				require.True(t, ok && xdp.ProgID == id, "%s: the link shows program %d (attached %v), want the receiver's %d", iface, xdp.ProgID, ok, id)
			}

			kept := iftNewUDP(t, pair, netnstest.SenderIPv4, netnstest.ReceiverIPv4, 40401, netnstest.ReceiverIface)
			doomed := iftNewUDP(t, pair, iftSender2IPv4, iftReceiver2IPv4, 40402, iftReceiver2Iface)
			doomed6 := iftNewUDP(t, pair, iftSender2IPv6, iftReceiver2IPv6, 40406, iftReceiver2Iface)
			kept.send(t, 64)
			doomed.send(t, 48)
			doomed6.send(t, 40)
			iftWaitExport(t, sink, kept, doomed, doomed6)

			deleted := time.Now()
			require.NoError(t, netnstest.DeleteLink(pair.Receiver, iftReceiver2Iface))
			// The next snapshot (within collection_interval) notices it.
			deadline := time.Now().Add(5 * time.Second)
			for logs.FilterMessageSnippet(deletedMsg).Len() == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("no %q warning within 5s of the deletion", deletedMsg)
				}
				time.Sleep(10 * time.Millisecond)
			}
			warnedAfter := time.Since(deleted)
			if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); !ok || xdp.ProgID != id {
				t.Errorf("after the deletion %s shows program %d (attached %v), want %d", netnstest.ReceiverIface, xdp.ProgID, ok, id)
			}

			// Traffic on the other interface is still counted exactly, and
			// later snapshots (at least 10) do not repeat the warning.
			kept.send(t, 64)
			n := iftWaitExport(t, sink, kept, doomed, doomed6)
			iftWaitExports(t, sink, n+10)

			// The interface comes back: the program is attached to it
			// again, and its new connections are counted.
			require.NoError(t, doomed.server.Close()) // its address comes back below
			iftAddSecondVeth(t, pair)
			iftWaitAttached(t, pair.Receiver, iftReceiver2Iface, id)
			back := iftNewUDP(t, pair, iftSender2IPv4, iftReceiver2IPv4, 40403, iftReceiver2Iface)
			back.send(t, 32)
			kept.send(t, 8)
			iftWaitExport(t, sink, kept, doomed, doomed6, back)
			assert.Len(t, logs.FilterMessage("XDP program attached").FilterField(zap.String("interface", iftReceiver2Iface)).All(), 2,
				"attached at start and again when the interface came back")

			ritShutdown(t, r, sink, tel)
			ended := time.Now()
			for _, iface := range cfg.Interfaces {
				if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, iface); ok {
					t.Errorf("program %d still attached to %s after Shutdown", xdp.ProgID, iface)
				}
			}

			warns := logs.FilterLevelExact(zapcore.WarnLevel).All()
			require.Len(t, warns, 1, "warnings logged: %v", warns)
			assert.Contains(t, warns[0].Message, deletedMsg)
			assert.Equal(t, iftReceiver2Iface, warns[0].ContextMap()["interface"], "the warning's interface field")
			assert.Empty(t, logs.Filter(func(e observer.LoggedEntry) bool { return e.Level > zapcore.WarnLevel }).All(), "errors logged")

			exports := ritDecode(t, sink.AllMetrics())
			// Every connection, those of the deleted interface included,
			// stays in every later export, with counts that never
			// decrease (ritCheckExports), and never grow either.
			ritCheckExports(t, exports, began, ended)
			after := 0
			for i, e := range exports {
				if e.ts.AsTime().Before(deleted) {
					continue
				}
				after++
				for _, u := range []*iftUDP{doomed, doomed6} {
					if p := e.conns[u.conn]; p.packets != u.packets || p.bytes != u.bytes {
						t.Errorf("export %d (after the deletion): %s: %d packets %d bytes, want %d and %d", i, u.conn, p.packets, p.bytes, u.packets, u.bytes)
					}
				}
			}
			iftCheckFinal(t, "final export", exports, kept, doomed, doomed6, back)
			t.Logf("%s mode: warning %v after the deletion, logged once over %d exports after it; final: %s %d packets %d bytes, %s %d/%d, %s %d/%d",
				mode, warnedAfter.Round(time.Millisecond), after, kept.conn, kept.packets, kept.bytes,
				doomed.conn, doomed.packets, doomed.bytes, doomed6.conn, doomed6.packets, doomed6.bytes)
		})
	}
}

// TestIntegrationReceiverFollowsPatterns configures a pattern that
// matches both veth ends of the receiver namespace and excludes the first:
// the receiver starts attached to nothing, attaches to veth-rcv2 when it
// is created and counts its traffic, never counts veth-rcv's, and forgets
// veth-rcv2 when it is deleted, without a warning. The attached-interface
// gauge follows: 0, 1, 0.
func TestIntegrationReceiverFollowsPatterns(t *testing.T) {
	privtest.RequireRoot(t)
	pair := netnstest.New(t)
	cfg := ritConfig("native")
	cfg.Interfaces = []string{"veth-*"}
	cfg.ExcludeInterfaces = []string{netnstest.ReceiverIface}
	sink := new(consumertest.MetricsSink)
	tel := ritTelemetry(t)
	r, logs := iftNewObserved(t, cfg, sink, tel)
	require.NoError(t, ritStart(pair, r))
	id := ritProgID(t, r)
	n := len(sink.AllMetrics())
	iftWaitExports(t, sink, n+2)
	assert.Equal(t, int64(0), iftAttachedGauge(t, tel))

	iftAddSecondVeth(t, pair)
	iftWaitAttached(t, pair.Receiver, iftReceiver2Iface, id)
	excluded := iftNewUDP(t, pair, netnstest.SenderIPv4, netnstest.ReceiverIPv4, 40501, netnstest.ReceiverIface)
	matched := iftNewUDP(t, pair, iftSender2IPv4, iftReceiver2IPv4, 40502, iftReceiver2Iface)
	excluded.send(t, 16)
	matched.send(t, 24)
	n = iftWaitExport(t, sink, matched)
	assert.Equal(t, int64(1), iftAttachedGauge(t, tel))
	_, attached := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface)
	assert.False(t, attached, "the excluded interface has no program")

	require.NoError(t, netnstest.DeleteLink(pair.Receiver, iftReceiver2Iface))
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessageSnippet("Interface deleted").Len() == 0 {
		require.False(t, time.Now().After(deadline), "no deletion logged within 5s")
		time.Sleep(10 * time.Millisecond)
	}
	iftWaitExports(t, sink, len(sink.AllMetrics())+2)
	assert.Equal(t, int64(0), iftAttachedGauge(t, tel))
	ritShutdown(t, r, sink, tel)

	assert.Empty(t, logs.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zapcore.WarnLevel }).All(), "warnings or errors logged")
	final := ritDecode(t, sink.AllMetrics())
	iftCheckFinal(t, "final export", final, matched)
	for i, e := range final {
		if _, ok := e.conns[excluded.conn]; ok {
			t.Errorf("export %d counts %s, on the excluded interface", i, excluded.conn)
		}
	}
	t.Logf("attached when created, %d exports before the deletion; final %s: %d packets %d bytes", n, matched.conn, matched.packets, matched.bytes)
}

// iftAttachedGauge returns the last value of otelcol_xdpflow_interfaces_attached.
func iftAttachedGauge(t *testing.T, tel *componenttest.Telemetry) int64 {
	t.Helper()
	m, err := tel.GetMetric("otelcol_xdpflow_interfaces_attached")
	require.NoError(t, err)
	g, ok := m.Data.(metricdata.Gauge[int64])
	require.True(t, ok, "otelcol_xdpflow_interfaces_attached is a %T", m.Data)
	require.Len(t, g.DataPoints, 1)
	return g.DataPoints[0].Value
}

// TestIntegrationReceiverTwoInstances runs two receivers in one process,
// one on veth-rcv and one on veth-rcv2, with traffic on both: each exports
// exactly its own interface's connections. Shutting the first down
// detaches it only: the second keeps its program and keeps counting.
func TestIntegrationReceiverTwoInstances(t *testing.T) {
	privtest.RequireRoot(t)
	for _, mode := range ritModes {
		t.Run(mode, func(t *testing.T) {
			pair := netnstest.New(t)
			iftAddSecondVeth(t, pair)
			cfg1, cfg2 := ritConfig(mode), ritConfig(mode)
			cfg2.Interfaces = []string{iftReceiver2Iface}
			sink1, sink2 := new(consumertest.MetricsSink), new(consumertest.MetricsSink)
			tel1, tel2 := ritTelemetry(t), ritTelemetry(t)
			r1 := ritNew(t, cfg1, sink1, tel1)
			r2 := ritNew(t, cfg2, sink2, tel2)
			began := time.Now()
			require.NoError(t, ritStart(pair, r1))
			require.NoError(t, ritStart(pair, r2))
			id1, id2 := ritProgID(t, r1), ritProgID(t, r2)
			require.NotEqual(t, id1, id2, "the receivers share a program")
			for iface, id := range map[string]uint32{netnstest.ReceiverIface: id1, iftReceiver2Iface: id2} {
				xdp, ok := netnstest.LinkXDP(t, pair.Receiver, iface)
				require.True(t, ok && xdp.ProgID == id, "%s: the link shows program %d (attached %v), want %d", iface, xdp.ProgID, ok, id)
			}

			a4 := iftNewUDP(t, pair, netnstest.SenderIPv4, netnstest.ReceiverIPv4, 40501, netnstest.ReceiverIface)
			a6 := iftNewUDP(t, pair, netnstest.SenderIPv6, netnstest.ReceiverIPv6, 40506, netnstest.ReceiverIface)
			b4 := iftNewUDP(t, pair, iftSender2IPv4, iftReceiver2IPv4, 40511, iftReceiver2Iface)
			b6 := iftNewUDP(t, pair, iftSender2IPv6, iftReceiver2IPv6, 40516, iftReceiver2Iface)
			// Interleaved, so both programs run at the same time.
			for range 3 {
				a4.send(t, 40)
				b4.send(t, 30)
				a6.send(t, 20)
				b6.send(t, 50)
			}
			iftWaitExport(t, sink1, a4, a6)
			iftWaitExport(t, sink2, b4, b6)

			ritShutdown(t, r1, sink1, tel1)
			mid := time.Now()
			if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); ok {
				t.Errorf("program %d still on %s after the first receiver's Shutdown", xdp.ProgID, netnstest.ReceiverIface)
			}
			if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, iftReceiver2Iface); !ok || xdp.ProgID != id2 {
				t.Errorf("after the first receiver's Shutdown %s shows program %d (attached %v), want %d", iftReceiver2Iface, xdp.ProgID, ok, id2)
			}
			// Traffic on veth-rcv is no longer counted by anyone; veth-rcv2
			// still is.
			a4Counted := *a4
			a4.send(t, 10)
			b4.send(t, 25)
			ritShutdown(t, r2, sink2, tel2)
			ended := time.Now()

			exports1 := ritDecode(t, sink1.AllMetrics())
			exports2 := ritDecode(t, sink2.AllMetrics())
			ritCheckExports(t, exports1, began, mid)
			ritCheckExports(t, exports2, began, ended)
			iftCheckFinal(t, "receiver 1 ("+netnstest.ReceiverIface+")", exports1, &a4Counted, a6)
			iftCheckFinal(t, "receiver 2 ("+iftReceiver2Iface+")", exports2, b4, b6)
			f1, f2 := exports1[len(exports1)-1], exports2[len(exports2)-1]
			t.Logf("%s mode: receiver 1 (program %d, %d exports): %s: %s, %s: %s (then %d more datagrams, counted by no one); receiver 2 (program %d, %d exports): %s: %s, %s: %s",
				mode, id1, len(exports1), a4.conn, iftCounts(f1.conns[a4.conn]), a6.conn, iftCounts(f1.conns[a6.conn]), a4.packets-a4Counted.packets,
				id2, len(exports2), b4.conn, iftCounts(f2.conns[b4.conn]), b6.conn, iftCounts(f2.conns[b6.conn]))
		})
	}
}

// TestIntegrationReceiverLoopback: lo has no native XDP, so native mode
// fails Start with an error that says to use generic mode, leaving
// nothing attached; auto mode starts, logs attach_mode generic, and
// counts UDP sent over lo inside the namespace.
func TestIntegrationReceiverLoopback(t *testing.T) {
	privtest.RequireRoot(t)
	pair := netnstest.New(t)

	cfg := ritConfig("native")
	cfg.Interfaces = []string{"lo"}
	sink := new(consumertest.MetricsSink)
	r := ritNew(t, cfg, sink, nil)
	err := ritStart(pair, r)
	require.Error(t, err, "native mode on lo started")
	t.Logf("native mode on lo: %v", err)
	assert.Contains(t, err.Error(), "attach xdp to lo in native mode")
	assert.Contains(t, err.Error(), "try attach_mode: generic")
	if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, "lo"); ok {
		t.Errorf("program %d attached to lo after the failed Start", xdp.ProgID)
	}
	assert.NoError(t, r.Shutdown(context.Background()))
	assert.Empty(t, sink.AllMetrics(), "a receiver that failed to start exported")

	cfg = ritConfig("auto")
	cfg.Interfaces = []string{"lo"}
	sink = new(consumertest.MetricsSink)
	tel := ritTelemetry(t)
	r, logs := iftNewObserved(t, cfg, sink, tel)
	began := time.Now()
	require.NoError(t, ritStart(pair, r))
	attached := logs.FilterMessage("XDP program attached").All()
	require.Len(t, attached, 1, "attach log entries")
	fields := attached[0].ContextMap()
	t.Logf("auto mode on lo: %s %v", attached[0].Message, fields)
	assert.Equal(t, "lo", fields["interface"])
	assert.Equal(t, "generic", fields["attach_mode"])
	assert.Equal(t, "auto", fields["requested_attach_mode"])
	id := ritProgID(t, r)
	if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, "lo"); !ok || xdp.ProgID != id {
		t.Fatalf("the link shows program %d on lo (attached %v), want %d", xdp.ProgID, ok, id)
	}

	// UDP over lo inside the receiver namespace: one frame per datagram.
	loopback := netip.MustParseAddr("127.0.0.1")
	server := ritListenUDP(t, pair.Receiver, loopback, ritPort)[0]
	client := ritListenUDP(t, pair.Receiver, loopback, 40601)[0]
	var dgrams []netnstest.Datagram
	sizes := netnstest.UDPSizes(50, 1472)
	for _, s := range sizes {
		dgrams = append(dgrams, netnstest.Datagram{From: client, Size: s})
	}
	wantBytes := ritSendUDP(t, server, netip.AddrPortFrom(loopback, ritPort), dgrams, 10, 0)
	ritShutdown(t, r, sink, tel)
	ended := time.Now()
	if xdp, ok := netnstest.LinkXDP(t, pair.Receiver, "lo"); ok {
		t.Errorf("program %d still on lo after Shutdown", xdp.ProgID)
	}
	assert.Empty(t, logs.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zapcore.WarnLevel }).All(), "warnings or errors logged")
	exports := ritDecode(t, sink.AllMetrics())
	ritCheckExports(t, exports, began, ended)
	lo := &iftUDP{conn: ritConn{addr: "127.0.0.1", sport: 40601, dport: ritPort, transport: "udp", netType: "ipv4", iface: "lo", direction: directionReceive},
		packets: int64(len(sizes)), bytes: int64(wantBytes)}
	iftCheckFinal(t, "auto mode on lo", exports, lo)
	t.Logf("auto mode on lo: %s: %s (sent %d datagrams, %d frame bytes), %d exports",
		lo.conn, iftCounts(exports[len(exports)-1].conns[lo.conn]), lo.packets, lo.bytes, len(exports))
}
