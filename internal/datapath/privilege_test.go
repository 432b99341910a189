//go:build linux

package datapath

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPrivilegeHint(t *testing.T) {
	if h := privilegeHint(fmt.Errorf("x: %w", unix.ENOENT)); h != "" {
		t.Errorf("hint for ENOENT: %q, want none", h)
	}
	h := privilegeHint(fmt.Errorf("load: %w", unix.EPERM))
	if !strings.Contains(h, "CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON") {
		t.Errorf("hint %q does not name the capabilities to grant", h)
	}
	if os.Geteuid() != 0 && !strings.Contains(h, "missing CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON") {
		t.Errorf("as a user without capabilities, hint %q does not name the missing ones", h)
	}
}

// TestLoadWithoutPrivilege checks that a process lacking any of the
// required capabilities gets an error naming those it lacks. It runs only
// as non-root, e.g. with some capabilities granted:
//
//	setpriv --reuid nobody --regid nogroup --clear-groups \
//	  --inh-caps +bpf,+net_admin --ambient-caps +bpf,+net_admin ./datapath.test
func TestLoadWithoutPrivilege(t *testing.T) {
	missing := missingCapabilities()
	if len(missing) == 0 {
		t.Skip("skipped: checks the error a process without CAP_BPF, CAP_NET_ADMIN or CAP_PERFMON gets; run as a user without them")
	}
	d, err := Load(DefaultOptions())
	if err == nil {
		d.Close()
		t.Fatalf("Load succeeded while lacking %v", missing)
	}
	t.Logf("error lacking %v: %v", missing, err)
	if !strings.Contains(err.Error(), strings.Join(missing, ", ")) {
		t.Errorf("error %q does not name the missing capabilities %v", err, missing)
	}
}

// TestPrivilegeErrorLeadsWithTheCause checks that the missing capabilities
// come before what the BPF library appended to a permission error.
func TestPrivilegeErrorLeadsWithTheCause(t *testing.T) {
	cause := fmt.Errorf("map create: %w (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", unix.EPERM)
	err := privilegeError("load xdpflow program", cause)
	want := "load xdpflow program: " + privilegeHint(unix.EPERM) + ": " + cause.Error()
	if err.Error() != want || !errors.Is(err, unix.EPERM) {
		t.Errorf("privilegeError = %q, want %q wrapping EPERM", err, want)
	}
	if err := privilegeError("load xdpflow program", unix.ENOENT); err.Error() != "load xdpflow program: no such file or directory" {
		t.Errorf("privilegeError for ENOENT = %q, want no hint", err)
	}
}
