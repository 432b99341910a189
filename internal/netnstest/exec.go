//go:build linux

package netnstest

import (
	"context"
	"fmt"
	"os/exec"
	"time"
)

// commandTimeout bounds every command Run runs.
const commandTimeout = 30 * time.Second

// Command returns a command that runs name with args inside namespace ns
// through `ip netns exec`, which execs it (the process's PID is name's
// PID). The caller starts and waits for it; ctx kills it when done.
func Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Run runs name with args inside namespace ns, waits at most 30 seconds
// and returns its combined output. The error includes the command line and
// the output.
func Run(ns, name string, args ...string) (string, error) {
	return run("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// run runs a command with commandTimeout and returns its combined output.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", cmd, err, out)
	}
	return string(out), nil
}
