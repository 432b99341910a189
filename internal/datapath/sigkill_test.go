//go:build linux

package datapath

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// Environment of the child process of TestSIGKILLDetaches: the namespace
// to attach in and the attach mode. Without them TestSIGKILLChild does
// nothing.
const (
	skChildNetnsEnv = "XDPFLOW_SIGKILL_CHILD_NETNS"
	skChildModeEnv  = "XDPFLOW_SIGKILL_CHILD_MODE"
)

// skChildLifetime bounds how long a child waits to be killed, in case its
// parent died without killing it (it also exits when its stdin, a pipe
// from the parent, reaches end of file).
const skChildLifetime = 2 * time.Minute

// TestSIGKILLDetaches starts a child process (this test binary, running
// TestSIGKILLChild) that loads the datapath, attaches it to the receiver
// veth of a namespace pair and waits. The test kills it with SIGKILL: no
// Close, no deferred function, no cleanup runs. The bpf_link must still
// detach the program: within a few seconds the veth has no XDP program,
// and the child's program, link and maps no longer exist.
func TestSIGKILLDetaches(t *testing.T) {
	privtest.RequireRoot(t)
	for _, mode := range []AttachMode{AttachNative, AttachGeneric} {
		t.Run(mode.String(), func(t *testing.T) {
			testSIGKILLDetaches(t, mode)
		})
	}
}

func testSIGKILLDetaches(t *testing.T, mode AttachMode) {
	pair := netnstest.New(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGKILLChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), skChildNetnsEnv+"="+pair.Receiver, skChildModeEnv+"="+mode.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = outW
	if err := cmd.Start(); err != nil {
		outR.Close()
		outW.Close()
		t.Fatalf("start child: %v", err)
	}
	outW.Close()
	pid := cmd.Process.Pid
	waited := false
	lines := make(chan string, 16)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody listens any more
			}
		}
	}()
	// Whatever happens, the child is dead and reaped when the test ends.
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		stdin.Close()
		<-readerDone
		outR.Close()
	})

	progID := skWaitAttached(t, lines, &stderr)
	if x, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); !ok || ebpf.ProgramID(x.ProgID) != progID {
		t.Fatalf("XDP program on %s: %d (attached %v), want the child's program %d", netnstest.ReceiverIface, x.ProgID, ok, progID)
	}
	linkIDs, mapIDs := skChildObjects(t, progID)
	if len(linkIDs) != 1 || len(mapIDs) == 0 {
		t.Fatalf("child's program %d: links %v, maps %v; want one link and its maps", progID, linkIDs, mapIDs)
	}

	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill child %d: %v", pid, err)
	}
	err = cmd.Wait()
	waited = true
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child %d: %v, want killed by SIGKILL; stderr:\n%s", pid, err, stderr.String())
	}

	var left []string
	deadline := killed.Add(10 * time.Second)
	for {
		left = left[:0]
		if x, ok := netnstest.LinkXDP(t, pair.Receiver, netnstest.ReceiverIface); ok {
			left = append(left, fmt.Sprintf("XDP program %d on %s", x.ProgID, netnstest.ReceiverIface))
		}
		left = append(left, skAlive(progID, linkIDs, mapIDs)...)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(left) != 0 {
		t.Fatalf("%v after SIGKILL, still there: %s", time.Since(killed).Round(time.Millisecond), strings.Join(left, "; "))
	}
	t.Logf("%s mode: child %d killed; program %d, link %v and maps %v gone and %s free within %v",
		mode, pid, progID, linkIDs, mapIDs, netnstest.ReceiverIface, time.Since(killed).Round(time.Millisecond))
}

// skWaitAttached waits for the child's "attached <program ID>" line.
func skWaitAttached(t *testing.T, lines <-chan string, stderr *bytes.Buffer) ebpf.ProgramID {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("child exited before attaching; stderr:\n%s", stderr.String())
			}
			if v, found := strings.CutPrefix(line, "attached "); found {
				id, err := strconv.ParseUint(v, 10, 32)
				if err != nil {
					t.Fatalf("child said %q: %v", line, err)
				}
				return ebpf.ProgramID(id)
			}
			t.Logf("child: %s", line)
		case <-timeout:
			t.Fatalf("child did not attach within 30s")
		}
	}
}

// skChildObjects returns the links of program id and the maps it uses.
// It closes every file descriptor it opens: an fd of this process would
// keep them alive after the child's death.
func skChildObjects(t *testing.T, id ebpf.ProgramID) (links []link.ID, maps []ebpf.MapID) {
	t.Helper()
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		t.Fatalf("child's program %d: %v", id, err)
	}
	info, err := p.Info()
	p.Close()
	if err != nil {
		t.Fatalf("child's program %d info: %v", id, err)
	}
	maps, ok := info.MapIDs()
	if !ok {
		t.Fatalf("child's program %d: map IDs unavailable", id)
	}
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		li, err := it.Link.Info()
		if err != nil {
			continue // detached meanwhile
		}
		if li.Program == id {
			links = append(links, it.ID)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterate links: %v", err)
	}
	return links, maps
}

// skAlive lists the objects that the kernel still knows by ID.
func skAlive(prog ebpf.ProgramID, links []link.ID, maps []ebpf.MapID) []string {
	var out []string
	check := func(what string, c io.Closer, err error) {
		if err == nil {
			c.Close()
			out = append(out, what)
		} else if !errors.Is(err, os.ErrNotExist) {
			out = append(out, fmt.Sprintf("%s (%v)", what, err))
		}
	}
	p, err := ebpf.NewProgramFromID(prog)
	check(fmt.Sprintf("program %d", prog), p, err)
	for _, id := range links {
		l, err := link.NewFromID(id)
		check(fmt.Sprintf("link %d", id), l, err)
	}
	for _, id := range maps {
		m, err := ebpf.NewMapFromID(id)
		check(fmt.Sprintf("map %d", id), m, err)
	}
	return out
}

// TestSIGKILLChild is the child process of TestSIGKILLDetaches, selected
// by its environment; run by go test it does nothing. It loads the
// datapath, attaches it in the namespace it was given, prints "attached
// <program ID>" and waits to be killed. It never returns: it exits when
// its stdin reaches end of file or after skChildLifetime.
func TestSIGKILLChild(t *testing.T) {
	ns := os.Getenv(skChildNetnsEnv)
	if ns == "" {
		return
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "sigkill child: "+format+"\n", args...)
		os.Exit(2)
	}
	mode, err := ParseAttachMode(os.Getenv(skChildModeEnv))
	if err != nil {
		fail("%v", err)
	}
	d, err := Load(testOptions())
	if err != nil {
		fail("load: %v", err)
	}
	attachAndWaitForKill(d, ns, mode, fail)
}

// attachAndWaitForKill is the rest of a child process of the SIGKILL
// tests: it attaches d in namespace ns, prints "attached <XDP program
// ID>" and waits to be killed. It never returns: it exits when its stdin
// reaches end of file (the parent is gone) or after skChildLifetime, and
// calls fail, which exits, on an error.
func attachAndWaitForKill(d *Datapath, ns string, mode AttachMode, fail func(format string, args ...any)) {
	if err := netnstest.Do(ns, func() error {
		_, err := d.Attach(netnstest.ReceiverIface, mode)
		return err
	}); err != nil {
		fail("attach: %v", err)
	}
	info, err := d.Program().Info()
	if err != nil {
		fail("program info: %v", err)
	}
	id, ok := info.ID()
	if !ok {
		fail("program ID unavailable")
	}
	fmt.Printf("attached %d\n", id)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3) // the parent is gone
	}()
	time.Sleep(skChildLifetime)
	os.Exit(4)
}
