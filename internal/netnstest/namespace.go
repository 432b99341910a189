//go:build linux

package netnstest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// This file creates, enters and deletes named network namespaces.

// netnsDir is where named network namespaces are bind-mounted, as by
// `ip netns add`, so that iproute2 and other tools see them too.
const netnsDir = "/run/netns"

// addNamed creates a network namespace bind-mounted at netnsDir/name.
func addNamed(name string) error {
	errc := make(chan error, 1)
	go func() {
		// NewNamed moves the calling thread into the new namespace. The
		// thread is never unlocked, so it exits with this goroutine
		// instead of running other goroutines in the wrong namespace.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("create network namespace %s: %w", name, err)
	}
	return nil
}

// deleteNamed removes the name of the namespace at netnsDir/name, as
// `ip netns del` does: the kernel frees the namespace once no process,
// socket or mount holds it any more. A file that is not a mount point (left
// by a creation that failed half-way) is removed too.
func deleteNamed(name string) error {
	err := netns.DeleteNamed(name)
	if errors.Is(err, unix.EINVAL) {
		err = os.Remove(filepath.Join(netnsDir, name))
	}
	if err != nil {
		return fmt.Errorf("delete network namespace %s: %w", name, err)
	}
	return nil
}

// nsHandle opens the namespace named name; the caller closes the handle.
func nsHandle(name string) (netns.NsHandle, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return netns.None(), fmt.Errorf("open network namespace %s: %w", name, err)
	}
	return h, nil
}

// Exists reports whether a namespace named name exists in /run/netns.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

var staleName = regexp.MustCompile(`^` + regexp.QuoteMeta(Prefix) + `(\d+)-`)

// SweepStale deletes the namespaces named Prefix + "<pid>-..." whose
// process no longer exists: leftovers of test binaries that were killed
// before their cleanup ran. Namespaces of live processes are untouched.
func SweepStale() error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if err := deleteNamed(e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// Do runs fn on a new goroutine locked to an OS thread that was switched
// into the network namespace ns (see the package-level Do).
func (p *Pair) Do(ns string, fn func() error) error { return Do(ns, fn) }

// Do runs fn on a new goroutine locked to an OS thread that was switched
// into the network namespace named ns, waits for it and returns its error.
//
// Sockets fn creates (net.Listen, net.Dial, net.ListenPacket, ...) and
// interface lookups or BPF attachments it makes belong to ns; sockets stay
// usable from any goroutine afterwards. Goroutines fn starts do not run in
// ns. The thread is never unlocked, so it exits with the goroutine and is
// never reused in the wrong namespace. A panic in fn is returned as an
// error; fn must not call t.FailNow (return an error instead).
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		err := fmt.Errorf("netns %s: function exited without returning (runtime.Goexit, e.g. t.FailNow?)", ns)
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("netns %s: panic: %v\n%s", ns, r, debug.Stack())
			}
			errc <- err
		}()
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with this goroutine.
		if err = enter(ns); err != nil {
			return
		}
		err = fn()
	}()
	return <-errc
}

// enter switches the calling thread into the namespace named ns.
func enter(ns string) error {
	h, err := nsHandle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	return nil
}
