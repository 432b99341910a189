package datapath

import (
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

// TestLoadWithoutPrivilege checks the error a user without capabilities
// gets; it runs only as non-root.
func TestLoadWithoutPrivilege(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("skipped: checks the error a non-root user gets; run as a user without capabilities")
	}
	d, err := Load(DefaultOptions())
	if err == nil {
		d.Close()
		t.Fatal("Load succeeded without privileges")
	}
	t.Logf("error as a user without capabilities: %v", err)
	if !strings.Contains(err.Error(), "missing CAP_BPF") {
		t.Errorf("error %q does not name the missing capabilities", err)
	}
}
