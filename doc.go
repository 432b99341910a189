// Package xdpflowreceiver is an OpenTelemetry Collector receiver that
// attaches an XDP program to network interfaces and exports per-connection
// packet and byte counts of the traffic arriving at this host as OTLP
// cumulative sums.
package xdpflowreceiver

// metadata.yaml describes the component, its metrics and its own telemetry;
// mdatagen (pinned in internal/tools) generates internal/metadata,
// documentation.md and the generated_*_test.go files from it.
//go:generate sh internal/tools/mdatagen.sh
