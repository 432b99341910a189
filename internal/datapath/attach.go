//go:build linux

package datapath

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"sort"
	"strings"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// attachment is the program attached to one interface.
type attachment struct {
	link    link.Link
	ifindex int
	mode    AttachMode
	egress  *egressLink // with Options.Transmit
}

// Attach attaches the program to the interface named iface, in the calling
// thread's network namespace, and returns the mode actually used: with
// AttachAuto, native if the driver supports it, else generic.
//
// It uses a bpf_link, so the program is detached when the process exits,
// however it exits. An interface that already has an XDP program is an
// error, and the other program is left untouched.
//
// With Options.Transmit it attaches the egress program too (EgressHook
// says where), or neither. With Options.StateDir it takes over what an
// earlier process left attached there, giving it the new programs, and
// keeps what it attaches for the next process; the egress program of an
// earlier process with transmit counting is removed when this one has
// none.
func (d *Datapath) Attach(iface string, mode AttachMode) (AttachMode, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, fmt.Errorf("attach xdp to %s: datapath is closed", iface)
	}
	if _, ok := d.links[iface]; ok {
		return 0, fmt.Errorf("attach xdp to %s: already attached by this receiver (list each interface once)", iface)
	}
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return 0, fmt.Errorf("attach xdp to %s: interface not found (interfaces here: %s)", iface, interfaceNames())
	}

	if d.state != nil {
		l, used, ok, err := d.state.adopt(iface, ifc.Index, d.objs.Xdpflow)
		if err != nil {
			return 0, fmt.Errorf("attach xdp to %s: %w", iface, err)
		}
		if ok {
			egress, err := d.attachEgress(iface, ifc.Index)
			if err != nil {
				return 0, errors.Join(err, l.Close()) // the pinned link keeps counting
			}
			d.links[iface] = &attachment{link: l, ifindex: ifc.Index, mode: used, egress: egress}
			d.names[ifc.Index] = iface
			return used, nil
		}
	}
	modes := []AttachMode{mode}
	if mode == AttachAuto {
		modes = []AttachMode{AttachNative, AttachGeneric}
	}
	var errs []error
	for _, m := range modes {
		l, err := link.AttachXDP(link.XDPOptions{
			Program:   d.objs.Xdpflow,
			Interface: ifc.Index,
			Flags:     xdpFlags(m),
		})
		if err == nil {
			if d.state != nil {
				if err := l.Pin(d.state.linkPath(iface, m)); err != nil {
					return 0, errors.Join(fmt.Errorf("attach xdp to %s: pin the link in the state directory: %w", iface, err), l.Close())
				}
			}
			egress, err := d.attachEgress(iface, ifc.Index)
			if err != nil {
				return 0, errors.Join(err, l.Unpin(), l.Close())
			}
			d.links[iface] = &attachment{link: l, ifindex: ifc.Index, mode: m, egress: egress}
			d.names[ifc.Index] = iface
			return m, nil
		}
		errs = append(errs, fmt.Errorf("attach xdp to %s in %s mode: %w%s", iface, m, err, attachHint(err, m)))
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
			break // falling back to generic mode would not help
		}
	}
	return 0, errors.Join(errs...)
}

// attachEgress attaches the egress program to iface at ifindex, if
// loaded (Options.Transmit); without it, and with a state directory, it
// removes the egress program an earlier process left there.
func (d *Datapath) attachEgress(iface string, ifindex int) (*egressLink, error) {
	if d.objs.XdpflowEgress != nil {
		return attachEgress(iface, ifindex, d.objs.XdpflowEgress, d.state)
	}
	if d.state != nil {
		return nil, d.state.releaseEgress(iface, ifindex)
	}
	return nil, nil
}

func xdpFlags(m AttachMode) link.XDPAttachFlags {
	if m == AttachNative {
		return link.XDPDriverMode
	}
	return link.XDPGenericMode
}

func attachHint(err error, m AttachMode) string {
	switch {
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EEXIST):
		return " (another XDP program is attached to this interface; it was left untouched: detach it or choose another interface; " +
			"one a collector with state_directory left goes with rm -r <state_directory>/<receiver id>)"
	case m == AttachNative && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)):
		return " (the driver has no native XDP support: try attach_mode: generic)"
	}
	if h := privilegeHint(err); h != "" {
		return " (" + h + ")"
	}
	return ""
}

// Detach removes the program from iface. Detaching an interface that was
// deleted meanwhile succeeds: the kernel already released the program.
func (d *Datapath) Detach(iface string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.links[iface]
	if !ok {
		return fmt.Errorf("detach xdp from %s: not attached", iface)
	}
	delete(d.links, iface)
	return detachLink(iface, a)
}

func (d *Datapath) detachAllLocked() []error {
	var errs []error
	for iface, a := range d.links {
		errs = append(errs, closeLink(iface, a))
		delete(d.links, iface)
	}
	return errs
}

// detachLink removes the programs from iface for good, pinned or not.
func detachLink(iface string, a *attachment) error {
	if err := a.link.Unpin(); err != nil {
		return fmt.Errorf("detach xdp from %s: unpin: %w", iface, err)
	}
	if a.egress != nil {
		if err := a.egress.unpin(); err != nil {
			return fmt.Errorf("detach from %s: %w", iface, err)
		}
	}
	return closeLink(iface, a)
}

// closeLink releases the links: the programs are detached unless they are
// kept in a state directory.
func closeLink(iface string, a *attachment) error {
	var errs []error
	if a.egress != nil {
		if err := a.egress.close(); err != nil {
			errs = append(errs, fmt.Errorf("detach from %s: %w", iface, err))
		}
	}
	if err := a.link.Close(); err != nil && !errors.Is(err, unix.ENODEV) {
		errs = append(errs, fmt.Errorf("detach xdp from %s: %w", iface, err))
	}
	return errors.Join(errs...)
}

// Attached returns the attached interfaces by name with their ifindex.
func (d *Datapath) Attached() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(d.links))
	for name, a := range d.links {
		out[name] = a.ifindex
	}
	return out
}

// InterfaceNames returns the name of every interface the program was
// attached to since Load, by ifindex, those detached or deleted since
// included: flows counted on them keep their interface's name.
func (d *Datapath) InterfaceNames() map[int]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.names)
}

func interfaceNames() string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "unknown: " + err.Error()
	}
	names := make([]string, 0, len(ifaces))
	for _, i := range ifaces {
		names = append(names, i.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// DetachAll stops Follow and removes the program from every interface,
// leaving the maps readable, e.g. for a final snapshot whose counts can no
// longer change. With a state directory the attachments stay pinned, and
// counting goes on for the next process.
func (d *Datapath) DetachAll() error {
	d.stopFollowing()
	d.mu.Lock()
	defer d.mu.Unlock()
	return errors.Join(d.detachAllLocked()...)
}

// Gone returns, sorted, the attached interfaces whose program the kernel
// released because the interface was deleted. They stay in Attached, so
// flows already counted on them keep their interface name; Detach or
// Close releases the rest.
func (d *Datapath) Gone() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var gone []string
	for name, a := range d.links {
		info, err := a.link.Info()
		if err != nil {
			continue
		}
		if xdp := info.XDP(); xdp != nil && xdp.Ifindex == 0 {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	return gone
}
