//go:build linux

package datapath

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
	"golang.org/x/sys/unix"
)

// truncationCase is a well-formed frame and the flow it is counted in.
type truncationCase struct {
	name  string
	frame []byte
	want  *flowWant
}

// truncationCases are the frames of TestRunTruncatedFrames: every kind of
// header the program parses, each frame with a payload after its headers.
func truncationCases() []truncationCase {
	q := vlan{etherTypeVLAN, 7}
	ad := vlan{etherTypeQinQ, 8}
	return []truncationCase{
		{"ipv4 tcp", frame4(ipv4{proto: protoTCP}, sport, dport), counted(src4, protoTCP, sport, dport)},
		{"ipv4 udp", frame4(ipv4{proto: protoUDP}, sport, dport), counted(src4, protoUDP, sport, dport)},
		{"ipv4 options tcp", frame4(ipv4{proto: protoTCP, optWords: 10}, sport, dport), counted(src4, protoTCP, sport, dport)},
		{"vlan ipv4 tcp", frame4(ipv4{proto: protoTCP}, sport, dport, q), counted(src4, protoTCP, sport, dport)},
		{"qinq ipv4 udp", frame4(ipv4{proto: protoUDP}, sport, dport, ad, q), counted(src4, protoUDP, sport, dport)},
		{"ipv4 non-first fragment", ether(etherTypeIPv4, ipv4{src: addr(src4), dst: addr(dstV4), proto: protoTCP, fragOffset: 3}.packet(make([]byte, 32))),
			counted(src4, protoTCP, 0, 0)},
		{"ipv6 tcp", frame6(protoTCP, sport, dport), counted(src6, protoTCP, sport, dport)},
		{"ipv6 hop-by-hop + dstopts udp", frame6(protoUDP, sport, dport, optsExt(protoHopByHop, 0), optsExt(protoDstOpts, 1)),
			counted(src6, protoUDP, sport, dport)},
		{"ipv6 hop-by-hop + routing + ah + first fragment tcp", frame6(protoTCP, sport, dport, optsExt(protoHopByHop, 1), optsExt(protoRouting, 0), ahExt(4), fragExt(0, true)),
			counted(src6, protoTCP, sport, dport)},
		{"ipv6 non-first fragment", ether(etherTypeIPv6, ipv6{src: addr(src6), dst: addr(dstV6), ext: []ipv6Ext{optsExt(protoHopByHop, 0), fragExt(9, false)}, proto: protoUDP}.packet(make([]byte, 32))),
			counted(src6, protoUDP, 0, 0)},
	}
}

// TestRunTruncatedFrames runs every proper prefix of well-formed frames:
// the program must pass each one without counting it (and the
// verifier-checked bounds must not let it read past the end). A prefix
// that ends in the headers lacks a header byte; one that ends in the
// payload is shorter than its IP header says, which the kernel drops too.
// The whole frame is counted.
//
// The kernel rejects XDP test runs with less than ETH_HLEN (14) bytes of
// data with EINVAL before the program runs; for those lengths either that
// error or XDP_PASS is accepted, and nothing may be counted.
func TestRunTruncatedFrames(t *testing.T) {
	privtest.RequireRoot(t)
	for _, tc := range truncationCases() {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDatapath(t, testOptions())
			for n := 0; n < len(tc.frame); n++ {
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

			runFrame(t, d, tc.frame)
			want := tc.want.key
			want.Ifindex = loopbackIndex(t)
			flows := readFlows(t, d)
			if v, ok := flows[want]; !ok || len(flows) != 1 || v.Packets != 1 || v.Bytes != uint64(len(tc.frame)) {
				t.Fatalf("whole frame (%d bytes): flows %+v, want only %+v with 1 packet of %d bytes", len(tc.frame), flows, want, len(tc.frame))
			}
		})
	}
}
