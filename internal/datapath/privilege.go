//go:build linux

package datapath

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// requiredCaps are the capabilities the datapath needs: CAP_BPF to create
// maps and load programs, CAP_NET_ADMIN to load and attach XDP programs,
// CAP_PERFMON for the verifier to accept the program as written. The
// egress program (Options.Transmit) needs nothing more: CAP_NET_ADMIN
// attaches it through TCX or tc (a clsact qdisc and a filter), CAP_BPF
// and CAP_PERFMON load it.
var requiredCaps = []struct {
	name string
	bit  uint
}{
	{"CAP_BPF", unix.CAP_BPF},
	{"CAP_NET_ADMIN", unix.CAP_NET_ADMIN},
	{"CAP_PERFMON", unix.CAP_PERFMON},
}

// privilegeHint explains a permission error, naming the required
// capabilities this process lacks; it is empty for other errors.
func privilegeHint(err error) string {
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
		return ""
	}
	missing := missingCapabilities()
	if len(missing) == 0 {
		return "permission denied although CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON seem granted: check kernel.unprivileged_bpf_disabled, LSM policies (SELinux, AppArmor) and seccomp"
	}
	return fmt.Sprintf("missing %s: run as root or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON", strings.Join(missing, ", "))
}

// privilegeError wraps err as "what: err", and for a permission error as
// "what: <missing capabilities>: err": the cause comes first, before what
// the BPF library appended to err (its "MEMLOCK may be too low" guess is
// wrong when a capability is missing).
func privilegeError(what string, err error) error {
	if h := privilegeHint(err); h != "" {
		return fmt.Errorf("%s: %s: %w", what, h, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// missingCapabilities returns the names of the required capabilities that
// are not in this thread's effective set. CAP_SYS_ADMIN stands in for all
// of them.
func missingCapabilities() []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil
	}
	has := func(bit uint) bool { return data[bit/32].Effective&(1<<(bit%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return nil
	}
	var missing []string
	for _, c := range requiredCaps {
		if !has(c.bit) {
			missing = append(missing, c.name)
		}
	}
	return missing
}
