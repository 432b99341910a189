package xdpflowreceiver

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// syntheticFlows returns n distinct IPv4 and IPv6 connections to 8080.
func syntheticFlows(n int) *datapath.FlowTable {
	t := &datapath.FlowTable{}
	for i := 0; i < n; i++ {
		var a netip.Addr
		if i%4 == 3 {
			a = netip.AddrFrom16([16]byte{0xfd, 0, 0x0d, 0xb8, 14: byte(i >> 24), 15: byte(i >> 16)})
		} else {
			a = netip.AddrFrom4([4]byte{198, 51, byte(i >> 16), byte(i >> 8)})
		}
		k := testKey(a.String(), uint16(i), 8080, datapath.TCP, 2)
		t.Append(k, testValue(uint64(i), uint64(i)*100, 1, 9))
	}
	return t
}

// BenchmarkBuildMetrics measures converting one snapshot to pdata.
func BenchmarkBuildMetrics(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			flows := syntheticFlows(n)
			bld := testBuilder()
			s := snapshot{time: testEpoch.Add(10 * time.Second), flows: flows, evicted: &datapath.FlowTable{}}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				md := bld.build(&s, 0, n)
				if md.DataPointCount() != 2*n+4 {
					b.Fatal(md.DataPointCount())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/flow")
		})
	}
}
