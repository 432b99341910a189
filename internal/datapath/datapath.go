//go:build linux

// Package datapath loads the xdpflow XDP program, attaches it to network
// interfaces and reads its per-connection counters.
//
// Loading and attaching need CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or
// root) and a kernel of 6.1 or newer (MinKernel; Load refuses older ones).
package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Datapath is the loaded XDP program with its maps and links. Its methods
// are safe for concurrent use.
type Datapath struct {
	objs    xdpflowObjects
	events  *ringbuf.Reader
	trig    chan TriggerEvent
	closing chan struct{} // closed by Close, to stop the event reader
	wg      sync.WaitGroup
	// eventsMu orders the reader's look at the ring buffer before Close
	// unmaps it (queuedEventBytes).
	eventsMu     sync.Mutex
	eventsClosed bool

	mu       sync.Mutex
	links    map[string]*attachment
	names    map[int]string // every interface attached since Load, by ifindex
	follow   *follower      // set by Follow
	state    *state         // nil without Options.StateDir
	tracking bool           // Options.TrackChanges
	closed   bool

	// dump reads the whole table for ReadFlows; nil where it could not
	// be loaded, for the reason in dumpErr. tableMu keeps Evict's
	// deletes out of its walks (an entry deleted and reused under the
	// walk could lead it out of its bucket) and one walk's array out of
	// another's.
	dump    *dumper
	dumpErr error
	tableMu sync.Mutex
	// lastRead is how many entries ReadFlows read last time; -1 before
	// its first read.
	lastRead atomic.Int64
}

// Load checks opts, then loads the program and its maps into the kernel.
// Nothing is attached until Attach is called. Call Close when done.
func Load(opts Options) (*Datapath, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("xdpflow options: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, privilegeError("raise RLIMIT_MEMLOCK for BPF maps", err)
	}
	if err := checkKernel(); err != nil {
		return nil, err
	}
	spec, err := loadXdpflow()
	if err != nil {
		return nil, fmt.Errorf("read embedded xdpflow program: %w", err)
	}
	if err := configure(spec, opts); err != nil {
		return nil, err
	}

	d := &Datapath{links: map[string]*attachment{}, names: map[int]string{}, trig: make(chan TriggerEvent, 1), closing: make(chan struct{})}
	var loadOpts *ebpf.CollectionOptions
	if opts.StateDir != "" {
		if d.state, err = openState(opts.StateDir, spec, opts); err != nil {
			return nil, err
		}
		loadOpts = &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.StateDir}}
	}
	if err := loadObjects(spec, &d.objs, opts.Transmit, loadOpts); err != nil {
		var verr *ebpf.VerifierError
		isVerr := errors.As(err, &verr)
		// Without CAP_PERFMON the verifier forbids the packet pointer
		// arithmetic that header parsing needs. For some programs
		// (xdpflow_evict on Linux 6.18) it then answers EFAULT, which the
		// library calls a verifier bug, rather than EACCES with a log.
		if missing := missingCapabilities(); len(missing) > 0 && (isVerr || errors.Is(err, unix.EFAULT)) {
			return nil, fmt.Errorf("load xdpflow program: the verifier refused it because the process lacks %s (run as root or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON): %v",
				strings.Join(missing, ", "), err)
		}
		if isVerr {
			return nil, verifierError(err, verr)
		}
		return nil, privilegeError("load xdpflow program", err)
	}
	d.tracking = opts.TrackChanges
	if err := errors.Join(fillCIDRs(d.objs.Cidrs, opts.CIDRs), d.state.commit()); err != nil {
		d.objs.Close()
		return nil, err
	}
	d.dump, d.dumpErr = loadDumper(d.objs.Flows)
	d.lastRead.Store(-1)
	d.events, err = ringbuf.NewReader(d.objs.Events)
	if err != nil {
		d.objs.Close()
		d.closeDumper()
		return nil, fmt.Errorf("open trigger ring buffer: %w", err)
	}
	d.wg.Add(1)
	go d.readEvents()
	return d, nil
}

// loadObjects loads spec into objs: every map and variable, and every
// program but the egress one unless transmit, so that a receive-only
// datapath loads (and has the verifier check) nothing it does not run.
// LoadAndAssign cannot leave out a program objs has a field for.
func loadObjects(spec *ebpf.CollectionSpec, objs *xdpflowObjects, transmit bool, opts *ebpf.CollectionOptions) error {
	if !transmit {
		delete(spec.Programs, xdpflowProgXdpflowEgress)
	}
	if opts == nil {
		opts = &ebpf.CollectionOptions{}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, *opts)
	if err != nil {
		return err
	}
	defer coll.Close() // whatever objs did not take
	if err := errors.Join(coll.Assign(&objs.xdpflowMaps), coll.Assign(&objs.xdpflowVariables)); err != nil {
		return err
	}
	progs := reflect.ValueOf(&objs.xdpflowPrograms).Elem()
	for i := range progs.NumField() {
		if p := coll.DetachProgram(progs.Type().Field(i).Tag.Get("ebpf")); p != nil {
			progs.Field(i).Set(reflect.ValueOf(p))
		}
	}
	return nil
}

// configure writes opts into the spec's load-time constants and map sizes.
func configure(spec *ebpf.CollectionSpec, opts Options) error {
	spec.Maps[xdpflowMapFlows].MaxEntries = opts.MaxConnections
	spec.Maps[xdpflowMapCidrs].MaxEntries = uint32(max(1, len(opts.CIDRs)))
	spec.Maps[xdpflowMapChangedOut].MaxEntries = max(1, changedCapacity(opts))
	spec.Maps[xdpflowMapChangedKeys].MaxEntries = 2 * max(1, changedCapacity(opts)) // both lists, interleaved
	for _, c := range loadConstants(opts) {
		if err := spec.Variables[c.name].Set(c.value); err != nil {
			return fmt.Errorf("set %s: %w", c.name, err)
		}
	}
	return nil
}

// loadConstant is one of the program's load-time constants and its value.
type loadConstant struct {
	name  string
	value any
}

// loadConstants returns the value of every load-time constant for opts.
func loadConstants(opts Options) []loadConstant {
	var countTCP, countUDP uint8
	for _, p := range opts.Protocols {
		switch p {
		case TCP:
			countTCP = 1
		case UDP:
			countUDP = 1
		}
	}
	var allPorts uint8
	if len(opts.Ports) == 0 {
		allPorts = 1
	}
	dims, src, dst := opts.Dimensions, opts.Source, opts.Destination
	return []loadConstant{
		{xdpflowVarPortBitmap, portBitmap(opts.Ports)},
		{xdpflowVarAllPorts, allPorts},
		{xdpflowVarCountTcp, countTCP},
		{xdpflowVarCountUdp, countUDP},
		{xdpflowVarNewConnsPerEvent, uint64(opts.NewConnectionsPerEvent)},
		{xdpflowVarKeepSaddr, boolByte(dims.SrcAddr)},
		{xdpflowVarKeepSport, boolByte(dims.SrcPort)},
		{xdpflowVarKeepDaddr, boolByte(dims.DstAddr)},
		{xdpflowVarKeepDport, boolByte(dims.DstPort)},
		{xdpflowVarKeepProto, boolByte(dims.Proto)},
		{xdpflowVarKeepIfindex, boolByte(dims.Ifindex)},
		{xdpflowVarSaddrPrefix4, src.PrefixIPv4},
		{xdpflowVarSaddrPrefix6, src.PrefixIPv6},
		{xdpflowVarDaddrPrefix4, dst.PrefixIPv4},
		{xdpflowVarDaddrPrefix6, dst.PrefixIPv6},
		{xdpflowVarSaddrMask4, prefixMask(96 + int(src.PrefixIPv4))},
		{xdpflowVarSaddrMask6, prefixMask(int(src.PrefixIPv6))},
		{xdpflowVarDaddrMask4, prefixMask(96 + int(dst.PrefixIPv4))},
		{xdpflowVarDaddrMask6, prefixMask(int(dst.PrefixIPv6))},
		{xdpflowVarCidrSaddr, boolByte(src.CIDRs && len(opts.CIDRs) > 0)},
		{xdpflowVarCidrDaddr, boolByte(dst.CIDRs && len(opts.CIDRs) > 0)},
		{xdpflowVarCidrOther, boolByte(opts.OtherOutsideCIDRs)},
		{xdpflowVarTrackChanges, boolByte(opts.TrackChanges)},
		{xdpflowVarChangedCapacity, max(1, changedCapacity(opts))},
		// Now, above every epoch an earlier process left in a pinned table
		// ("Changed entries" in bpf/xdpflow.c).
		{xdpflowVarEpoch, monotonicNs()},
	}
}

// changedCapacity is the size of the buffer ReadDirty reads from
// (changed_out), and of each changed list; 0 without TrackChanges.
func changedCapacity(opts Options) uint32 {
	if !opts.TrackChanges {
		return 0
	}
	return min(opts.MaxConnections, MaxChangedRead)
}

// fillCIDRs writes the CIDRs into the program's LPM trie.
func fillCIDRs(m *ebpf.Map, cidrs []netip.Prefix) error {
	for _, p := range cidrs {
		bits := MappedBits(p)
		key := xdpflowCidrKey{Prefixlen: uint32(bits), Addr: p.Addr().As16()}
		value := xdpflowCidrValue{Mask: prefixMask(bits), Prefix: uint8(p.Bits())}
		if err := m.Put(&key, &value); err != nil {
			return fmt.Errorf("store CIDR %s: %w", p, err)
		}
	}
	return nil
}

// State says what Load found in Options.StateDir; the zero value
// without one.
func (d *Datapath) State() StateReport {
	if d.state == nil {
		return StateReport{}
	}
	return d.state.report
}

// Program returns the loaded XDP program, e.g. for BPF_PROG_TEST_RUN.
func (d *Datapath) Program() *ebpf.Program { return d.objs.Xdpflow }

// EgressProgram returns the loaded TC egress program, which counts what
// the host transmits into the same flow table, e.g. for
// BPF_PROG_TEST_RUN; nil unless Options.Transmit.
func (d *Datapath) EgressProgram() *ebpf.Program { return d.objs.XdpflowEgress }

// Close stops Follow, detaches the program from every interface (with a
// state directory, the pinned attachments stay and go on counting) and
// releases the program, its maps and the event reader. It is safe to call
// twice.
func (d *Datapath) Close() error {
	d.stopFollowing()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	errs := d.detachAllLocked()
	d.mu.Unlock()

	close(d.closing)
	errs = append(errs, d.closeEvents())
	d.wg.Wait()
	// The global variables stay memory-mapped, keeping their two maps
	// alive, until the garbage collector frees the Datapath: drop it.
	errs = append(errs, d.closeDumper(), d.objs.Close())
	return errors.Join(errs...)
}

// closeDumper releases the flow table walk, if loaded.
func (d *Datapath) closeDumper() error {
	if d.dump == nil {
		return nil
	}
	return d.dump.Close()
}

// Stats reads the counters, summing the per-CPU values.
func (d *Datapath) Stats() (Stats, error) {
	var s Stats
	var perCPU []uint64
	for _, f := range s.perCPUFields() {
		if err := d.objs.Stats.Lookup(uint32(f.index), &perCPU); err != nil {
			return Stats{}, fmt.Errorf("read stats[%d]: %w", f.index, err)
		}
		for _, v := range perCPU {
			*f.sum += v
		}
	}
	if err := d.objs.NewConnections.Get(&s.NewConnections); err != nil {
		return Stats{}, fmt.Errorf("read new_connections: %w", err)
	}
	return s, nil
}

// statField is an index of the per-CPU stats array (enum xdpflow_stat)
// and the Stats field that holds the sum of its values.
type statField struct {
	index xdpflowXdpflowStat
	sum   *uint64
}

// perCPUFields returns the fields of s read from the per-CPU stats array.
func (s *Stats) perCPUFields() []statField {
	return []statField{
		{xdpflowXdpflowStatSTAT_OVERFLOW_PACKETS, &s.OverflowPackets},
		{xdpflowXdpflowStatSTAT_OVERFLOW_BYTES, &s.OverflowBytes},
		{xdpflowXdpflowStatSTAT_RINGBUF_DROPS, &s.RingbufDrops},
		{xdpflowXdpflowStatSTAT_EVENTS, &s.Events},
	}
}

// MaxConnections returns the capacity of the flow table.
func (d *Datapath) MaxConnections() uint32 { return d.objs.Flows.MaxEntries() }
