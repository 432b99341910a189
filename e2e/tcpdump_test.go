//go:build linux

package e2e

// This file runs tcpdump, the end-to-end tests' independent witness of the
// traffic: a capture by a program other than those under test
// (netnstest.StartCapture is this project's own code).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// tcpdump is a running tcpdump writing the inbound packets of one
// interface to a pcap file. Create it with startTcpdump and end it with
// stop. It is not safe for concurrent use.
type tcpdump struct {
	path    string
	cmd     *exec.Cmd
	cancel  context.CancelFunc
	stderr  strings.Builder // written by the reader goroutine until done
	done    chan struct{}   // closed when tcpdump's stderr reaches EOF
	exited  chan error      // tcpdump's exit status, once
	stopped bool
	result  tcpdumpResult
	err     error
}

// tcpdumpResult is what a stopped tcpdump saw.
type tcpdumpResult struct {
	// Pcap is the file tcpdump wrote.
	Pcap *netnstest.Pcap
	// Captured, ReceivedByFilter and DroppedByKernel are tcpdump's own
	// counters, as printed when it exits.
	Captured, ReceivedByFilter, DroppedByKernel int
	// Stderr is everything tcpdump printed on stderr.
	Stderr string
}

// captureStartTimeout bounds the wait for tcpdump to be listening.
const captureStartTimeout = 20 * time.Second

// startTcpdump starts tcpdump in namespace ns on interface iface, capturing
// inbound packets only (-Q in) that match the pcap filter expression
// filter (empty: every packet), without promiscuous mode, full packets,
// written to a file in tb.TempDir(). It returns once tcpdump reports that
// it is listening, so every later matching packet is captured. It fails
// the test if tcpdump cannot start, and stops a capture still running when
// the test ends (registered with tb.Cleanup, so it runs before the
// removal of a Pair created earlier in the test).
func startTcpdump(tb testing.TB, ns, iface, filter string) *tcpdump {
	tb.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		tb.Fatalf("the end-to-end tests capture with the tcpdump command (apt package tcpdump): %v", err)
	}
	c := &tcpdump{
		path:   filepath.Join(tb.TempDir(), iface+".pcap"),
		done:   make(chan struct{}),
		exited: make(chan error, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	// -Z root: tcpdump would otherwise drop to its own user and could not
	// write into the test's temporary directory. --immediate-mode makes
	// libpcap hand every packet over at once and -U writes it at once, so
	// the file is complete when tcpdump has seen everything.
	args := []string{"-Z", "root", "-n", "-p", "-i", iface, "-Q", "in", "-s", "0",
		"--immediate-mode", "-U", "-w", c.path}
	if filter != "" {
		args = append(args, filter)
	}
	c.cmd = netnsCommand(ctx, ns, "tcpdump", args...)
	c.cmd.Cancel = func() error { return c.cmd.Process.Kill() }
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		cancel()
		tb.Fatalf("tcpdump: %v", err)
	}
	// If the test process dies (e.g. killed by a timeout), tcpdump must not
	// outlive it and keep the namespace alive.
	err = startTiedToTest(c.cmd, func() {
		<-c.done // Wait only after stderr has been read to its end.
		c.exited <- c.cmd.Wait()
	})
	if err != nil {
		cancel()
		tb.Fatalf("start %s: %v", c.cmd, err)
	}
	listening := make(chan struct{})
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stderr)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			c.stderr.WriteString(line + "\n")
			if !seen && strings.Contains(line, "listening on") {
				seen = true
				close(listening)
			}
		}
	}()
	tb.Cleanup(func() {
		if !c.stopped {
			if _, err := c.stop(); err != nil {
				tb.Logf("stopping capture at cleanup: %v", err)
			}
		}
	})
	select {
	case <-listening:
		return c
	case <-c.done:
		c.stopped = true
		err := <-c.exited
		cancel()
		tb.Fatalf("%s exited before listening: %v\n%s", c.cmd, err, c.stderr.String())
	case <-time.After(captureStartTimeout):
		tb.Fatalf("%s not listening after %v", c.cmd, captureStartTimeout)
	}
	return nil
}

// stop waits until the pcap file has stopped growing (so packets tcpdump
// has not processed yet are written; at most 5 seconds), sends tcpdump
// SIGINT by its PID so that it flushes and prints its counters, waits for
// it to exit (killing it after 10 seconds) and reads the file.
//
// stop returns an error when tcpdump failed, or when the capture is
// incomplete: packets dropped by the kernel, or fewer packets written than
// tcpdump received. A second call returns the first call's result.
func (c *tcpdump) stop() (tcpdumpResult, error) {
	if c.stopped {
		return c.result, c.err
	}
	c.stopped = true
	c.result, c.err = c.finish()
	return c.result, c.err
}

var statLine = regexp.MustCompile(`(?m)^(\d+) packets? (captured|received by filter|dropped by kernel)$`)

func (c *tcpdump) finish() (tcpdumpResult, error) {
	defer c.cancel()
	waitStable(c.path, 250*time.Millisecond, 5*time.Second)

	var res tcpdumpResult
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return res, fmt.Errorf("interrupt tcpdump (pid %d): %w", c.cmd.Process.Pid, err)
	}
	var waitErr error
	select {
	case waitErr = <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		waitErr = <-c.exited
	}
	res.Stderr = c.stderr.String()
	if waitErr != nil {
		return res, fmt.Errorf("tcpdump (pid %d): %w\n%s", c.cmd.Process.Pid, waitErr, res.Stderr)
	}

	found := 0
	for _, m := range statLine.FindAllStringSubmatch(res.Stderr, -1) {
		n, _ := strconv.Atoi(m[1])
		switch m[2] {
		case "captured":
			res.Captured = n
		case "received by filter":
			res.ReceivedByFilter = n
		case "dropped by kernel":
			res.DroppedByKernel = n
		}
		found++
	}
	pcap, err := netnstest.ReadPcapFile(c.path)
	if err != nil {
		return res, err
	}
	res.Pcap = pcap
	var errs []error
	if found != 3 {
		errs = append(errs, fmt.Errorf("tcpdump printed %d of its 3 counters", found))
	}
	if res.DroppedByKernel != 0 {
		errs = append(errs, fmt.Errorf("kernel dropped %d packets", res.DroppedByKernel))
	}
	if res.Captured != res.ReceivedByFilter || res.Captured != len(pcap.Packets) {
		errs = append(errs, fmt.Errorf("%d packets received by filter, %d captured, %d in the file",
			res.ReceivedByFilter, res.Captured, len(pcap.Packets)))
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("incomplete capture: %w\n%s", err, res.Stderr)
	}
	return res, nil
}

// waitStable returns once the size of the file at path has not changed for
// quiet, or after limit.
func waitStable(path string, quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	last := int64(-1)
	lastChange := time.Now()
	for time.Now().Before(deadline) {
		var size int64
		if fi, err := os.Stat(path); err == nil {
			size = fi.Size()
		}
		if size != last {
			last, lastChange = size, time.Now()
		} else if time.Since(lastChange) >= quiet {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}
