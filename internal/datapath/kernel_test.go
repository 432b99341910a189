//go:build linux

package datapath

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

func TestCheckFeaturesNamesTheOldestMissing(t *testing.T) {
	have := func() error { return nil }
	lacks := func() error { return fmt.Errorf("probe: %w", ebpf.ErrNotSupported) }
	denied := func() error { return errors.New("operation not permitted") }
	required := []kernelFeature{
		{"feature a", "5.8", have},
		{"feature b", "5.11", lacks},
		{"feature c", "5.12", lacks},
	}
	err := checkFeatures(required, "5.10.0-99-cloud-amd64")
	want := "xdpflow needs Linux " + MinKernel + " or newer: this kernel (Linux 5.10.0-99-cloud-amd64) lacks feature b, which came in Linux 5.11"
	if err == nil || err.Error() != want {
		t.Fatalf("checkFeatures = %v, want %q", err, want)
	}
	if err := checkFeatures([]kernelFeature{{"feature d", "5.13", denied}}, "6.1"); err != nil {
		t.Fatalf("a probe failing for another reason refused the kernel: %v", err)
	}
}

// TestKernelFloor loads the program on the running kernel: where it has
// every required feature the load goes on; where it lacks one (5.10 in the
// VM matrix, `make vmtest KERNEL=5.10`) Load fails with one line naming
// the kernel and the feature, never a verifier log.
func TestKernelFloor(t *testing.T) {
	privtest.RequireRoot(t)
	release := kernelRelease()
	missing := checkKernel()
	d, err := Load(testOptions())
	if err == nil {
		defer d.Close()
	}
	if missing == nil {
		if err != nil {
			t.Fatalf("Linux %s has every required feature but Load failed: %v", release, err)
		}
		t.Logf("Linux %s has every required feature", release)
		return
	}
	if err == nil {
		t.Fatalf("Load succeeded on Linux %s, which lacks a required feature: %v", release, missing)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, release) || !strings.Contains(msg, "lacks ") {
		t.Fatalf("Load on Linux %s: want one line naming the kernel and the missing feature, got:\n%s", release, msg)
	}
	t.Logf("Linux %s refused: %v", release, err)
}
