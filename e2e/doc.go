// Package e2e holds the end-to-end tests of the otelcol-xdpflow
// distribution: the collector binary that `make collector` builds runs
// inside a network namespace of a two-namespace test network
// (internal/netnstest), real UDP and TCP traffic crosses the veth pair, and
// the counts that reach a second collector (over OTLP) or Prometheus (over
// remote write) are compared with a tcpdump capture of the same traffic and
// with the sender's own counts. TestGroupedSeriesEqualCapture configures the
// receiver to group connections in the kernel (no source port, source
// addresses truncated to prefixes), sends from several source addresses
// (added to the sender veth with ip), and compares what reaches an OTLP/HTTP
// backend in the test and Prometheus with the capture summed the same way.
// TestBothDirectionsEqualTcpdump counts both directions (directions:
// [receive, transmit]) of UDP echoes and TCP conversations against tcpdump
// on both ends of the veth, through an OTLP/HTTP backend and Prometheus,
// and runs README's query joining the two directions on Prometheus.
// TestBackendDownBoundsMemory watches the collector's memory through a
// one-minute backend outage with 20,000 connections, then checks that a
// backend in the test receives every count. The state_directory tests
// (state_test.go) keep the flow table on a BPF file system the test mounts:
// TestSIGKILLRestartWithStateKeepsCounts kills the collector with SIGKILL
// under steady traffic and starts another, and the final counts must equal
// the capture of the whole run, with one start time per connection;
// TestStateAcrossConfigurationChanges restarts it with another port set
// (taken over), attribute set and max_connections (new tables);
// TestLeastPrivilegeStateDirectory does it as nobody with the three
// capabilities, and TestSIGKILLRestartWithStateBothDirections with
// directions [receive, transmit]. Each ends by removing the pins, which
// detaches the program.
//
// Run them with `sudo make e2e`, which builds the collector and passes its
// path in XDPFLOW_COLLECTOR. They skip, saying why, when not run as root,
// when XDPFLOW_COLLECTOR is unset (so `make test` does not run them twice)
// or when the binary does not exist. With XDPFLOW_E2E_OUTPUT=1 they log the
// output of every process they start, even when they pass; with
// XDPFLOW_E2E_QUEUE_MEASUREMENT=1 TestBackendDownDefaultQueueMemory also
// measures a backend outage with the exporter's default sending queue.
// Unlike `make test`, they need commands: ip (iproute2; processes start in a
// namespace through `ip netns exec`), tcpdump (the independent witness of
// the traffic) and, for the remote-write test, Debian's prometheus package;
// the least-privilege and exposure tests also use util-linux's setpriv and
// unshare, ss, and libcap2-bin's setcap.
//
// Every process a test starts (collectors, Prometheus, tcpdump) is stopped
// by its PID when the test ends, and is killed by the kernel if the test
// binary dies first; the namespaces are removed by netnstest. Traffic only
// flows inside the namespaces (198.51.100.0/24, fd00:db8::/64) and over
// their loopback interfaces.
package e2e
