//go:build linux

package datapath

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Hooks the egress program is attached to, as EgressHook names them.
const (
	// HookTCX is TCX egress (Linux 6.6+), through a BPF link: detached
	// when the process exits, however it exits.
	HookTCX = "tcx"
	// HookTC is a tc filter on the clsact qdisc's egress (before 6.6):
	// Close removes it (with Options.StateDir, leaves it counting); after
	// a SIGKILL it stays, counting, until the next Load's Attach replaces
	// its program in place.
	HookTC = "tc"
)

// egressFilterName names our tc filters, so that Attach finds and
// replaces one an earlier process left.
const egressFilterName = "xdpflow_egress"

// egressFilterPriority is our tc filter's priority: filters of lower
// numbers (Cilium's are 1) run first, so ours, late, counts what they let
// through.
const egressFilterPriority = 0xc000

// egressHooks are the hooks Attach tries, in order; tests narrow it.
var egressHooks = []string{HookTCX, HookTC}

// egressLink is the egress program attached to one interface.
type egressLink struct {
	hook   string
	link   link.Link          // HookTCX
	filter *netlink.BpfFilter // HookTC
	// nl is a netlink socket in the interface's network namespace, the
	// calling thread's at Attach: Close, from any thread, removes the
	// filter there (an ifindex means another interface elsewhere).
	nl *netlink.Handle
	// kept is true with a state directory: close leaves the program
	// attached and counting for the next process (the TCX link pinned,
	// the tc filter in place) until unpin.
	kept bool
}

// attachEgress attaches prog to the egress of ifindex: through TCX, last
// of the programs there (link.Tail), so that it counts what the programs
// before let pass; where the kernel has no TCX, through a tc filter of
// low priority on clsact. With a state directory (st not nil) it first
// takes over the TCX link an earlier process pinned there, and pins a new
// one; a tc filter of ours is given prog in place either way.
func attachEgress(iface string, ifindex int, prog *ebpf.Program, st *state) (*egressLink, error) {
	if st != nil {
		e, err := st.adoptEgress(iface, ifindex, prog)
		if e != nil || err != nil {
			return e, err
		}
	}
	var errs []error
	for _, hook := range egressHooks {
		var (
			e   *egressLink
			err error
		)
		switch hook {
		case HookTCX:
			e, err = attachTCX(ifindex, prog)
		case HookTC:
			e, err = attachTCFilter(ifindex, prog)
		}
		if err == nil {
			return e, e.keep(st, iface)
		}
		errs = append(errs, fmt.Errorf("attach egress program to %s with %s: %w%s", iface, hook, err, egressHint(err)))
		if !errors.Is(err, ebpf.ErrNotSupported) {
			break // the fallback would not help
		}
	}
	return nil, errors.Join(errs...)
}

// keep makes e outlive the process in st, if any: a TCX link is pinned
// there. On failure e is detached.
func (e *egressLink) keep(st *state, iface string) error {
	if st == nil {
		return nil
	}
	if e.hook == HookTCX {
		if err := e.link.Pin(st.egressLinkPath(iface)); err != nil {
			return errors.Join(fmt.Errorf("attach egress program to %s: pin the TCX link in the state directory: %w", iface, err), e.close())
		}
	}
	e.kept = true
	return nil
}

func attachTCX(ifindex int, prog *ebpf.Program) (*egressLink, error) {
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    ebpf.AttachTCXEgress,
		Anchor:    link.Tail(),
	})
	if err != nil {
		return nil, err
	}
	return &egressLink{hook: HookTCX, link: l}, nil
}

// attachTCFilter adds a clsact qdisc if there is none (it stays: removing
// it would remove other users' filters) and our filter on its egress. A
// filter of ours an earlier process left (tc filters outlive their
// process) is given prog in place, in one atomic step, so that no packet
// goes uncounted between the two programs.
func attachTCFilter(ifindex int, prog *ebpf.Program) (*egressLink, error) {
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open a netlink socket: %w", err)
	}
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := nl.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		nl.Close()
		return nil, fmt.Errorf("add clsact qdisc: %w", err)
	}
	ours, err := ourFilters(nl, ifindex)
	if err != nil {
		nl.Close()
		return nil, err
	}
	f := tcFilter(ifindex, prog, egressFilterName)
	add, verb := nl.FilterAdd, "add" // fails where another user's filter holds our place
	for _, o := range ours {
		switch {
		case o.Priority == f.Priority && o.Handle == f.Handle && o.Protocol == f.Protocol:
			add, verb = nl.FilterReplace, "replace"
		default: // of an earlier version, elsewhere
			if err := nl.FilterDel(o); err != nil && !errors.Is(err, unix.ENOENT) {
				nl.Close()
				return nil, fmt.Errorf("remove the tc filter an earlier process left: %w", err)
			}
		}
	}
	if err := add(f); err != nil {
		nl.Close()
		return nil, fmt.Errorf("%s tc filter (priority %#x, handle 1): %w", verb, egressFilterPriority, err)
	}
	return &egressLink{hook: HookTC, filter: f, nl: nl}, nil
}

// tcFilter is the direct-action egress filter of prog on ifindex, named
// name, at our priority and handle.
func tcFilter(ifindex int, prog *ebpf.Program, name string) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_EGRESS,
			Handle:    1,
			Protocol:  unix.ETH_P_ALL,
			Priority:  egressFilterPriority,
		},
		Fd:           prog.FD(),
		Name:         name,
		DirectAction: true,
	}
}

// ourFilters returns the egress filters of ifindex that carry our
// program's name. An interface without a clsact qdisc has none.
func ourFilters(nl *netlink.Handle, ifindex int) ([]*netlink.BpfFilter, error) {
	l, err := nl.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("find interface %d: %w", ifindex, err)
	}
	filters, err := nl.FilterList(l, netlink.HANDLE_MIN_EGRESS)
	if errors.Is(err, unix.EINVAL) {
		return nil, nil // no clsact qdisc
	}
	if err != nil {
		return nil, fmt.Errorf("list tc filters: %w", err)
	}
	var ours []*netlink.BpfFilter
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, egressFilterName) {
			ours = append(ours, bf)
		}
	}
	return ours, nil
}

// removeOurFilters removes the egress filters of ours from ifindex: those
// an earlier process with transmit counting left, where this one has none.
func removeOurFilters(ifindex int) error {
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open a netlink socket: %w", err)
	}
	defer nl.Close()
	ours, err := ourFilters(nl, ifindex)
	var gone netlink.LinkNotFoundError
	if errors.As(err, &gone) {
		return nil // not in this network namespace: no filter of ours to remove here
	}
	if err != nil {
		return err
	}
	for _, f := range ours {
		if err := nl.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove the tc filter an earlier process left: %w", err)
		}
	}
	return nil
}

// unpin makes close detach the program for good, even with a state
// directory.
func (e *egressLink) unpin() error {
	if !e.kept {
		return nil
	}
	e.kept = false
	if e.hook == HookTCX {
		if err := e.link.Unpin(); err != nil {
			return fmt.Errorf("detach egress program (tcx): unpin: %w", err)
		}
	}
	return nil
}

// close detaches the program, unless it is kept for the next process
// (then it only lets go of it). An interface deleted meanwhile took it
// with it: that is not an error.
func (e *egressLink) close() error {
	var err error
	switch e.hook {
	case HookTCX:
		err = e.link.Close()
	case HookTC:
		if !e.kept {
			err = e.nl.FilterDel(e.filter)
		}
		e.nl.Close()
	}
	if err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("detach egress program (%s): %w", e.hook, err)
	}
	return nil
}

func egressHint(err error) string {
	switch {
	case errors.Is(err, unix.EEXIST), errors.Is(err, unix.EBUSY):
		return " (another program holds the hook; it was left untouched)"
	case errors.Is(err, ebpf.ErrNotSupported):
		return " (this kernel has no TCX, Linux 6.6+: falling back to tc)"
	}
	if h := privilegeHint(err); h != "" {
		return " (" + h + ")"
	}
	return ""
}

// EgressHook returns the hook the egress program is attached to on iface:
// HookTCX or HookTC; empty when it is not (receive only, or iface not
// attached).
func (d *Datapath) EgressHook(iface string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.links[iface]; ok && a.egress != nil {
		return a.egress.hook
	}
	return ""
}
