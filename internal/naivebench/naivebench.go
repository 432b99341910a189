//go:build linux

package naivebench

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// Port is the only destination port the naive program counts; both
// collections are loaded with xdpflow's port filter set to it, so they
// parse exactly like a datapath loaded with the default options.
const Port = 8080

// configure sets the load-time constants both objects share with xdpflow
// to the default options: TCP and UDP, destination port Port.
func configure(spec *ebpf.CollectionSpec) error {
	var bitmap [1024]uint64
	bitmap[Port>>6] |= 1 << (Port & 63)
	for name, v := range map[string]any{
		"port_bitmap": bitmap,
		"all_ports":   uint8(0),
		"count_tcp":   uint8(1),
		"count_udp":   uint8(1),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

func load(spec *ebpf.CollectionSpec, err error, objs any) error {
	if err != nil {
		return err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	if err := configure(spec); err != nil {
		return err
	}
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("%+v", verr)
		}
		return err
	}
	return nil
}

// Naive is the loaded naive program (bpf/naive.c) with its maps.
type Naive struct {
	objs naiveObjects
}

// LoadNaive loads the naive program with an empty table of 65536 entries.
func LoadNaive() (*Naive, error) {
	spec, err := loadNaive()
	n := &Naive{}
	if err := load(spec, err, &n.objs); err != nil {
		return nil, fmt.Errorf("load naive program: %w", err)
	}
	return n, nil
}

// Program returns the naive XDP program.
func (n *Naive) Program() *ebpf.Program { return n.objs.Naive }

// Events returns the naive program's ring buffer.
func (n *Naive) Events() *ebpf.Map { return n.objs.NaiveEvents }

// Packets returns the sum of the packet counters of every connection.
func (n *Naive) Packets() (uint64, error) {
	var (
		k   naiveFlowKey
		v   naiveNaiveValue
		sum uint64
	)
	it := n.objs.NaiveFlows.Iterate()
	for it.Next(&k, &v) {
		sum += v.Packets
	}
	return sum, it.Err()
}

// NewConnections returns the naive program's new-connection counter.
func (n *Naive) NewConnections() (uint64, error) {
	var c uint64
	err := n.objs.NaiveNewConnections.Get(&c)
	return c, err
}

// Close releases the program and its maps.
func (n *Naive) Close() error { return n.objs.Close() }

// Floor is the loaded floor collection (bpf/floor.c): xdpflow itself and
// the programs doing a prefix of its hit path, sharing its flows map.
type Floor struct {
	// Xdpflow is xdpflow's counting program; run it on a frame to insert
	// the frame's connection into the flows map the Lookup* programs read.
	Xdpflow *ebpf.Program
	// Lookup parses and looks the connection up.
	Lookup *ebpf.Program
	// LookupAtomic also adds to the entry's counters with atomic adds.
	LookupAtomic *ebpf.Program
	// LookupLock also adds to them under the entry's spin lock.
	LookupLock *ebpf.Program
	// LookupLockClock also reads the coarse clock and sets last_seen.
	LookupLockClock *ebpf.Program
	// SmallLookup parses and looks up a 12-byte IPv4-only key in a table
	// of its own, filled with PutSmall.
	SmallLookup *ebpf.Program
	// Csum parses and sums the frame after its Ethernet header as a
	// TCP/UDP checksum check would, storing nothing: run it on frames of
	// several sizes for the cost of checking checksums per byte.
	Csum *ebpf.Program
	// SameKey is the same-key floor: a minimal IPv4 parse (untagged IPv4
	// TCP or UDP, nothing else checked), one lookup of xdpflow's 48-byte
	// key in the flows map, atomic adds of packets and bytes and a store
	// of the coarse clock.
	SameKey *ebpf.Program
	// SameKey28 is SameKey with the 28-byte key of before the grouping,
	// in a table of its own, filled with PutSameKey28.
	SameKey28 *ebpf.Program

	objs floorObjects
}

// LoadFloor loads the floor collection with empty tables of 65536 entries.
func LoadFloor() (*Floor, error) {
	spec, err := loadFloor()
	f := &Floor{}
	if err := load(spec, err, &f.objs); err != nil {
		return nil, fmt.Errorf("load floor programs: %w", err)
	}
	p := &f.objs.floorPrograms
	f.Xdpflow, f.Lookup, f.LookupAtomic, f.LookupLock, f.LookupLockClock, f.SmallLookup, f.Csum =
		p.Xdpflow, p.FloorLookup, p.FloorLookupAtomic, p.FloorLookupLock, p.FloorLookupLockClock, p.FloorSmallLookup, p.FloorCsum
	f.SameKey, f.SameKey28 = p.FloorSameKey, p.FloorSameKey28
	return f, nil
}

// PutSmall inserts the IPv4 connection from saddr (network byte order, as
// in the packet) and sport to dport, arriving on ifindex, into the table
// of SmallLookup.
func (f *Floor) PutSmall(saddr [4]byte, sport, dport uint16, ifindex uint32) error {
	k := floorSmallKey{Sport: sport, Dport: dport, Ifindex: ifindex}
	k.Saddr = binary.NativeEndian.Uint32(saddr[:])
	return f.objs.SmallFlows.Put(&k, &floorFlowCounters{})
}

// PutSameKey28 inserts the IPv4 TCP connection from saddr (as in the
// packet) and sport to dport, arriving on ifindex, into the table of
// SameKey28, with zero counters.
func (f *Floor) PutSameKey28(saddr [4]byte, sport, dport uint16, ifindex uint32) error {
	k := floorFlowKey28{Ifindex: ifindex, Sport: sport, Dport: dport, Proto: 6, Family: 4}
	k.Saddr[10], k.Saddr[11] = 0xff, 0xff
	copy(k.Saddr[12:], saddr[:])
	return f.objs.Flows28.Put(&k, &floorFlowValue{})
}

// Misses returns how many packets a Lookup program did not find (summed
// over CPUs): a benchmark of a hit must leave it at 0.
func (f *Floor) Misses() (uint64, error) {
	var perCPU []uint64
	// The Lookup programs count a miss as an overflow packet.
	if err := f.objs.Stats.Lookup(uint32(floorXdpflowStatSTAT_OVERFLOW_PACKETS), &perCPU); err != nil {
		return 0, err
	}
	var sum uint64
	for _, v := range perCPU {
		sum += v
	}
	return sum, nil
}

// ValidSums returns how many frames Csum found with a valid sum.
func (f *Floor) ValidSums() (uint64, error) {
	var n uint64
	if err := f.objs.CsumValid.Get(&n); err != nil {
		return 0, err
	}
	return n, nil
}

// Close releases the programs and their maps.
func (f *Floor) Close() error { return f.objs.Close() }
