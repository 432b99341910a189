//go:build linux

package e2e

// The end-to-end tests start processes (collectors, tcpdump, ss) inside
// the namespaces of a netnstest.Pair through `ip netns exec`, which also
// mounts the namespace's own /sys for them.

import (
	"context"
	"fmt"
	"os/exec"
	"time"
)

// netnsRunTimeout bounds every command netnsRun runs.
const netnsRunTimeout = 30 * time.Second

// netnsCommand returns a command that runs name with args inside namespace
// ns through `ip netns exec`, which execs it (the process's PID is name's
// PID). The caller starts and waits for it; ctx kills it when done.
func netnsCommand(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// netnsRun runs name with args inside namespace ns, waits at most 30
// seconds and returns its combined output. The error includes the command
// line and the output.
func netnsRun(ns, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), netnsRunTimeout)
	defer cancel()
	cmd := netnsCommand(ctx, ns, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", cmd, err, out)
	}
	return string(out), nil
}
