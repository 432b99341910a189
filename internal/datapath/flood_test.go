//go:build linux

package datapath

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestSYNFlood floods a full-size flow table (65536 connections) with
// 200,000 TCP SYNs, each a new connection (distinct source address and
// port), then with 200,000 more. The table must hold exactly its
// capacity, the first 65536 connections with one packet each; every
// packet and byte must be either in the table or in the overflow
// counters; and the map's kernel memory must not grow with the flood.
func TestSYNFlood(t *testing.T) {
	privtest.RequireRoot(t)
	const (
		capacity = 65536
		flood    = 200000
	)
	opts := DefaultOptions()
	opts.MaxConnections = capacity
	d := loadDatapath(t, opts)
	ifindex := loopbackIndex(t)
	memBefore := flowsMemlock(t, d)

	f := newSYNFlood()
	var sentBytes uint64
	for i := range flood {
		sentBytes += f.run(t, d, i)
	}
	memFirst := flowsMemlock(t, d)
	checkFlood(t, d, f, ifindex, capacity, flood, sentBytes)

	// Another 200,000 new connections: all overflow, the table is
	// unchanged and the map allocates nothing more.
	for i := flood; i < 2*flood; i++ {
		sentBytes += f.run(t, d, i)
	}
	memSecond := flowsMemlock(t, d)
	checkFlood(t, d, f, ifindex, capacity, 2*flood, sentBytes)

	t.Logf("flow table map memory (memlock): %d bytes at load, %d after %d SYNs, %d after %d (%d bytes per entry)",
		memBefore, memFirst, flood, memSecond, 2*flood, memSecond/capacity)
	if memFirst != memBefore || memSecond != memBefore {
		t.Errorf("flow table memory grew under the flood: %d bytes at load, %d after %d SYNs, %d after %d",
			memBefore, memFirst, flood, memSecond, 2*flood)
	}
	if fd := fdinfoMemlock(t, d.objs.Flows); fd != memSecond {
		t.Errorf("memlock in /proc/self/fdinfo (%d) differs from the map info (%d)", fd, memSecond)
	}
}

// checkFlood checks the table and the statistics after the first sent
// connections of f, whose frames add up to sentBytes.
func checkFlood(t *testing.T, d *Datapath, f *synFlood, ifindex uint32, capacity, sent int, sentBytes uint64) {
	t.Helper()
	flows := readFlows(t, d)
	if len(flows) != capacity {
		t.Fatalf("after %d SYNs: %d connections in the table, want %d", sent, len(flows), capacity)
	}
	var packets, bytes uint64
	for i := range capacity {
		v, ok := flows[f.key(i, ifindex)]
		if !ok || v.Packets != 1 || v.Bytes != uint64(f.frameLen(i)) {
			t.Fatalf("after %d SYNs: connection %d: %+v (present %v), want 1 packet of %d bytes", sent, i, v, ok, f.frameLen(i))
		}
	}
	for _, v := range flows {
		packets += v.Packets
		bytes += v.Bytes
	}
	st := readStats(t, d)
	t.Logf("after %d SYNs: %d connections with %d packets, %d bytes; overflow %d packets, %d bytes; events %d, ring buffer drops %d",
		sent, len(flows), packets, bytes, st.OverflowPackets, st.OverflowBytes, st.Events, st.RingbufDrops)
	if packets+st.OverflowPackets != uint64(sent) {
		t.Errorf("after %d SYNs: %d packets in the table + %d overflow = %d, want %d",
			sent, packets, st.OverflowPackets, packets+st.OverflowPackets, sent)
	}
	if bytes+st.OverflowBytes != sentBytes {
		t.Errorf("after %d SYNs: %d bytes in the table + %d overflow = %d, want %d",
			sent, bytes, st.OverflowBytes, bytes+st.OverflowBytes, sentBytes)
	}
	if st.NewConnections != uint64(capacity) {
		t.Errorf("after %d SYNs: NewConnections = %d, want %d", sent, st.NewConnections, capacity)
	}
	if ev := st.Events + st.RingbufDrops; ev != uint64(capacity/5) {
		t.Errorf("after %d SYNs: %d events + %d drops, want %d (one every 5 new connections)", sent, st.Events, st.RingbufDrops, capacity/5)
	}
}

// synFlood builds the SYNs of the flood in one buffer: the i-th is from
// 10.(i>>16).(i>>8).i, port 1024 + i%60000, to port 8080, with i%7 bytes of
// payload. Patching the template costs far less than building frames.
type synFlood struct {
	buf []byte
}

const (
	floodIPOff  = ethHdrLen
	floodTCPOff = ethHdrLen + ipv4HdrLen
	floodHdrs   = ethHdrLen + ipv4HdrLen + tcpHdrLen
	floodMaxPay = 6
)

func newSYNFlood() *synFlood {
	return &synFlood{buf: tcp4Frame("10.0.0.0", 0, dport, floodMaxPay)}
}

func (f *synFlood) frameLen(i int) int { return floodHdrs + i%(floodMaxPay+1) }

func (f *synFlood) srcAddr(i int) [4]byte {
	return [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
}

func (f *synFlood) srcPort(i int) uint16 { return uint16(1024 + i%60000) }

// frame returns the i-th SYN; it is valid until the next call.
func (f *synFlood) frame(i int) []byte {
	n := f.frameLen(i)
	a := f.srcAddr(i)
	copy(f.buf[floodIPOff+12:], a[:])
	binary.BigEndian.PutUint16(f.buf[floodIPOff+2:], uint16(n-ethHdrLen)) // IPv4 total length
	binary.BigEndian.PutUint16(f.buf[floodTCPOff:], f.srcPort(i))
	return f.buf[:n]
}

// run runs the i-th SYN through the program and returns its length.
func (f *synFlood) run(t *testing.T, d *Datapath, i int) uint64 {
	frame := f.frame(i)
	ret, err := d.Program().Run(&ebpf.RunOptions{Data: frame})
	if err != nil || ret != xdpPass {
		t.Fatalf("SYN %d: returned %d, %v; want XDP_PASS", i, ret, err)
	}
	return uint64(len(frame))
}

func (f *synFlood) key(i int, ifindex uint32) FlowKey {
	var k FlowKey
	a := f.srcAddr(i)
	k.SrcAddr[10], k.SrcAddr[11] = 0xff, 0xff
	copy(k.SrcAddr[12:], a[:])
	k.Ifindex = ifindex
	k.SrcPort = f.srcPort(i)
	k.DstPort = dport
	k.Proto = TCP
	k.Family = FamilyIPv4
	return k
}

// flowsMemlock returns the kernel memory charged to the flow table, from
// the map's info.
func flowsMemlock(t *testing.T, d *Datapath) uint64 {
	t.Helper()
	info, err := d.objs.Flows.Info()
	if err != nil {
		t.Fatalf("flow table info: %v", err)
	}
	mem, ok := info.Memlock()
	if !ok {
		t.Fatalf("flow table info has no memlock")
	}
	return mem
}

// fdinfoMemlock returns the memlock line of /proc/self/fdinfo for m's fd.
func fdinfoMemlock(t *testing.T, m *ebpf.Map) uint64 {
	t.Helper()
	fh, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD()))
	if err != nil {
		t.Fatalf("open fdinfo: %v", err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "memlock:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("parse fdinfo memlock %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("no memlock in /proc/self/fdinfo/%d (err %v)", m.FD(), sc.Err())
	return 0
}
