//go:build linux

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

// benchPerConnection runs, for tables of 10k, 100k and 1M synthetic
// connections, the operation newOp returns for that table, and reports its
// wall and CPU time per connection.
func benchPerConnection(b *testing.B, newOp func(flows *datapath.FlowTable) func()) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			op := newOp(syntheticFlows(n))
			cpu0 := cpuTime(b)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				op()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/flow")
			b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/flow")
		})
	}
}

// inExports calls build for each export of maxFlowsPerExport connections
// of an n-connection snapshot, as the receiver builds them.
func inExports(n int, build func(from, to int)) {
	for from := 0; from < n; from += maxFlowsPerExport {
		build(from, min(from+maxFlowsPerExport, n))
	}
}

func benchSnapshot(flows *datapath.FlowTable) snapshot {
	return snapshot{time: testEpoch.Add(10 * time.Second), flows: flows, evicted: &datapath.FlowTable{}}
}

// BenchmarkBuildMetrics measures converting one snapshot to pdata at once.
func BenchmarkBuildMetrics(b *testing.B) {
	benchPerConnection(b, func(flows *datapath.FlowTable) func() {
		bld, s, n := testBuilder(), benchSnapshot(flows), flows.Len()
		return func() {
			if md := bld.build(&s, 0, n); md.DataPointCount() != 2*n+4 {
				b.Fatal(md.DataPointCount())
			}
		}
	})
}

// BenchmarkBuildExports measures converting one snapshot to pdata as the
// receiver does: in exports of maxFlowsPerExport connections, each dropped
// once built.
func BenchmarkBuildExports(b *testing.B) {
	benchPerConnection(b, func(flows *datapath.FlowTable) func() {
		bld, s := testBuilder(), benchSnapshot(flows)
		return func() {
			inExports(flows.Len(), func(from, to int) { _ = bld.build(&s, from, to) })
		}
	})
}

// Stand-ins for the objects pdata allocates per data point: the point,
// its value (a oneof: an interface holding a pointer), its attribute slice,
// and one pointer per attribute value (also a oneof).
type (
	floorStr struct{ s string }
	floorInt struct{ i int64 }
	floorKV  struct {
		key   string
		value any
	}
	floorPoint struct {
		start, time, flags uint64
		attrs              []floorKV
		value              any
	}
)

// floorPoints counts the points built, so that they are used.
var floorPoints int

// BenchmarkAllocationFloor allocates, per connection, exactly the heap
// objects pdata makes for one connection's two data points (19: two
// points, two values, two attribute slices, twelve attribute values, the
// address string) and nothing else: the least any conversion to pdata can
// cost, in exports of maxFlowsPerExport connections as BenchmarkBuildExports
// builds them. Compare their ns/flow.
func BenchmarkAllocationFloor(b *testing.B) {
	benchPerConnection(b, func(flows *datapath.FlowTable) func() {
		return func() {
			inExports(flows.Len(), func(from, to int) { allocateLikePdata(flows.Keys[from:to]) })
		}
	})
}

// allocateLikePdata makes the objects of one export of keys, then drops them.
func allocateLikePdata(keys []datapath.FlowKey) {
	points := make([]*floorPoint, 0, 2*len(keys))
	for i := range keys {
		k := &keys[i]
		addr := k.Source().String()
		for range 2 {
			p := &floorPoint{start: 1, time: 2, value: &floorInt{int64(i)}}
			p.attrs = make([]floorKV, 0, 6)
			p.attrs = append(p.attrs,
				floorKV{attrSourceAddress, &floorStr{addr}},
				floorKV{attrSourcePort, &floorInt{int64(k.SrcPort)}},
				floorKV{attrDestinationPort, &floorInt{int64(k.DstPort)}},
				floorKV{attrNetworkTransport, &floorStr{"tcp"}},
				floorKV{attrNetworkType, &floorStr{"ipv4"}},
				floorKV{attrInterfaceName, &floorStr{"eth0"}})
			points = append(points, p)
		}
	}
	floorPoints += len(points) // dropped, as an export is
}
