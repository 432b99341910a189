//go:build linux

package e2e

// The collector configurations the tests write: one metrics pipeline
// through the components of a collectorConfig, and the xdpflow receiver
// on the receiver veth.

import (
	"fmt"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// component is an entry of a configuration's receivers, processors or
// exporters: its id and its settings (YAML, not indented).
type component struct {
	ID       string
	Settings string
}

// collectorConfig is a collector configuration with one metrics pipeline
// through its components, in their order.
type collectorConfig struct {
	Receivers, Processors, Exporters []component
	// DefaultTelemetry keeps the collector's own telemetry (its metrics
	// endpoint); else service.telemetry.metrics.level is none.
	DefaultTelemetry bool
}

var configTemplate = template.Must(template.New("config").Funcs(template.FuncMap{
	"indent": func(n int, s string) string {
		pad := strings.Repeat(" ", n)
		return pad + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n"+pad)
	},
	"ids": func(cs []component) string {
		var ids []string
		for _, c := range cs {
			ids = append(ids, c.ID)
		}
		return strings.Join(ids, ", ")
	},
}).Parse(`
{{- define "section"}}
{{- range .}}
  {{.ID}}:
{{indent 4 .Settings}}
{{- end}}
{{- end -}}
receivers:{{template "section" .Receivers}}
{{- with .Processors}}
processors:{{template "section" .}}
{{- end}}
exporters:{{template "section" .Exporters}}
service:
{{- if not .DefaultTelemetry}}
  telemetry:
    metrics:
      level: none
{{- end}}
  pipelines:
    metrics:
      receivers: [{{ids .Receivers}}]
{{- with .Processors}}
      processors: [{{ids .}}]
{{- end}}
      exporters: [{{ids .Exporters}}]
`))

// String returns the configuration as YAML.
func (c collectorConfig) String() string {
	var b strings.Builder
	if err := configTemplate.Execute(&b, c); err != nil {
		panic(err) // the template only formats strings
	}
	return b.String()
}

// xdpflowSettings are the xdpflow receiver's settings the tests vary; a
// zero one is left out (the receiver's default).
type xdpflowSettings struct {
	Ports                  []int
	CollectionInterval     time.Duration
	MinSnapshotInterval    time.Duration
	NewConnectionsPerEvent int
	IdleTimeout            time.Duration
	StateDirectory         string
	MaxConnections         int
	// More are further settings, YAML.
	More string
}

// xdpflowReceiver is the xdpflow receiver on the receiver veth, in native
// mode (packet counts are exact), with settings s.
func xdpflowReceiver(s xdpflowSettings) component {
	var b strings.Builder
	fmt.Fprintf(&b, "interfaces: [%s]\nattach_mode: native\n", netnstest.ReceiverIface)
	setting := func(key string, value any, set bool) {
		if set {
			fmt.Fprintf(&b, "%s: %v\n", key, value)
		}
	}
	setting("ports", yamlList(s.Ports), len(s.Ports) > 0)
	setting("collection_interval", s.CollectionInterval, s.CollectionInterval != 0)
	setting("min_snapshot_interval", s.MinSnapshotInterval, s.MinSnapshotInterval != 0)
	setting("new_connections_per_event", s.NewConnectionsPerEvent, s.NewConnectionsPerEvent != 0)
	setting("idle_timeout", s.IdleTimeout, s.IdleTimeout != 0)
	setting("state_directory", s.StateDirectory, s.StateDirectory != "")
	setting("max_connections", s.MaxConnections, s.MaxConnections != 0)
	b.WriteString(s.More)
	return component{ID: "xdpflow", Settings: b.String()}
}

// yamlList returns ports as a YAML flow sequence.
func yamlList(ports []int) string {
	var s []string
	for _, p := range ports {
		s = append(s, strconv.Itoa(p))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// batchProcessor batches for at most 200 ms.
var batchProcessor = component{ID: "batch", Settings: "timeout: 200ms"}

// otlpHTTPExporter sends over OTLP/HTTP to addr, with the exporter's
// defaults.
func otlpHTTPExporter(addr string) component {
	return component{ID: "otlp_http", Settings: "endpoint: http://" + addr}
}

// promRemoteWriteExporter sends to the test's Prometheus, at promAddr.
var promRemoteWriteExporter = component{
	ID:       "prometheus_remote_write",
	Settings: "http:\n  endpoint: http://" + promAddr + "/api/v1/write",
}

// debugFileExporter writes the detailed output of the debug exporter
// (what parseDebug reads) to the file at path.
func debugFileExporter(path string) component {
	return component{ID: "debug", Settings: fmt.Sprintf("verbosity: detailed\nuse_internal_logger: false\noutput_paths: [%q]", path)}
}
