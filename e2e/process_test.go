//go:build linux

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/collectortest"
	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

const (
	// outputEnvVar, when set, makes every test log the output of the
	// processes it started, even when it passes.
	outputEnvVar = "XDPFLOW_E2E_OUTPUT"
	// processLifetime is the longest any process a test starts may live:
	// its context kills it then, whatever the test does.
	processLifetime = 4 * time.Minute
	// readyTimeout bounds the wait for a process to be ready.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds the wait for a process to exit after SIGTERM;
	// it is killed then.
	stopTimeout = 20 * time.Second
)

// requireCollector skips the test unless it runs as root with
// XDPFLOW_COLLECTOR naming a built collector, and returns its path.
func requireCollector(t *testing.T) string {
	t.Helper()
	privtest.RequireRoot(t)
	if os.Getenv(collectortest.EnvVar) == "" {
		t.Skipf("skipped: end-to-end tests run with `sudo make e2e`, which builds the collector and sets %s; "+
			"to run them directly, set %s to a built otelcol-xdpflow (`make collector` builds %s)",
			collectortest.EnvVar, collectortest.EnvVar, collectortest.DefaultPath)
	}
	return collectortest.Binary(t)
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is a command running inside a network namespace, started by
// startProcess. Its output is kept in memory.
type process struct {
	name   string
	cmd    *exec.Cmd
	cancel context.CancelFunc
	output syncBuffer    // stdout and stderr
	exited chan struct{} // closed when the process has been waited for
	err    error         // the Wait result, once exited is closed
	once   sync.Once
}

// startProcess starts name with args in namespace ns. The process gets
// SIGKILL if the test binary dies (parent-death signal) and is killed after
// processLifetime at the latest. When the test ends it is stopped by its
// PID: SIGTERM, then SIGKILL after stopTimeout. Its output is logged if
// the test failed or XDPFLOW_E2E_OUTPUT is set.
func startProcess(t *testing.T, label, ns, name string, args ...string) *process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), processLifetime)
	p := &process{name: label, cancel: cancel, exited: make(chan struct{})}
	p.cmd = netnsCommand(ctx, ns, name, args...)
	p.cmd.Stdout = &p.output
	p.cmd.Stderr = &p.output
	p.cmd.Cancel = func() error { return p.cmd.Process.Kill() }
	err := startTiedToTest(p.cmd, func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	})
	if err != nil {
		cancel()
		t.Fatalf("start %s: %s: %v", label, p.cmd, err)
	}
	t.Logf("started %s, pid %d: %s", label, p.cmd.Process.Pid, p.cmd)
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("stopping %s: %v", label, err)
		}
		if t.Failed() || os.Getenv(outputEnvVar) != "" {
			t.Logf("output of %s (pid %d):\n%s", label, p.cmd.Process.Pid, p.output.String())
		}
	})
	return p
}

// startTiedToTest starts cmd with a parent-death signal, SIGKILL, so that
// it does not outlive the test binary. The signal fires when the thread
// that forked the process exits, so cmd is started on a goroutine locked
// to its thread, which then runs wait: wait must wait for cmd. It returns
// cmd.Start's error.
func startTiedToTest(cmd *exec.Cmd, wait func()) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		wait()
	}()
	return <-started
}

// pid returns the process's PID.
func (p *process) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM to the process by its PID and waits for it to exit,
// killing it after stopTimeout. It returns an error if the process had to
// be killed or exited with an error; a second call returns nil.
func (p *process) stop() error {
	var err error
	p.once.Do(func() {
		defer p.cancel()
		select {
		case <-p.exited:
			err = fmt.Errorf("pid %d exited before it was stopped: %v", p.pid(), p.err)
			return
		default:
		}
		if e := p.cmd.Process.Signal(syscall.SIGTERM); e != nil && !errors.Is(e, os.ErrProcessDone) {
			err = fmt.Errorf("SIGTERM pid %d: %w", p.pid(), e)
		}
		select {
		case <-p.exited:
			if p.err != nil {
				err = errors.Join(err, fmt.Errorf("pid %d exited after SIGTERM: %w", p.pid(), p.err))
			}
		case <-time.After(stopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.exited
			err = errors.Join(err, fmt.Errorf("pid %d still running %v after SIGTERM: killed", p.pid(), stopTimeout))
		}
	})
	return err
}

// waitOutput waits until the process's output contains s. It fails the
// test if the process exits or timeout passes first.
func (p *process) waitOutput(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(p.output.String(), s) {
			return
		}
		select {
		case <-p.exited:
			if strings.Contains(p.output.String(), s) {
				return
			}
			t.Fatalf("%s (pid %d) exited (%v) before printing %q:\n%s", p.name, p.pid(), p.err, s, p.output.String())
		case <-deadline:
			t.Fatalf("%s (pid %d) did not print %q within %v:\n%s", p.name, p.pid(), s, timeout, p.output.String())
		case <-tick.C:
		}
	}
}

// nsHTTPClient returns an HTTP client whose connections are made from
// inside namespace ns: each dial runs on a thread switched into it, so the
// loopback addresses it reaches are those of ns.
func nsHTTPClient(ns string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := netnstest.Do(ns, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil},
	}
}
