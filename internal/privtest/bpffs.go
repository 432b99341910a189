//go:build linux

package privtest

import (
	"testing"

	"golang.org/x/sys/unix"
)

// MountBPFFS mounts a BPF file system of the test's own on a temporary
// directory and returns it; it is unmounted, with whatever is pinned in
// it, when the test ends. The caller must have called RequireRoot.
func MountBPFFS(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	MountBPFFSAt(tb, dir)
	return dir
}

// MountBPFFSAt mounts a BPF file system (mode 0700, owned by root) on the
// existing directory dir, e.g. one other users can reach, and unmounts
// it, with whatever is pinned in it, when the test ends. The caller must
// have called RequireRoot.
func MountBPFFSAt(tb testing.TB, dir string) {
	tb.Helper()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		tb.Fatalf("mount a BPF file system on %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
		}
	})
}
