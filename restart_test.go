//go:build linux

package xdpflowreceiver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/goleak"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestRestartLeavesNothingBehind starts and shuts down the real receiver
// (factory, datapath, XDP attached to a veth in a network namespace) 50
// times in one process, alternating native and generic mode. After each
// Shutdown the veth has no XDP program; afterwards the process has no
// goroutine, no file descriptor and no BPF object more than before, and
// none of the programs, maps and links the receivers created still exists
// in the kernel.
func TestRestartLeavesNothingBehind(t *testing.T) {
	privtest.RequireRoot(t)
	const restarts = 50
	pair := netnstest.New(t)
	ctx := context.Background()
	f := NewFactory()

	ignoreBefore := goleak.IgnoreCurrent()
	fdsBefore := rstOpenFDs(t)
	bpfBefore := rstBPFObjects(t)
	mmapsBefore := rstMappedBPFMaps(t)
	created := rstIDSet{}
	began := time.Now()
	// running is shut down if the test fails between Start and Shutdown.
	// Nothing else may keep a shut-down receiver reachable: its datapath
	// holds memory mappings of BPF maps until it is garbage collected.
	var running receiver.Metrics
	t.Cleanup(func() {
		if running != nil {
			_ = running.Shutdown(ctx)
		}
	})

	for i := range restarts {
		cfg := f.CreateDefaultConfig().(*Config)
		cfg.Interfaces = []string{netnstest.ReceiverIface}
		cfg.AttachMode = []string{"native", "generic"}[i%2]
		cfg.Ports = nil
		cfg.MaxConnections = 1024
		cfg.CollectionInterval = minInterval
		cfg.MinSnapshotInterval = minInterval
		require.NoError(t, cfg.Validate())
		sink := new(consumertest.MetricsSink)
		r, err := f.CreateMetrics(ctx, receivertest.NewNopSettings(f.Type()), cfg, sink)
		require.NoError(t, err)
		running = r

		require.NoError(t, pair.Do(pair.Receiver, func() error {
			return r.Start(ctx, componenttest.NewNopHost())
		}), "start %d (%s)", i, cfg.AttachMode)
		held := rstBPFObjects(t).minus(bpfBefore)
		require.Len(t, held[rstLink], 1, "start %d: BPF links held: %v", i, held)
		require.Len(t, held[rstProg], 4, "start %d: BPF programs held (xdpflow, xdpflow_evict, xdpflow_dump, xdpflow_dirty): %v", i, held)
		require.NotEmpty(t, held[rstMap], "start %d: no BPF map held", i)
		xdp, attached := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface)
		require.True(t, attached, "start %d: no XDP program on %s", i, netnstest.ReceiverIface)
		require.Contains(t, held[rstProg], xdp.ProgID, "start %d: the XDP program on the veth is not the receiver's", i)
		created.add(held)
		created.add(rstProgramMaps(t, held))

		// Let the loop take a snapshot or two before shutting down.
		time.Sleep(20 * time.Millisecond)
		require.NoError(t, r.Shutdown(ctx), "shutdown %d", i)
		running = nil
		if xdp, attached := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); attached {
			t.Fatalf("shutdown %d (%s): XDP program %d still on %s", i, cfg.AttachMode, xdp.ProgID, netnstest.ReceiverIface)
		}
		require.NotEmpty(t, sink.AllMetrics(), "shutdown %d: no snapshot exported", i)
	}
	elapsed := time.Since(began)

	goleak.VerifyNone(t, ignoreBefore)

	// cilium/ebpf memory-maps the .rodata and .bss maps for the loaded
	// variables, and Close does not unmap them: the mapping, which holds
	// the kernel map, goes when the garbage collector runs the cleanup of
	// its ebpf.Memory. Until then the maps of every closed datapath live
	// on (not leaked: the next GC releases them), so collect now.
	mmapsLeft := rstMappedBPFMaps(t) - mmapsBefore
	runtime.GC()
	// The cleanups run on their own goroutine, and the kernel frees maps
	// after an RCU grace period once nothing uses them: allow a few seconds.
	var fdsAfter map[int]string
	var bpfAfter rstIDSet
	var alive []string
	var mmapsAfter int
	deadline := time.Now().Add(10 * time.Second)
	for {
		fdsAfter = rstOpenFDs(t)
		bpfAfter = rstBPFObjects(t)
		alive = created.alive()
		mmapsAfter = rstMappedBPFMaps(t)
		if (len(fdsAfter) == len(fdsBefore) && bpfAfter.equal(bpfBefore) && len(alive) == 0 && mmapsAfter == mmapsBefore) ||
			time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d starts and shutdowns in %v; open fds %d before, %d after; BPF objects created: %d programs, %d maps, %d links",
		restarts, elapsed.Round(time.Millisecond), len(fdsBefore), len(fdsAfter),
		len(created[rstProg]), len(created[rstMap]), len(created[rstLink]))
	t.Logf("BPF maps still memory-mapped by this process after the last Shutdown, before a GC: %d (%d per start)",
		mmapsLeft, mmapsLeft/restarts)
	if len(fdsAfter) != len(fdsBefore) {
		t.Errorf("open fds: %d before, %d after:\n%s", len(fdsBefore), len(fdsAfter), rstFDDiff(fdsBefore, fdsAfter))
	}
	if !bpfAfter.equal(bpfBefore) {
		t.Errorf("BPF objects held by this process: %v before, %v after", bpfBefore, bpfAfter)
	}
	if mmapsAfter != mmapsBefore {
		t.Errorf("BPF maps memory-mapped by this process: %d before, %d after a GC", mmapsBefore, mmapsAfter)
	}
	if len(alive) != 0 {
		t.Errorf("BPF objects created by the receivers still exist in the kernel: %s", strings.Join(alive, ", "))
	}
	require.Equal(t, restarts*4, len(created[rstProg]), "every start loads its own 4 programs")
	require.Equal(t, restarts, len(created[rstLink]), "every start creates its own link")
}

// BPF object kinds, as /proc/self/fd names their anonymous inodes.
const (
	rstProg = "prog"
	rstMap  = "map"
	rstLink = "link"
)

// rstIDSet is a set of BPF object IDs by kind.
type rstIDSet map[string]map[uint32]bool

func (s rstIDSet) put(kind string, id uint32) {
	if s[kind] == nil {
		s[kind] = map[uint32]bool{}
	}
	s[kind][id] = true
}

func (s rstIDSet) add(o rstIDSet) {
	for kind, ids := range o {
		for id := range ids {
			s.put(kind, id)
		}
	}
}

// minus returns the IDs of s that are not in o.
func (s rstIDSet) minus(o rstIDSet) rstIDSet {
	out := rstIDSet{}
	for kind, ids := range s {
		for id := range ids {
			if !o[kind][id] {
				out.put(kind, id)
			}
		}
	}
	return out
}

func (s rstIDSet) equal(o rstIDSet) bool {
	return len(s.minus(o)) == 0 && len(o.minus(s)) == 0
}

func (s rstIDSet) String() string {
	var parts []string
	for _, kind := range []string{rstProg, rstMap, rstLink} {
		var ids []int
		for id := range s[kind] {
			ids = append(ids, int(id))
		}
		sort.Ints(ids)
		parts = append(parts, fmt.Sprintf("%ss %v", kind, ids))
	}
	return strings.Join(parts, ", ")
}

// alive lists the objects of s that the kernel still knows by ID.
func (s rstIDSet) alive() []string {
	var out []string
	check := func(kind string, id uint32, err error, c interface{ Close() error }) {
		if err == nil {
			c.Close()
			out = append(out, fmt.Sprintf("%s %d", kind, id))
		} else if !errors.Is(err, os.ErrNotExist) {
			out = append(out, fmt.Sprintf("%s %d (%v)", kind, id, err))
		}
	}
	for id := range s[rstProg] {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		check(rstProg, id, err, p)
	}
	for id := range s[rstMap] {
		m, err := ebpf.NewMapFromID(ebpf.MapID(id))
		check(rstMap, id, err, m)
	}
	for id := range s[rstLink] {
		l, err := link.NewFromID(link.ID(id))
		check(rstLink, id, err, l)
	}
	sort.Strings(out)
	return out
}

// rstProgramMaps returns the maps the programs of s use, whether or not
// this process holds a file descriptor of them (.rodata, .bss, ...).
func rstProgramMaps(t *testing.T, s rstIDSet) rstIDSet {
	t.Helper()
	out := rstIDSet{}
	for id := range s[rstProg] {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		require.NoError(t, err, "program %d", id)
		info, err := p.Info()
		p.Close()
		require.NoError(t, err, "program %d info", id)
		maps, ok := info.MapIDs()
		require.True(t, ok, "program %d: map IDs unavailable", id)
		for _, m := range maps {
			out.put(rstMap, uint32(m))
		}
	}
	return out
}

// rstMappedBPFMaps returns the number of BPF maps this process has
// memory-mapped, from /proc/self/maps.
func rstMappedBPFMaps(t *testing.T) int {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	n := 0
	for line := range strings.SplitSeq(string(maps), "\n") {
		if f := strings.Fields(line); len(f) >= 6 && f[5] == "anon_inode:bpf-map" {
			n++ // one mapping per map: cilium/ebpf maps each map once
		}
	}
	return n
}

// rstOpenFDs returns this process's open file descriptors and what they
// point to.
func rstOpenFDs(t *testing.T) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	fds := make(map[int]string, len(entries))
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		require.NoError(t, err)
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the directory's own fd, closed by now
		}
		fds[fd] = target
	}
	return fds
}

// rstFDDiff describes the fds that differ between before and after.
func rstFDDiff(before, after map[int]string) string {
	var lines []string
	for fd, target := range after {
		if before[fd] != target {
			lines = append(lines, fmt.Sprintf("  + fd %d: %s", fd, target))
		}
	}
	for fd, target := range before {
		if after[fd] != target {
			lines = append(lines, fmt.Sprintf("  - fd %d: %s", fd, target))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// rstBPFObjects returns the IDs of the BPF programs, maps and links this
// process holds a file descriptor of, from /proc/self/fdinfo.
func rstBPFObjects(t *testing.T) rstIDSet {
	t.Helper()
	kinds := map[string]struct{ kind, field string }{
		"anon_inode:bpf-prog": {rstProg, "prog_id:"},
		"anon_inode:bpf-map":  {rstMap, "map_id:"},
		"anon_inode:bpf_link": {rstLink, "link_id:"},
	}
	out := rstIDSet{}
	for fd, target := range rstOpenFDs(t) {
		k, ok := kinds[target]
		if !ok {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
		if errors.Is(err, os.ErrNotExist) {
			continue // closed meanwhile
		}
		require.NoError(t, err)
		for line := range strings.SplitSeq(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, k.field); ok {
				id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
				require.NoError(t, err, "fdinfo %d: %q", fd, line)
				out.put(k.kind, uint32(id))
			}
		}
	}
	return out
}
