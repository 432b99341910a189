// Package collectortest finds and runs the otelcol-xdpflow distribution that
// `make collector` builds, for tests of the example configurations, the
// deployment manifests and the end-to-end tests.
package collectortest

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// EnvVar names the environment variable that holds the path of the
// collector binary. `make e2e` sets it to the binary it has just built.
const EnvVar = "XDPFLOW_COLLECTOR"

// DefaultPath is where `make collector` writes the binary, relative to the
// repository root.
const DefaultPath = "build/otelcol-xdpflow/otelcol-xdpflow"

// validateTimeout bounds one `otelcol-xdpflow validate` run.
const validateTimeout = 60 * time.Second

// RepoRoot returns the absolute path of the repository root (the directory
// holding go.mod), found from this source file's location.
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("collectortest: cannot locate source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Binary returns the path of the collector binary: $XDPFLOW_COLLECTOR if
// set, otherwise DefaultPath under the repository root. It skips the test,
// saying how to build the binary, when there is no executable file there.
func Binary(tb testing.TB) string {
	tb.Helper()
	path, fromEnv := os.Getenv(EnvVar), true
	if path == "" {
		path, fromEnv = filepath.Join(RepoRoot(), DefaultPath), false
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		path = abs
	}
	fi, err := os.Stat(path)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		src := "default path"
		if fromEnv {
			src = EnvVar
		}
		tb.Skipf("skipped: collector binary %s (%s) not found or not executable: build it with `make collector` "+
			"(`make e2e` builds it and runs the end-to-end tests with it)", path, src)
	}
	if newer := newerSource(fi.ModTime()); !fromEnv && newer != "" {
		tb.Skipf("skipped: collector binary %s is older than %s: rebuild it with `make collector` "+
			"(`make e2e` builds it and runs the end-to-end tests with it)", path, newer)
	}
	return path
}

// newerSource returns a Go source file or go.mod of the receiver's module
// changed after t, or "" if there is none: a binary older than its sources
// would test code that is not there any more.
func newerSource(t time.Time) string {
	root := RepoRoot()
	var newer string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || newer != "" {
			return filepath.SkipDir
		}
		if d.IsDir() && (d.Name() == "build" || d.Name() == ".git" || strings.HasPrefix(d.Name(), "_")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".go") || d.Name() == "go.mod") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		if info, err := d.Info(); err == nil && info.ModTime().After(t) {
			newer, _ = filepath.Rel(root, path)
		}
		return nil
	})
	return newer
}

// Validate runs `bin validate --config config` and returns an error holding
// the command's output when it fails.
func Validate(bin, config string) error {
	ctx, cancel := context.WithTimeout(context.Background(), validateTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "validate", "--config", config)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", cmd, err, out)
	}
	return nil
}
