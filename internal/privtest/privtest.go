// Package privtest holds test helpers for tests that need privileges.
package privtest

import (
	"os"
	"testing"
)

// RequireRoot skips the test, saying why, unless it runs as root. BPF
// loading and network namespaces need CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON
// and CAP_SYS_ADMIN; CI runs the tests as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipped: needs root to load BPF programs and create network namespaces (run `sudo make test`)")
	}
}
