// Package examples holds example collector configurations; its test checks
// that every one of them is accepted by the otelcol-xdpflow distribution.
package examples

import (
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/xdpflow/xdpflowreceiver/internal/collectortest"
)

// wantExamples are the configurations the README documents; more may be
// added, none of these may go away.
var wantExamples = []string{
	"default.yaml", "otlp-grpc.yaml", "prometheus-remote-write.yaml", "multi-interface.yaml",
	"busy-server.yaml", "kubernetes-node.yaml",
}

// exampleEnv are the environment variables an example needs, set as its
// deployment would set them.
var exampleEnv = map[string]map[string]string{
	// deploy/kubernetes fills it from spec.nodeName; the resource
	// processor refuses an empty value.
	"kubernetes-node.yaml": {"K8S_NODE_NAME": "node-1"},
}

func exampleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range files {
		have[f] = true
	}
	for _, f := range wantExamples {
		if !have[f] {
			t.Errorf("example %s is missing", f)
		}
	}
	return files
}

// TestExamplesTelemetryOff checks, without the collector, that every
// example turns the collector's own metrics off, so that nothing listens
// on a port unless the example says so.
func TestExamplesTelemetryOff(t *testing.T) {
	for _, f := range exampleFiles(t) {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var cfg struct {
				Service struct {
					Telemetry struct {
						Metrics struct {
							Level string `yaml:"level"`
						} `yaml:"metrics"`
					} `yaml:"telemetry"`
				} `yaml:"service"`
			}
			if err := yaml.Unmarshal(data, &cfg); err != nil {
				t.Fatalf("parse %s: %v", f, err)
			}
			if got := cfg.Service.Telemetry.Metrics.Level; got != "none" {
				t.Errorf("%s: service.telemetry.metrics.level is %q, want none", f, got)
			}
		})
	}
}

// TestExamplesValidate runs `otelcol-xdpflow validate` on every example:
// component names exist in this build and every configuration, the
// receiver's included, passes validation. Validation does not attach
// anything, so neither root nor the interfaces named are needed.
func TestExamplesValidate(t *testing.T) {
	bin := collectortest.Binary(t)
	for _, f := range exampleFiles(t) {
		t.Run(f, func(t *testing.T) {
			for k, v := range exampleEnv[f] {
				t.Setenv(k, v)
			}
			path, err := filepath.Abs(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := collectortest.Validate(bin, path); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("otlp-grpc.yaml with OTLP_ENDPOINT", func(t *testing.T) {
		t.Setenv("OTLP_ENDPOINT", "gateway.example:4317")
		path, err := filepath.Abs("otlp-grpc.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := collectortest.Validate(bin, path); err != nil {
			t.Error(err)
		}
	})
}
