//go:build linux

package datapath

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// stateLayout names the meaning of the pinned maps; a program whose maps
// mean something else must change it, so that it starts a new table.
// State 2: flow_value.dead is a state word of pins and flags, and packets
// add without the entry's lock; a program of state 1 evicting from the
// same table would miss what a packet adds under a pin. State 3:
// flow_value holds the epoch an entry was last listed changed in.
const stateLayout = "xdpflow state 3"

// Names in a state directory.
const (
	stateMeta       = "meta"
	stateLinkPrefix = "link:" // link:<interface>:<mode>; ':' is in no interface name
	// stateEgressPrefix names the pinned TCX links of the egress program,
	// egress:<interface>. A tc filter, the fallback, needs no pin: it
	// outlives its process anyway.
	stateEgressPrefix = "egress:"
)

// state is the bpffs directory in which a Datapath keeps its flow table,
// its statistics and its attachments across processes.
type state struct {
	dir    string
	report StateReport
	// fresh is the meta of a new table, written by commit once its maps
	// are loaded and pinned; nil when the table was taken over.
	fresh *stateMetaValue
}

// stateMetaValue is the one value of the meta map.
type stateMetaValue struct {
	Fingerprint uint64
	StartedNs   int64
	MonoToUnix  int64 // the table's ClockOffset
}

// openState prepares dir for spec: it keeps the pinned table if it was
// made for the same layout and grouping, removes it otherwise, and marks
// the maps to pin.
func openState(dir string, spec *ebpf.CollectionSpec, opts Options) (*state, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("state directory %s: %w: give the collector's user a directory of its own on the BPF file system "+
				"(mkdir %s && chown USER %s), below directories it may search", dir, err, filepath.Dir(dir), filepath.Dir(dir))
		}
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	if uint32(fs.Type) != unix.BPF_FS_MAGIC {
		return nil, fmt.Errorf("state directory %s is not on a BPF file system: mount one (mount -t bpf bpf /sys/fs/bpf) or choose a directory below one", dir)
	}
	s := &state{dir: dir}
	want := fingerprint(spec, opts)
	meta, found, err := s.readMeta()
	if errors.Is(err, os.ErrPermission) {
		// Not a table to replace: one this process may not touch.
		return nil, fmt.Errorf("state directory %s: %w", dir, foreignPin(filepath.Join(dir, stateMeta), err))
	}
	switch {
	case err != nil:
		s.report.Reason = fmt.Sprintf("the state found could not be read (%v)", err)
	case found && meta.Fingerprint == want:
		s.report = StateReport{Restored: true, Started: time.Unix(0, meta.StartedNs), Clock: ClockOffset{monoToUnix: meta.MonoToUnix}}
	case found:
		s.report.Reason = "the flow table was made for another program version, key, grouping or max_connections"
	}
	if !s.report.Restored {
		if err := s.removeTable(); err != nil {
			return nil, err
		}
		clock, err := MeasureClockOffset()
		if err != nil {
			return nil, err
		}
		s.report.Started, s.report.Clock = time.Now(), clock
		s.fresh = &stateMetaValue{Fingerprint: want, StartedNs: s.report.Started.UnixNano(), MonoToUnix: clock.monoToUnix}
	}
	spec.Maps[xdpflowMapFlows].Pinning = ebpf.PinByName
	spec.Maps[xdpflowMapStats].Pinning = ebpf.PinByName
	return s, nil
}

// commit records a new table as made for this layout, once its maps are
// pinned: a table whose load failed is never taken over.
func (s *state) commit() error {
	if s == nil || s.fresh == nil {
		return nil
	}
	return s.writeMeta(*s.fresh)
}

// fingerprint identifies what the pinned maps hold: the layout, the
// key's grouping, and the table's size.
func fingerprint(spec *ebpf.CollectionSpec, opts Options) uint64 {
	flows := spec.Maps[xdpflowMapFlows]
	h := sha256.New()
	fmt.Fprintf(h, "%s|%d|%d|%d|%+v|%+v|%+v|%v|%v", stateLayout, flows.KeySize, flows.ValueSize, flows.MaxEntries,
		opts.Dimensions, opts.Source, opts.Destination, opts.CIDRs, opts.OtherOutsideCIDRs)
	return binary.LittleEndian.Uint64(h.Sum(nil))
}

func (s *state) metaSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{Name: stateMeta, Type: ebpf.Array, KeySize: 4, ValueSize: 24, MaxEntries: 1, Pinning: ebpf.PinByName}
}

func (s *state) readMeta() (stateMetaValue, bool, error) {
	var v stateMetaValue
	m, err := ebpf.LoadPinnedMap(filepath.Join(s.dir, stateMeta), nil)
	if errors.Is(err, os.ErrNotExist) {
		return v, false, nil
	}
	if err != nil {
		return v, false, err
	}
	defer m.Close()
	err = m.Lookup(uint32(0), &v)
	return v, err == nil, err
}

func (s *state) writeMeta(v stateMetaValue) error {
	m, err := ebpf.NewMapWithOptions(s.metaSpec(), ebpf.MapOptions{PinPath: s.dir})
	if err != nil {
		return fmt.Errorf("state directory %s: create %s: %w", s.dir, stateMeta, err)
	}
	defer m.Close()
	return m.Put(uint32(0), &v)
}

// removeTable unpins the maps of an earlier table; its links stay, and
// are given the new program.
func (s *state) removeTable() error {
	for _, name := range []string{xdpflowMapFlows, xdpflowMapStats, stateMeta} {
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("state directory %s: remove the earlier %s: %w", s.dir, name, err)
		}
	}
	return nil
}

// foreignPin explains a permission error on the pin at path: a pin, and
// the directory a collector creates for its pins, are open to their owner
// only (modes 0600 and 0700), so those another user made cannot be taken
// over.
func foreignPin(path string, err error) error {
	if !errors.Is(err, os.ErrPermission) {
		return err
	}
	for _, p := range []string{path, filepath.Dir(path)} {
		fi, serr := os.Stat(p)
		if serr != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
			return fmt.Errorf("%w: %s belongs to uid %d, and only its owner may open it: run the collector as uid %d, "+
				"chown -R %s to the collector's user, or remove it (once no collector uses it) to start anew",
				err, p, st.Uid, st.Uid, filepath.Dir(path))
		}
	}
	return err
}

func (s *state) linkPath(iface string, mode AttachMode) string {
	return filepath.Join(s.dir, stateLinkPrefix+iface+":"+mode.String())
}

func (s *state) egressLinkPath(iface string) string {
	return filepath.Join(s.dir, stateEgressPrefix+iface)
}

// pinnedEgressLinks returns the pinned TCX links' paths by interface name.
func (s *state) pinnedEgressLinks() map[string]string {
	paths, _ := filepath.Glob(filepath.Join(s.dir, stateEgressPrefix+"*"))
	out := make(map[string]string, len(paths))
	for _, p := range paths {
		out[strings.TrimPrefix(filepath.Base(p), stateEgressPrefix)] = p
	}
	return out
}

// adoptEgress takes over the TCX link of the egress program an earlier
// process pinned for iface at ifindex, running prog from now on (an
// atomic replacement, as adopt's). A link of an interface that was
// deleted since is removed. It returns nil when there is no link to take
// over.
func (s *state) adoptEgress(iface string, ifindex int, prog *ebpf.Program) (*egressLink, error) {
	path := s.egressLinkPath(iface)
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("take over the TCX egress link of %s: %w", iface, foreignPin(path, err))
	}
	if info, err := l.Info(); err != nil || info.TCX() == nil || int(info.TCX().Ifindex) != ifindex {
		return nil, errors.Join(l.Unpin(), l.Close()) // the interface was created again
	}
	if err := l.Update(prog); err != nil {
		return nil, errors.Join(fmt.Errorf("give the TCX egress link of %s the new program: %w", iface, err), l.Close())
	}
	return &egressLink{hook: HookTCX, link: l, kept: true}, nil
}

// releaseEgress detaches for good the egress program an earlier process
// left on iface at ifindex: its pinned TCX link, and a tc filter of ours
// (a process with transmit counting that this one has not).
func (s *state) releaseEgress(iface string, ifindex int) error {
	var errs []error
	if path, ok := s.pinnedEgressLinks()[iface]; ok {
		errs = append(errs, unpinLink(path))
	}
	if ifindex != 0 {
		errs = append(errs, removeOurFilters(ifindex))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release the egress program of %s: %w", iface, err)
	}
	return nil
}

// unpinLink removes the link pinned at path, detaching it unless a
// process holds it.
func unpinLink(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return foreignPin(path, err)
	}
	return errors.Join(l.Unpin(), l.Close())
}

// pinnedLinks returns the pinned links' paths by interface name.
func (s *state) pinnedLinks() map[string]string {
	paths, _ := filepath.Glob(filepath.Join(s.dir, stateLinkPrefix+"*"))
	out := make(map[string]string, len(paths))
	for _, p := range paths {
		name := strings.TrimPrefix(filepath.Base(p), stateLinkPrefix)
		if i := strings.LastIndexByte(name, ':'); i > 0 {
			out[name[:i]] = p
		}
	}
	return out
}

// adopt takes over the link an earlier process pinned for iface at
// ifindex, running prog from now on (an atomic replacement: no packet
// goes uncounted). A link of an interface that was deleted since is
// removed. ok is false when there is no link to take over.
func (s *state) adopt(iface string, ifindex int, prog *ebpf.Program) (l link.Link, mode AttachMode, ok bool, err error) {
	path, found := s.pinnedLinks()[iface]
	if !found {
		return nil, 0, false, nil
	}
	l, err = link.LoadPinnedLink(path, nil)
	if err != nil {
		return nil, 0, false, fmt.Errorf("take over the XDP link of %s: %w", iface, foreignPin(path, err))
	}
	if info, err := l.Info(); err != nil || info.XDP() == nil || int(info.XDP().Ifindex) != ifindex {
		return nil, 0, false, errors.Join(l.Unpin(), l.Close()) // the interface was created again
	}
	if err := l.Update(prog); err != nil {
		return nil, 0, false, errors.Join(fmt.Errorf("give the XDP link of %s the new program: %w", iface, err), l.Close())
	}
	mode, _ = ParseAttachMode(path[strings.LastIndexByte(path, ':')+1:])
	return l, mode, true, nil
}

// ReleaseStaleLinks detaches for good the links an earlier process pinned
// in the state directory that this Datapath has not taken over, where keep
// rejects the interface or the interface is gone, and with them the
// egress program there (its pinned TCX link or our tc filter). Call it in
// the interfaces' network namespace, as Attach: tc filters are found by
// ifindex. Without a state directory it does nothing.
func (d *Datapath) ReleaseStaleLinks(keep func(iface string) bool) error {
	if d.state == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for iface, path := range d.state.pinnedLinks() {
		if _, ours := d.links[iface]; ours {
			continue
		}
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("release the XDP link of %s: %w", iface, err))
			continue
		}
		info, err := l.Info()
		gone := err != nil || info.XDP() == nil || info.XDP().Ifindex == 0
		if keep(iface) && !gone {
			errs = append(errs, l.Close()) // the follower takes it over
			continue
		}
		ifindex := 0
		if !gone {
			ifindex = int(info.XDP().Ifindex)
		}
		errs = append(errs, d.state.releaseEgress(iface, ifindex), l.Unpin(), l.Close())
	}
	// TCX links without an XDP link left: a process killed in between.
	xdp := d.state.pinnedLinks()
	for iface, path := range d.state.pinnedEgressLinks() {
		if _, ours := d.links[iface]; ours || xdp[iface] != "" {
			continue
		}
		errs = append(errs, unpinLink(path))
	}
	return errors.Join(errs...)
}
