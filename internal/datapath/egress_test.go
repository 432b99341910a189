//go:build linux

package datapath

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
	"golang.org/x/sys/unix"
)

// tcActUnspec is TC_ACT_UNSPEC (TCX_NEXT under TCX), -1, as Run returns
// it: the packet goes on unchanged.
const tcActUnspec = 0xffffffff

// skBuff is struct __sk_buff as BPF_PROG_TEST_RUN takes it for a TC
// program (the context of RunOptions): 192 bytes on Linux 6.x, of which
// the kernel takes mark, priority, ingress_ifindex, ifindex, cb, tstamp,
// wire_len, gso_segs, gso_size and hwtstamp, and wants the rest zero.
type skBuff [48]uint32

// Indexes of the __sk_buff fields the tests set, in 4-byte words
// (offsetof(struct __sk_buff, gso_segs) is 164).
const (
	skbIfindex = 10
	skbGSOSegs = 41
	skbGSOSize = 44
)

// gsoSkb returns the context of a GSO packet of segs segments (0: left
// for the program to work out) of size payload bytes each.
func gsoSkb(segs, size uint32) *skBuff {
	var c skBuff
	c[skbGSOSegs], c[skbGSOSize] = segs, size
	return &c
}

// runEgress runs the egress program once on frame with the context ctx
// (nil: none) and fails the test unless it returned TC_ACT_UNSPEC.
func runEgress(t testing.TB, d *Datapath, frame []byte, ctx *skBuff) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: frame}
	if ctx != nil {
		opts.Context = ctx
	}
	ret, err := d.EgressProgram().Run(opts)
	if err != nil {
		t.Fatalf("run egress program on %d-byte frame: %v", len(frame), err)
	}
	if ret != tcActUnspec {
		t.Fatalf("egress program returned %#x on %d-byte frame, want TC_ACT_UNSPEC (-1)", ret, len(frame))
	}
}

// sent returns a frame this host sends from local (an address and port)
// to remote, with payloadLen bytes after the TCP or UDP header, behind
// the VLAN tags.
func sent(proto uint8, local string, lport uint16, remote string, rport uint16, payloadLen int, tags ...vlan) []byte {
	l, r := addr(local), addr(remote)
	payload := l4(proto, lport, rport, payloadLen)
	if l.Is4() {
		return ether(etherTypeIPv4, ipv4{src: l, dst: r, proto: proto}.packet(payload), tags...)
	}
	return ether(etherTypeIPv6, ipv6{src: l, dst: r, proto: proto}.packet(payload), tags...)
}

// sentKey is the key a frame from sent(proto, local, lport, remote,
// rport) is counted in with the default dimensions: the remote side as
// the source, the local port as the destination port.
func sentKey(proto uint8, remote string, rport, lport uint16) FlowKey {
	k := wantKey(remote, proto, rport, lport)
	k.Direction = Transmit
	return k
}

// Addresses of the transmit cases: this host and its peers.
const (
	local4  = "198.51.100.1"
	remote4 = "198.51.100.2"
	local6  = "fd00:db8::1"
	remote6 = "fd00:db8::2"
)

// TestEgressFrames runs frames the host sends through the egress program
// and checks the flow each is counted in: the remote side as the source,
// the local port as the destination port and the one the port filter
// reads, the direction transmit, the frame's bytes; and that it never
// asks for a drop.
func TestEgressFrames(t *testing.T) {
	privtest.RequireRoot(t)
	ifindex := loopbackIndex(t)
	q := vlan{etherTypeVLAN, 100}
	ad := vlan{etherTypeQinQ, 200}
	withDstAddr := optsDefault
	withDstAddr.Dimensions = ConnectionDimensions()
	withDstAddr.Dimensions.DstAddr = true
	keyWithDst := func(k FlowKey, local string) FlowKey {
		k.DstAddr = addr(local).As16()
		return k
	}
	cases := []struct {
		name  string
		opts  Options
		frame []byte
		want  *FlowKey // nil: not counted
	}{
		{"ipv4 tcp from the local port", optsDefault, sent(protoTCP, local4, dport, remote4, sport, 16), ptr(sentKey(protoTCP, remote4, sport, dport))},
		{"ipv4 udp from the local port", optsDefault, sent(protoUDP, local4, dport, remote4, sport, 16), ptr(sentKey(protoUDP, remote4, sport, dport))},
		{"ipv4 tcp to the port is not counted", optsDefault, sent(protoTCP, local4, sport, remote4, dport, 16), nil},
		{"ipv4 tcp any port", optsAll, sent(protoTCP, local4, sport, remote4, 9999, 0), ptr(sentKey(protoTCP, remote4, 9999, sport))},
		{"ipv4 tcp with only udp", optsUDPOnly, sent(protoTCP, local4, dport, remote4, sport, 16), nil},
		{"ipv6 tcp", optsDefault, sent(protoTCP, local6, dport, remote6, sport, 100), ptr(sentKey(protoTCP, remote6, sport, dport))},
		{"ipv6 udp", optsDefault, sent(protoUDP, local6, dport, remote6, sport, 100), ptr(sentKey(protoUDP, remote6, sport, dport))},
		{"ipv6 udp to the port is not counted", optsDefault, sent(protoUDP, local6, sport, remote6, dport, 100), nil},
		{"vlan ipv4 tcp", optsDefault, sent(protoTCP, local4, dport, remote4, sport, 16, q), ptr(sentKey(protoTCP, remote4, sport, dport))},
		{"qinq ipv6 udp", optsDefault, sent(protoUDP, local6, dport, remote6, sport, 16, ad, q), ptr(sentKey(protoUDP, remote6, sport, dport))},
		{"local address kept as the destination", withDstAddr, sent(protoTCP, local4, dport, remote4, sport, 16), ptr(keyWithDst(sentKey(protoTCP, remote4, sport, dport), local4))},
		{"ipv4 non-first fragment", optsDefault,
			ether(etherTypeIPv4, ipv4{src: addr(local4), dst: addr(remote4), proto: protoUDP, fragOffset: 185}.packet(make([]byte, 16))),
			ptr(sentKey(protoUDP, remote4, 0, 0))},
		{"ipv4 icmp", optsAll, ether(etherTypeIPv4, ipv4{src: addr(local4), dst: addr(remote4), proto: protoICMP}.packet(icmpEcho(8, 32))), nil},
		{"ipv4 total length past the frame", optsAll, sent(protoTCP, local4, dport, remote4, sport, 16)[:ethHdrLen+ipv4HdrLen+tcpHdrLen+8], nil},
		{"arp", optsAll, ether(etherTypeARP, arp(addr(local4), addr(remote4))), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDatapath(t, withTransmit(tc.opts))
			runEgress(t, d, tc.frame, nil)
			flows := readFlows(t, d)
			st := readStats(t, d)
			if st.OverflowPackets != 0 || st.OverflowBytes != 0 {
				t.Errorf("stats = %+v, want no overflow", st)
			}
			if tc.want == nil {
				if len(flows) != 0 || st.NewConnections != 0 {
					t.Fatalf("frame counted, want not: flows %+v, new connections %d", flows, st.NewConnections)
				}
				return
			}
			want := *tc.want
			want.Ifindex = ifindex
			v, ok := flows[want]
			if len(flows) != 1 || !ok || st.NewConnections != 1 {
				t.Fatalf("got flows %+v, new connections %d; want exactly %+v", flows, st.NewConnections, want)
			}
			if v.Packets != 1 || v.Bytes != uint64(len(tc.frame)) {
				t.Errorf("packets, bytes = %d, %d; want 1, %d", v.Packets, v.Bytes, len(tc.frame))
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// withTransmit returns o with the egress program loaded.
func withTransmit(o Options) Options {
	o.Transmit = true
	return o
}

// TestEgressLoadedOnlyForTransmit checks that a receive-only datapath
// does not load the egress program.
func TestEgressLoadedOnlyForTransmit(t *testing.T) {
	privtest.RequireRoot(t)
	if p := loadDatapath(t, optsDefault).EgressProgram(); p != nil {
		t.Errorf("receive only: egress program %v loaded", p)
	}
	if p := loadDatapath(t, withTransmit(optsDefault)).EgressProgram(); p == nil {
		t.Error("transmit: no egress program")
	}
}

// TestEgressGSO checks that a GSO packet is counted as the segments the
// wire carries: gso_segs packets (or the payload divided by gso_size,
// rounded up, when the stack left gso_segs 0), each carrying the headers
// up to the end of the transport header.
func TestEgressGSO(t *testing.T) {
	privtest.RequireRoot(t)
	ifindex := loopbackIndex(t)
	q := vlan{etherTypeVLAN, 100}
	cases := []struct {
		name      string
		proto     uint8
		local     string
		remote    string
		payload   int
		tags      []vlan
		segs      uint32 // gso_segs as the test sets it
		size      uint32 // gso_size
		wantSegs  uint64
		headerLen int // Ethernet to the end of the transport header
	}{
		{"ipv4 tcp 3 segments", protoTCP, local4, remote4, 3000, nil, 3, 1000, 3, ethHdrLen + ipv4HdrLen + tcpHdrLen},
		{"ipv4 tcp gso_segs unset", protoTCP, local4, remote4, 3000, nil, 0, 1000, 3, ethHdrLen + ipv4HdrLen + tcpHdrLen},
		{"ipv4 tcp short last segment", protoTCP, local4, remote4, 2500, nil, 0, 1000, 3, ethHdrLen + ipv4HdrLen + tcpHdrLen},
		{"ipv6 tcp 2 segments", protoTCP, local6, remote6, 2800, nil, 2, 1400, 2, ethHdrLen + ipv6HdrLen + tcpHdrLen},
		{"ipv4 udp gso", protoUDP, local4, remote4, 3000, nil, 3, 1000, 3, ethHdrLen + ipv4HdrLen + udpHdrLen},
		{"ipv6 udp gso", protoUDP, local6, remote6, 2000, nil, 0, 1200, 2, ethHdrLen + ipv6HdrLen + udpHdrLen},
		{"vlan ipv4 tcp", protoTCP, local4, remote4, 3000, []vlan{q}, 3, 1000, 3, ethHdrLen + vlanTagLen + ipv4HdrLen + tcpHdrLen},
		{"gso_size without segments to cut", protoTCP, local4, remote4, 500, nil, 1, 1000, 1, ethHdrLen + ipv4HdrLen + tcpHdrLen},
		{"not gso", protoTCP, local4, remote4, 1400, nil, 0, 0, 1, 0},
	}
	d := loadDatapath(t, withTransmit(optsDefault))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frame := sent(tc.proto, tc.local, dport, tc.remote, sport, tc.payload, tc.tags...)
			runEgress(t, d, frame, gsoSkb(tc.segs, tc.size))
			want := sentKey(tc.proto, tc.remote, sport, dport)
			want.Ifindex = ifindex
			var evicted FlowTable
			if err := d.Evict([]FlowKey{want}, &evicted); err != nil || evicted.Len() != 1 {
				t.Fatalf("evict %+v: %v; evicted %+v, want it", want, err, evicted.Keys)
			}
			wantBytes := uint64(len(frame) + int(tc.wantSegs-1)*tc.headerLen)
			if v := evicted.Values[0]; v.Packets != tc.wantSegs || v.Bytes != wantBytes {
				t.Errorf("packets, bytes = %d, %d; want %d, %d", v.Packets, v.Bytes, tc.wantSegs, wantBytes)
			}
		})
	}
}

// TestEgressOverflowCountsSegments checks that a GSO packet that finds the
// table full adds its wire packets and bytes to the overflow counters.
func TestEgressOverflowCountsSegments(t *testing.T) {
	privtest.RequireRoot(t)
	opts := withTransmit(optsAll)
	opts.MaxConnections = 1
	d := loadDatapath(t, opts)
	runEgress(t, d, sent(protoTCP, local4, dport, remote4, 1, 0), nil)
	frame := sent(protoTCP, local4, dport, remote4, 2, 3000)
	runEgress(t, d, frame, gsoSkb(3, 1000))
	st := readStats(t, d)
	wantBytes := uint64(len(frame) + 2*(ethHdrLen+ipv4HdrLen+tcpHdrLen))
	if st.OverflowPackets != 3 || st.OverflowBytes != wantBytes {
		t.Errorf("overflow = %d packets, %d bytes; want 3, %d", st.OverflowPackets, st.OverflowBytes, wantBytes)
	}
}

// TestBothDirectionsOfOneConnection checks that a request received by XDP
// and its reply sent through the egress program are two entries of one
// table whose keys differ only in the direction, each a new connection.
func TestBothDirectionsOfOneConnection(t *testing.T) {
	privtest.RequireRoot(t)
	ifindex := loopbackIndex(t)
	d := loadDatapath(t, withTransmit(optsDefault))
	request := sent(protoTCP, remote4, sport, local4, dport, 10) // remote -> local:8080
	reply := sent(protoTCP, local4, dport, remote4, sport, 100)  // local:8080 -> remote
	runFrame(t, d, request)
	runEgress(t, d, reply, nil)
	runEgress(t, d, reply, nil)

	rx := wantKey(remote4, protoTCP, sport, dport)
	rx.Ifindex = ifindex
	tx := rx
	tx.Direction = Transmit
	flows := readFlows(t, d)
	if len(flows) != 2 {
		t.Fatalf("got flows %+v, want %+v and %+v", flows, rx, tx)
	}
	if v := flows[rx]; v.Packets != 1 || v.Bytes != uint64(len(request)) {
		t.Errorf("receive %+v = %+v, want 1 packet of %d bytes", rx, v, len(request))
	}
	if v := flows[tx]; v.Packets != 2 || v.Bytes != 2*uint64(len(reply)) {
		t.Errorf("transmit %+v = %+v, want 2 packets of %d bytes", tx, v, len(reply))
	}
	if st := readStats(t, d); st.NewConnections != 2 {
		t.Errorf("NewConnections = %d, want 2", st.NewConnections)
	}
}

// TestEgressNeverDrops runs the egress program on every seed of
// FuzzParser with a GSO context too: it must return TC_ACT_UNSPEC on all.
func TestEgressNeverDrops(t *testing.T) {
	privtest.RequireRoot(t)
	d := loadDatapath(t, fuzzOptions())
	for _, frame := range fuzzSeeds() {
		for _, ctx := range []*skBuff{nil, gsoSkb(0, 100)} {
			opts := &ebpf.RunOptions{Data: frame}
			if ctx != nil {
				opts.Context = ctx
			}
			ret, err := d.EgressProgram().Run(opts)
			if len(frame) < ethHdrLen+ipv6HdrLen && errors.Is(err, unix.EINVAL) {
				// Rejected by the kernel before the program ran: an
				// skb needs the network header its EtherType names.
				continue
			}
			if err != nil || ret != tcActUnspec {
				t.Fatalf("frame %x: returned %#x, %v; want TC_ACT_UNSPEC", frame, ret, err)
			}
		}
	}
}

// TestConcurrentBothDirections runs the XDP and the egress program from
// several goroutines at once on the same frames, so that CPUs race to
// insert and update the receive and the transmit entry of each
// connection: every packet is counted once, in its direction's entry,
// and every entry is inserted once.
func TestConcurrentBothDirections(t *testing.T) {
	privtest.RequireRoot(t)
	const (
		goroutines = 6
		conns      = 128
		passes     = 3
		hot        = 2
		repeat     = 5000
	)
	d := loadDatapath(t, withTransmit(testOptions()))
	ifindex := loopbackIndex(t)
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			<-start
			// Even goroutines receive the requests, odd ones send the replies.
			prog, pass, frame := d.Program(), uint32(xdpPass), keyFrame
			if g%2 == 1 {
				prog, pass, frame = d.EgressProgram(), tcActUnspec, replyFrame
			}
			run := func(i int, repeat uint32) bool {
				ret, err := runExactly(prog, frame(i), repeat)
				if err == nil && ret != pass {
					err = fmt.Errorf("returned %#x, want %#x", ret, pass)
				}
				if err != nil {
					errs <- err
				}
				return err == nil
			}
			for range passes {
				for i := range conns {
					if !run(i, 1) {
						return
					}
				}
			}
			for i := range hot {
				if !run(i, repeat) {
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("run program: %v", err)
	}
	flows := readFlows(t, d)
	if len(flows) != 2*conns {
		t.Fatalf("got %d entries, want %d", len(flows), 2*conns)
	}
	for i := range conns {
		packets := uint64(goroutines / 2 * passes)
		if i < hot {
			packets += goroutines / 2 * repeat
		}
		rx := keyOf(i, ifindex)
		tx := rx
		tx.Direction = Transmit
		for _, c := range []struct {
			key   FlowKey
			frame []byte
		}{{rx, keyFrame(i)}, {tx, replyFrame(i)}} {
			wantBytes := packets * uint64(len(c.frame))
			if v, ok := flows[c.key]; !ok || v.Packets != packets || v.Bytes != wantBytes {
				t.Errorf("connection %d %s: %+v (present %v), want %d packets, %d bytes", i, c.key.Direction, v, ok, packets, wantBytes)
			}
		}
	}
	if st := readStats(t, d); st.NewConnections != 2*conns || st.OverflowPackets != 0 {
		t.Errorf("stats %+v, want %d new connections and no overflow", st, 2*conns)
	}
}

// replyFrame is the reply to keyFrame(i), which the host sends: from local
// port 8080 to the sender of keyFrame(i).
func replyFrame(i int) []byte {
	return sent(protoTCP, dstV4, dport, keyAddr(i), uint16(20000+i), i%50+7)
}
