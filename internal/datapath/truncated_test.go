//go:build linux

package datapath

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
	"golang.org/x/sys/unix"
)

// TestRunTruncatedFrames runs every prefix of well-formed frames that is
// shorter than their Ethernet + IP + fixed transport headers: the program
// must pass each one without counting it (and the verifier-checked bounds
// must not let it read past the end). The prefix holding exactly the
// headers is counted, which shows every header byte is needed.
//
// The kernel rejects XDP test runs with less than ETH_HLEN (14) bytes of
// data with EINVAL before the program runs; for those lengths either that
// error or XDP_PASS is accepted, and nothing may be counted.
func TestRunTruncatedFrames(t *testing.T) {
	privtest.RequireRoot(t)
	q := vlan{etherTypeVLAN, 7}
	ad := vlan{etherTypeQinQ, 8}
	cases := []struct {
		name   string
		frame  []byte
		hdrLen int
		want   *flowWant
	}{
		{"ipv4 tcp", frame4(ipv4{proto: protoTCP}, sport, dport), ethHdrLen + ipv4HdrLen + tcpHdrLen, counted(src4, protoTCP, sport, dport)},
		{"ipv4 udp", frame4(ipv4{proto: protoUDP}, sport, dport), ethHdrLen + ipv4HdrLen + udpHdrLen, counted(src4, protoUDP, sport, dport)},
		{"ipv4 options tcp", frame4(ipv4{proto: protoTCP, optWords: 10}, sport, dport), ethHdrLen + 60 + tcpHdrLen, counted(src4, protoTCP, sport, dport)},
		{"vlan ipv4 tcp", frame4(ipv4{proto: protoTCP}, sport, dport, q), ethHdrLen + vlanTagLen + ipv4HdrLen + tcpHdrLen, counted(src4, protoTCP, sport, dport)},
		{"qinq ipv4 udp", frame4(ipv4{proto: protoUDP}, sport, dport, ad, q), ethHdrLen + 2*vlanTagLen + ipv4HdrLen + udpHdrLen, counted(src4, protoUDP, sport, dport)},
		{"ipv4 non-first fragment", ether(etherTypeIPv4, ipv4{src: addr(src4), dst: addr(dstV4), proto: protoTCP, fragOffset: 3}.packet(make([]byte, 32))),
			ethHdrLen + ipv4HdrLen, counted(src4, protoTCP, 0, 0)},
		{"ipv6 tcp", frame6(protoTCP, sport, dport), ethHdrLen + ipv6HdrLen + tcpHdrLen, counted(src6, protoTCP, sport, dport)},
		{"ipv6 hop-by-hop + dstopts udp", frame6(protoUDP, sport, dport, optsExt(protoHopByHop, 0), optsExt(protoDstOpts, 1)),
			ethHdrLen + ipv6HdrLen + 8 + 16 + udpHdrLen, counted(src6, protoUDP, sport, dport)},
		{"ipv6 hop-by-hop + routing + ah + first fragment tcp", frame6(protoTCP, sport, dport, optsExt(protoHopByHop, 1), optsExt(protoRouting, 0), ahExt(4), fragExt(0, true)),
			ethHdrLen + ipv6HdrLen + 16 + 8 + 24 + fragHdrLen + tcpHdrLen, counted(src6, protoTCP, sport, dport)},
		{"ipv6 non-first fragment", ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), ext: []ipv6Ext{optsExt(protoHopByHop, 0), fragExt(9, false)}, proto: protoUDP}.packet(make([]byte, 32))),
			ethHdrLen + ipv6HdrLen + 8 + fragHdrLen, counted(src6, protoUDP, 0, 0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.frame) <= tc.hdrLen {
				t.Fatalf("test frame of %d bytes has no payload after its %d header bytes", len(tc.frame), tc.hdrLen)
			}
			d := loadDatapath(t, testOptions())
			for n := 0; n < tc.hdrLen; n++ {
				ret, err := d.Program().Run(&ebpf.RunOptions{Data: tc.frame[:n]})
				switch {
				case n < ethHdrLen && errors.Is(err, unix.EINVAL):
					// Rejected by the kernel before the program ran.
				case err != nil:
					t.Fatalf("prefix of %d bytes: %v", n, err)
				case ret != xdpPass:
					t.Fatalf("prefix of %d bytes: returned %d, want XDP_PASS", n, ret)
				}
				if flows := readFlows(t, d); len(flows) != 0 {
					t.Fatalf("prefix of %d bytes counted: %+v", n, flows)
				}
				if st := readStats(t, d); st != (Stats{}) {
					t.Fatalf("prefix of %d bytes: stats %+v, want all zero", n, st)
				}
			}

			runFrame(t, d, tc.frame[:tc.hdrLen])
			want := tc.want.key
			want.Ifindex = loopbackIndex(t)
			flows := readFlows(t, d)
			if v, ok := flows[want]; !ok || len(flows) != 1 || v.Packets != 1 || v.Bytes != uint64(tc.hdrLen) {
				t.Fatalf("headers alone (%d bytes): flows %+v, want only %+v with 1 packet of %d bytes", tc.hdrLen, flows, want, tc.hdrLen)
			}
		})
	}
}
