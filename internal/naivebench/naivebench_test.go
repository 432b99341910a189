//go:build linux

package naivebench

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"go.uber.org/goleak"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tcp4 returns an Ethernet/IPv4/TCP frame from 10.0.0.<host>:sport to dport.
func tcp4(host byte, sport, dport uint16) []byte {
	b := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8], ip[9] = 64, 6
	copy(ip[12:], []byte{10, 0, 0, host, 192, 0, 2, 1})
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], dport)
	ip[32] = 5 << 4
	return b
}

func run(t *testing.T, p *ebpf.Program, frame []byte, repeat uint32) {
	t.Helper()
	ret, err := p.Run(&ebpf.RunOptions{Data: frame, Repeat: repeat})
	if err != nil || ret != 2 {
		t.Fatalf("run: %d, %v; want XDP_PASS", ret, err)
	}
}

// TestNaive checks that the naive program counts port 8080 only, one entry
// per connection.
func TestNaive(t *testing.T) {
	privtest.RequireRoot(t)
	n, err := LoadNaive()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	run(t, n.Program(), tcp4(1, 1000, Port), 1)
	run(t, n.Program(), tcp4(1, 1000, Port), 1)
	run(t, n.Program(), tcp4(2, 1000, Port), 1)
	run(t, n.Program(), tcp4(2, 1000, 9090), 1)
	if p, err := n.Packets(); err != nil || p != 3 {
		t.Errorf("naive counted %d packets (%v), want 3", p, err)
	}
	if c, err := n.NewConnections(); err != nil || c != 2 {
		t.Errorf("naive counted %d new connections (%v), want 2", c, err)
	}
}

// TestFloor checks that the floor programs find the connection xdpflow
// inserted, and the small-key program the one PutSmall inserted.
func TestFloor(t *testing.T) {
	privtest.RequireRoot(t)
	f, err := LoadFloor()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	frame := tcp4(1, 1000, Port)
	run(t, f.Xdpflow, frame, 1)
	if err := f.PutSmall([4]byte{10, 0, 0, 1}, 1000, Port, 1); err != nil {
		t.Fatal(err)
	}
	if err := f.PutSameKey28([4]byte{10, 0, 0, 1}, 1000, Port, 1); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*ebpf.Program{f.Lookup, f.LookupAtomic, f.LookupLock, f.LookupLockClock, f.SmallLookup, f.SameKey, f.SameKey28} {
		run(t, p, frame, 1)
	}
	if m, err := f.Misses(); err != nil || m != 0 {
		t.Errorf("floor programs missed %d lookups (%v), want 0", m, err)
	}
	for _, p := range []*ebpf.Program{f.Lookup, f.SmallLookup, f.SameKey, f.SameKey28} {
		run(t, p, tcp4(2, 1000, Port), 1)
	}
	if m, err := f.Misses(); err != nil || m != 4 {
		t.Errorf("floor programs missed %d lookups (%v), want 4", m, err)
	}
}

// TestFloorCsum checks that the checksum program sums the whole frame
// after the Ethernet header, in chunks and words: a frame whose IPv4
// header and TCP segment each carry the right sum (over the segment
// alone: the program leaves the pseudo-header out) sums to zero, and one
// changed byte anywhere makes it non-zero.
func TestFloorCsum(t *testing.T) {
	privtest.RequireRoot(t)
	f, err := LoadFloor()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, payload := range []int{0, 1460} {
		frame := withChecksums(padTCP(tcp4(1, 1000, Port), payload))
		for _, corrupt := range []int{-1, 14 + 8, len(frame) - 1} {
			before, err := f.ValidSums()
			if err != nil {
				t.Fatal(err)
			}
			fr := append([]byte(nil), frame...)
			if corrupt >= 0 {
				fr[corrupt] ^= 0x40
			}
			run(t, f.Csum, fr, 1)
			after, err := f.ValidSums()
			if err != nil {
				t.Fatal(err)
			}
			if valid := after == before+1; valid != (corrupt < 0) {
				t.Errorf("%d-byte frame, byte %d changed: counted as a valid sum: %v", len(fr), corrupt, valid)
			}
		}
	}
}

// padTCP returns frame, an IPv4/TCP frame from tcp4, with n zero bytes of
// TCP payload and its IP total length set.
func padTCP(frame []byte, n int) []byte {
	frame = append(append([]byte(nil), frame...), make([]byte, n)...)
	binary.BigEndian.PutUint16(frame[14+2:], uint16(len(frame)-14))
	return frame
}

// withChecksums sets the IPv4 header checksum and a TCP checksum over the
// segment alone (no pseudo-header) of an IPv4/TCP frame without options.
func withChecksums(frame []byte) []byte {
	ip := frame[14:]
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(ip[:20]))
	binary.BigEndian.PutUint16(ip[20+16:], 0)
	binary.BigEndian.PutUint16(ip[20+16:], ^onesSum(ip[20:]))
	return frame
}

// onesSum is the 16-bit one's-complement sum of b's big-endian words.
func onesSum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
