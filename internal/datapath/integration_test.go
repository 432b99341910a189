//go:build linux

package datapath

// Integration tests: real traffic between two network namespaces joined by
// a veth pair, with the program attached to the receiver end, in native
// and in generic mode. They need root.

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// itModes are the attach modes every integration test runs in. veth
// supports native XDP, so both must work on it.
var itModes = []AttachMode{AttachNative, AttachGeneric}

// itIOTimeout bounds every socket operation of the integration tests.
const itIOTimeout = 10 * time.Second

// itEnv is a test network with the program attached to the receiver veth.
type itEnv struct {
	pair    *netnstest.Pair
	d       *Datapath
	ifindex uint32
	mode    AttachMode
}

// itLoad loads the program counting TCP and UDP to port 8080; it is closed
// when the test ends.
func itLoad(t *testing.T) *Datapath {
	t.Helper()
	opts := DefaultOptions()
	opts.MaxConnections = 1024
	d, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// itAttach attaches d to the receiver veth, inside the receiver namespace.
func itAttach(pair *netnstest.Pair, d *Datapath, mode AttachMode) (AttachMode, error) {
	var used AttachMode
	err := pair.Do(pair.Receiver, func() error {
		var err error
		used, err = d.Attach(netnstest.ReceiverIface, mode)
		return err
	})
	return used, err
}

func newITEnv(t *testing.T, mode AttachMode) *itEnv {
	t.Helper()
	pair := netnstest.New(t)
	d := itLoad(t) // closed before the pair is removed (cleanups run LIFO)
	used, err := itAttach(pair, d, mode)
	if err != nil {
		t.Fatalf("Attach(%s, %s): %v", netnstest.ReceiverIface, mode, err)
	}
	if used != mode {
		t.Fatalf("Attach(%s, %s) used %s", netnstest.ReceiverIface, mode, used)
	}
	idx, err := netnstest.Ifindex(pair.Receiver, netnstest.ReceiverIface)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Attached()[netnstest.ReceiverIface]; got != idx {
		t.Fatalf("Attached()[%s] = %d, want ifindex %d", netnstest.ReceiverIface, got, idx)
	}
	return &itEnv{pair: pair, d: d, ifindex: uint32(idx), mode: mode}
}

// key returns the flow key of traffic from src:sport to port dport.
func (e *itEnv) key(src netip.Addr, sport, dport uint16, proto Protocol) FlowKey {
	k := FlowKey{SrcAddr: src.As16(), Ifindex: e.ifindex, SrcPort: sport, DstPort: dport, Proto: proto, Family: FamilyIPv6}
	if src.Is4() {
		k.Family = FamilyIPv4
	}
	return k
}

func itFlows(t *testing.T, d *Datapath) map[FlowKey]FlowValue {
	t.Helper()
	var tbl FlowTable
	if err := d.ReadFlows(&tbl); err != nil {
		t.Fatalf("ReadFlows: %v", err)
	}
	m := make(map[FlowKey]FlowValue, tbl.Len())
	for i, k := range tbl.Keys {
		if _, dup := m[k]; dup {
			t.Errorf("ReadFlows returned %+v twice", k)
		}
		m[k] = tbl.Values[i]
	}
	return m
}

// itStableFlow polls the flow of k until its packet count has not changed
// for 300ms (at most 10s) and returns it; ok is false if it never appears.
func itStableFlow(t *testing.T, d *Datapath, k FlowKey) (v FlowValue, ok bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last FlowValue
	lastChange := time.Now()
	for time.Now().Before(deadline) {
		cur, found := itFlows(t, d)[k]
		if cur.Packets != last.Packets || found != ok {
			last, ok, lastChange = cur, found, time.Now()
		} else if time.Since(lastChange) >= 300*time.Millisecond {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last, ok
}

// itSendUDP sends one datagram per payload size from src:sport in the
// sender namespace to dst:dport in the receiver namespace, where a socket
// reads them, waiting for them every 32 datagrams, and returns their
// total frame bytes (see netnstest.SendUDP).
func itSendUDP(t *testing.T, pair *netnstest.Pair, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, sizes []int) uint64 {
	t.Helper()
	return netnstest.SendUDPFlow(t, pair, netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport), sizes,
		netnstest.UDPPacing{Batch: 32, Timeout: itIOTimeout})
}

func TestIntegrationTraffic(t *testing.T) {
	privtest.RequireRoot(t)
	for _, mode := range itModes {
		t.Run(mode.String(), func(t *testing.T) {
			e := newITEnv(t, mode)
			want := map[FlowKey]bool{}
			t.Run("udp4", func(t *testing.T) {
				want[itUDP(t, e, netnstest.SenderIPv4, netnstest.ReceiverIPv4, 40004)] = true
			})
			t.Run("udp6", func(t *testing.T) {
				want[itUDP(t, e, netnstest.SenderIPv6, netnstest.ReceiverIPv6, 40006)] = true
			})
			t.Run("tcp4", func(t *testing.T) {
				want[itTCP(t, e, netnstest.SenderIPv4, netnstest.ReceiverIPv4)] = true
			})
			t.Run("tcp6", func(t *testing.T) {
				want[itTCP(t, e, netnstest.SenderIPv6, netnstest.ReceiverIPv6)] = true
			})
			t.Run("other-port", func(t *testing.T) { itOtherPort(t, e) })

			// Exactly the flows above were counted, nothing overflowed.
			flows := itFlows(t, e.d)
			for k, v := range flows {
				if !want[k] {
					t.Errorf("unexpected flow %+v: %+v", k, v)
				}
			}
			if len(flows) != len(want) {
				t.Errorf("%d flows in the table, want %d", len(flows), len(want))
			}
			s, err := e.d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if s.OverflowPackets != 0 || s.OverflowBytes != 0 {
				t.Errorf("overflow counters %d packets %d bytes, want 0", s.OverflowPackets, s.OverflowBytes)
			}
			if s.NewConnections != uint64(len(want)) {
				t.Errorf("NewConnections = %d, want %d", s.NewConnections, len(want))
			}
		})
	}
}

// itUDP sends K datagrams of known sizes to port 8080 and checks the flow's
// key, counters and timestamps exactly.
func itUDP(t *testing.T, e *itEnv, src, dst netip.Addr, sport uint16) FlowKey {
	sizes := netnstest.UDPSizes(300, netnstest.MaxUDPPayload(src)) // MTU-sized frames
	start := time.Now()
	wantBytes := itSendUDP(t, e.pair, src, sport, dst, 8080, sizes)
	end := time.Now()

	k := e.key(src, sport, 8080, UDP)
	v, ok := itFlows(t, e.d)[k]
	if !ok {
		t.Fatalf("no flow %+v; flows: %+v", k, itFlows(t, e.d))
	}
	if v.Packets != uint64(len(sizes)) || v.Bytes != wantBytes {
		t.Errorf("flow %s:%d: %d packets %d bytes, want %d and %d", src, sport, v.Packets, v.Bytes, len(sizes), wantBytes)
	}
	itCheckSeen(t, v, start, end)
	return k
}

// itTCP runs a TCP conversation to port 8080 while a capture collects the
// receiver veth's inbound packets to port 8080, and checks that the flow's
// counters equal the capture's packet count and frame bytes.
func itTCP(t *testing.T, e *itEnv, src, dst netip.Addr) FlowKey {
	capture := netnstest.StartCapture(t, e.pair.Receiver, netnstest.ReceiverIface, netnstest.ToPort(uint8(TCP), 8080))
	start := time.Now()
	client := itTCPConversation(t, e.pair, src, netip.AddrPortFrom(dst, 8080), 200<<10)
	end := time.Now()
	sport := client.Port()
	k := e.key(src, sport, 8080, TCP)
	// The server has read the client's FIN, so every client packet has
	// passed XDP; wait for the counters to settle anyway.
	v, ok := itStableFlow(t, e.d, k)
	res, err := capture.Stop()
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	if !ok {
		t.Fatalf("no flow %+v; flows: %+v", k, itFlows(t, e.d))
	}
	pcapPackets, pcapBytes := res.Pcap.Count(func(f netnstest.Frame) bool {
		return f.Proto == uint8(TCP) && f.Src == src && f.SrcPort == sport && f.DstPort == 8080
	})
	if pcapPackets != len(res.Pcap.Packets) {
		t.Errorf("capture holds %d packets, %d of them from %s:%d", len(res.Pcap.Packets), pcapPackets, src, sport)
	}
	for i, p := range res.Pcap.Packets {
		if p.OrigLen > 1514 {
			t.Errorf("captured packet %d has %d bytes: larger than the MTU, offloads are on", i, p.OrigLen)
			break
		}
	}
	if pcapPackets < 100 || pcapBytes < 200<<10 {
		t.Errorf("capture has only %d packets %d bytes", pcapPackets, pcapBytes)
	}
	if v.Packets != uint64(pcapPackets) || v.Bytes != pcapBytes {
		t.Errorf("flow %s:%d: %d packets %d bytes; the capture saw %d packets %d bytes",
			src, sport, v.Packets, v.Bytes, pcapPackets, pcapBytes)
	}
	t.Logf("%s mode, flow %s:%d: %d packets %d bytes; capture: %d packets %d bytes",
		e.mode, src, sport, v.Packets, v.Bytes, pcapPackets, pcapBytes)
	if f := itFlows(t, e.d)[k]; f.Packets != v.Packets {
		t.Errorf("flow still growing after the capture: %d then %d packets", v.Packets, f.Packets)
	}
	itCheckSeen(t, v, start, end)
	return k
}

// itCheckSeen checks that v's first and last packets fall within the
// wall-clock interval [start, end].
func itCheckSeen(t *testing.T, v FlowValue, start, end time.Time) {
	t.Helper()
	clock, err := MeasureClockOffset()
	if err != nil {
		t.Fatal(err)
	}
	// Both clocks come from the same timekeeper; allow for the offset's
	// measurement error, and for the coarse clock lagging by a tick.
	const slack = 2 * time.Millisecond
	first, last := clock.Wall(v.FirstSeenNs), clock.Wall(v.LastSeenNs)
	if first.Before(start.Add(-slack-MaxLag())) || last.After(end.Add(slack)) || last.Before(first) {
		t.Errorf("first seen %v, last seen %v: want start %v <= first <= last <= end %v",
			first.Format(time.RFC3339Nano), last.Format(time.RFC3339Nano), start.Format(time.RFC3339Nano), end.Format(time.RFC3339Nano))
	}
}

// itTCPConversation is the TCP conversation of these tests: 50 round
// trips, then the client's bulk write of bulk bytes.
func itTCPConversation(t *testing.T, pair *netnstest.Pair, src netip.Addr, to netip.AddrPort, bulk int) netip.AddrPort {
	t.Helper()
	return netnstest.TCPConversation{Rounds: 50, Bulk: bulk, Timeout: itIOTimeout}.Converse(t, pair, src, to)
}

// itOtherPort sends UDP and TCP to port 9090, which is not counted.
func itOtherPort(t *testing.T, e *itEnv) {
	before := itFlows(t, e.d)
	itSendUDP(t, e.pair, netnstest.SenderIPv4, 40090, netnstest.ReceiverIPv4, 9090, netnstest.UDPSizes(40, 1000))
	itSendUDP(t, e.pair, netnstest.SenderIPv6, 40090, netnstest.ReceiverIPv6, 9090, netnstest.UDPSizes(40, 1000))
	itTCPConversation(t, e.pair, netnstest.SenderIPv4, netip.AddrPortFrom(netnstest.ReceiverIPv4, 9090), 20<<10)
	time.Sleep(100 * time.Millisecond)
	after := itFlows(t, e.d)
	for k, v := range after {
		if k.DstPort != 8080 || before[k] != v {
			t.Errorf("traffic to port 9090 changed flow %+v: %+v -> %+v", k, before[k], v)
		}
	}
	if len(after) != len(before) {
		t.Errorf("%d flows before, %d after", len(before), len(after))
	}
}

func itProgID(t *testing.T, d *Datapath) uint32 {
	t.Helper()
	info, err := d.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("program ID unavailable")
	}
	return uint32(id)
}

func TestIntegrationAttachDetach(t *testing.T) {
	privtest.RequireRoot(t)
	wantMode := map[AttachMode]int{AttachNative: 1, AttachGeneric: 2}
	for _, mode := range itModes {
		t.Run(mode.String(), func(t *testing.T) {
			pair := netnstest.New(t)
			first, second := itLoad(t), itLoad(t)
			ns, iface := pair.Receiver, netnstest.ReceiverIface
			if _, ok := netnstest.LinkXDP(t, ns, iface); ok {
				t.Fatalf("%s has an XDP program before the test", iface)
			}
			if _, err := itAttach(pair, first, mode); err != nil {
				t.Fatalf("Attach first: %v", err)
			}
			x, ok := netnstest.LinkXDP(t, ns, iface)
			if !ok || x.ProgID != itProgID(t, first) || x.Mode != wantMode[mode] {
				t.Fatalf("the link shows program %d mode %d (attached %v), want %d mode %d",
					x.ProgID, x.Mode, ok, itProgID(t, first), wantMode[mode])
			}

			// A second program is refused, in every mode, and the first
			// stays attached.
			for _, m2 := range []AttachMode{AttachAuto, AttachNative, AttachGeneric} {
				_, err := itAttach(pair, second, m2)
				if err == nil {
					t.Fatalf("second program attached in %s mode over the first", m2)
				}
				if !strings.Contains(err.Error(), iface) {
					t.Errorf("Attach error %q does not name the interface %s", err, iface)
				}
				t.Logf("second attach in %s mode: %v", m2, err)
			}
			if len(second.Attached()) != 0 {
				t.Errorf("second datapath reports attachments %v", second.Attached())
			}
			if x2, _ := netnstest.LinkXDP(t, ns, iface); x2.ProgID != itProgID(t, first) {
				t.Fatalf("after the refused attach the link shows program %d, want %d", x2.ProgID, itProgID(t, first))
			}

			// The first keeps counting; the second sees nothing.
			sizes := netnstest.UDPSizes(64, 1400)
			wantBytes := itSendUDP(t, pair, netnstest.SenderIPv4, 40001, netnstest.ReceiverIPv4, 8080, sizes)
			idx, err := netnstest.Ifindex(ns, iface)
			if err != nil {
				t.Fatal(err)
			}
			e := &itEnv{ifindex: uint32(idx)}
			k := e.key(netnstest.SenderIPv4, 40001, 8080, UDP)
			if v := itFlows(t, first)[k]; v.Packets != uint64(len(sizes)) || v.Bytes != wantBytes {
				t.Errorf("first program counted %d packets %d bytes, want %d and %d", v.Packets, v.Bytes, len(sizes), wantBytes)
			}
			if f := itFlows(t, second); len(f) != 0 {
				t.Errorf("second program counted %+v", f)
			}

			// Close detaches.
			if err := first.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if x, ok := netnstest.LinkXDP(t, ns, iface); ok {
				t.Fatalf("program %d still attached after Close", x.ProgID)
			}

			// The interface is free again: the second attaches, and
			// Detach removes it.
			if _, err := itAttach(pair, second, mode); err != nil {
				t.Fatalf("Attach second after the first closed: %v", err)
			}
			if x, ok := netnstest.LinkXDP(t, ns, iface); !ok || x.ProgID != itProgID(t, second) {
				t.Fatalf("the link shows program %d (attached %v), want %d", x.ProgID, ok, itProgID(t, second))
			}
			if err := second.Detach(iface); err != nil {
				t.Fatalf("Detach: %v", err)
			}
			if x, ok := netnstest.LinkXDP(t, ns, iface); ok {
				t.Fatalf("program %d still attached after Detach", x.ProgID)
			}
		})
	}
}
