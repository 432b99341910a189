//go:build linux

package datapath

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// InterfaceEvent is a change Follow made, or failed to make.
type InterfaceEvent struct {
	// Interface is the interface's name.
	Interface string
	// Attached is true when the program was attached to a new or
	// re-created interface, in Mode; false when the interface was deleted
	// and its attachment released, or when attaching failed (Err).
	Attached bool
	Mode     AttachMode
	// EgressHook is where the egress program was attached with it
	// (Datapath.EgressHook); empty without Options.Transmit.
	EgressHook string
	Err        error
}

// resubscribeDelay spaces out new link subscriptions after one failed (the
// kernel drops a subscription whose socket overflows, e.g. when thousands
// of interfaces change at once).
const resubscribeDelay = time.Second

// follower is the goroutine of Follow.
type follower struct {
	stop     chan struct{} // closed to stop following
	stopOnce sync.Once
	done     chan struct{} // closed when the goroutine has returned
}

// Follow keeps the program attached to every interface whose name match
// accepts, in the network namespace of the calling thread: those that
// exist now and those created later, e.g. a configured interface deleted
// and created again, or a container's veth. An attached interface that is
// deleted is released. report receives each change, on Follow's
// goroutine; it must not call the Datapath's Attach, Detach or Close.
//
// Follow returns once it watches link changes; the interfaces that exist
// are then attached in the background, and reported like new ones.
// DetachAll and Close stop it. It may be called once.
func (d *Datapath) Follow(match func(name string) bool, mode AttachMode, report func(InterfaceEvent)) error {
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("follow interfaces: open this thread's network namespace: %w", err)
	}
	f := &follower{stop: make(chan struct{}), done: make(chan struct{})}
	updates, err := subscribeLinks(ns, f.stop)
	if err != nil {
		ns.Close()
		return err
	}
	d.mu.Lock()
	if d.closed || d.follow != nil {
		d.mu.Unlock()
		close(f.stop)
		ns.Close()
		return errors.New("follow interfaces: datapath closed or already following")
	}
	d.follow = f
	d.mu.Unlock()

	go func() {
		defer close(f.done)
		defer ns.Close()
		failed := map[string]int{} // ifindex an attach failed on, by name
		for {
			select {
			case <-f.stop:
				return
			case u, ok := <-updates:
				if ok {
					d.onLinkUpdate(u, ns, match, mode, report, failed)
					continue
				}
				// The kernel dropped the subscription: subscribe again,
				// listing every link, so that no change is missed.
				if updates = d.resubscribe(ns, f.stop, report); updates == nil {
					return
				}
			}
		}
	}()
	return nil
}

// subscribeLinks subscribes to link changes in ns, listing the existing
// links first, until stop is closed.
func subscribeLinks(ns netns.NsHandle, stop chan struct{}) (updates chan netlink.LinkUpdate, err error) {
	updates = make(chan netlink.LinkUpdate, 256)
	err = inNamespace(ns, func() error {
		// No Namespace option: netlink would enter it even when it is the
		// current one, which needs CAP_SYS_ADMIN.
		return netlink.LinkSubscribeWithOptions(updates, stop, netlink.LinkSubscribeOptions{ListExisting: true})
	})
	if err != nil {
		return nil, fmt.Errorf("follow interfaces: subscribe to link changes: %w", err)
	}
	return updates, nil
}

// resubscribe subscribes again until it succeeds or stop is closed (nil).
func (d *Datapath) resubscribe(ns netns.NsHandle, stop chan struct{}, report func(InterfaceEvent)) chan netlink.LinkUpdate {
	for {
		select {
		case <-stop:
			return nil
		case <-time.After(resubscribeDelay):
		}
		updates, err := subscribeLinks(ns, stop)
		if err == nil {
			return updates
		}
		report(InterfaceEvent{Err: err})
	}
}

// onLinkUpdate attaches to a new matching interface and releases a deleted
// one. failed remembers where attaching failed, so that a busy interface
// is reported once, not at each of its changes.
func (d *Datapath) onLinkUpdate(u netlink.LinkUpdate, ns netns.NsHandle, match func(string) bool, mode AttachMode,
	report func(InterfaceEvent), failed map[string]int) {
	name, index := u.Attrs().Name, u.Attrs().Index
	if u.Header.Type == unix.RTM_DELLINK {
		delete(failed, name)
		if d.release(name, index) {
			report(InterfaceEvent{Interface: name})
		}
		return
	}
	if !match(name) || failed[name] == index {
		return
	}
	switch at := d.attachedIndex(name); {
	case at == index:
		return // attached already: a change of flags, MTU, ...
	case at != 0:
		d.release(name, at) // deleted and created again before we heard of it
	}
	var used AttachMode
	err := inNamespace(ns, func() (err error) {
		used, err = d.Attach(name, mode)
		return err
	})
	if err != nil {
		failed[name] = index
	}
	report(InterfaceEvent{Interface: name, Attached: err == nil, Mode: used, EgressHook: d.EgressHook(name), Err: err})
}

// attachedIndex returns the ifindex name is attached at, or 0.
func (d *Datapath) attachedIndex(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.links[name]; ok {
		return a.ifindex
	}
	return 0
}

// release forgets the attachment of name if it is at ifindex: the
// interface was deleted, and the kernel released the program with it.
func (d *Datapath) release(name string, ifindex int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.links[name]
	if !ok || a.ifindex != ifindex {
		return false
	}
	delete(d.links, name)
	_ = detachLink(name, a) // ENODEV: nothing left to detach
	return true
}

// stopFollowing stops Follow's goroutine and waits for it, so that nothing
// is attached after it returns.
func (d *Datapath) stopFollowing() {
	d.mu.Lock()
	f := d.follow
	d.mu.Unlock()
	if f == nil {
		return
	}
	f.stopOnce.Do(func() { close(f.stop) })
	<-f.done
}

// inNamespace runs fn on a thread in ns: XDP attaches by ifindex in the
// calling thread's namespace. It enters ns only when the thread is in
// another one (tests), since entering one needs CAP_SYS_ADMIN, which the
// collector does not have; such a thread is never switched back, and
// exits with its goroutine.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		cur, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		same := cur.Equal(ns)
		cur.Close()
		if same {
			defer runtime.UnlockOSThread()
		} else if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter the network namespace of the interfaces: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
