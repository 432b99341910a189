//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// The backend-outage tests: the collector counts 20,000 connections and
// exports them every 2 s over OTLP/HTTP to a port where nothing listens for
// a minute, then a backend starts there (docs/guarantees.md, "Bounded
// resources").

const (
	// backendAddr is where the exporter sends, on loopback in the
	// receiver namespace: nothing listens there until the outage ends.
	backendAddr = "127.0.0.1:14318"
	// outageConns is the number of connections counted.
	outageConns = 20_000
	// outageDuration is how long the collector's RSS is watched while
	// the backend is down.
	outageDuration = 60 * time.Second
	// rssEvery is how often the RSS is sampled.
	rssEvery = 2 * time.Second
	// touchEvery is how often, during the outage, every touchStride-th
	// connection gets one more datagram, so that it stays in the flow
	// table while the others are evicted after outageIdleTimeout.
	touchEvery  = 10 * time.Second
	touchStride = 10
	// outageIdleTimeout is the receiver's idle_timeout: the connections
	// that get no datagram during the outage are evicted in its middle,
	// so their final counts must survive the rest of it.
	outageIdleTimeout = 30 * time.Second
	// rssGrowthLimit is the largest RSS growth allowed during the
	// outage with the shipped (synchronous) export.
	rssGrowthLimit = 50 << 20
	// firstSnapshotTimeout bounds the wait for the first snapshot that
	// holds every connection to be refused.
	firstSnapshotTimeout = 45 * time.Second
	// recoveryTimeout bounds the wait, once the backend is up, for every
	// connection's final values.
	recoveryTimeout = 45 * time.Second
	// queueMeasurementEnvVar, when set, runs
	// TestBackendDownDefaultQueueMemory.
	queueMeasurementEnvVar = "XDPFLOW_E2E_QUEUE_MEASUREMENT"
)

// syncOTLPHTTPExporter is configured like the exporter of
// examples/otlp-grpc.yaml (synchronous, bounded retries), with retries
// scaled down so that a refused snapshot takes 5 s, not a minute
// (max_elapsed_time may not be below max_interval).
var syncOTLPHTTPExporter = component{ID: "otlp_http", Settings: "endpoint: http://" + backendAddr + `
sending_queue:
  enabled: false
retry_on_failure:
  initial_interval: 1s
  max_interval: 5s
  max_elapsed_time: 5s`}

// queuedOTLPHTTPExporter has the exporter's defaults: a sending queue of
// 1000 requests and retries for 5 minutes.
var queuedOTLPHTTPExporter = otlpHTTPExporter(backendAddr)

// outageConfig is the collector's configuration: the xdpflow receiver on
// the receiver veth, every 2 s, the examples' memory_limiter, and exporter.
func outageConfig(exporter component) string {
	return collectorConfig{
		Receivers: []component{xdpflowReceiver(xdpflowSettings{
			Ports: []int{port}, CollectionInterval: 2 * time.Second, IdleTimeout: outageIdleTimeout,
		})},
		Processors: []component{{ID: "memory_limiter", Settings: `check_interval: 1s
limit_percentage: 80
spike_limit_percentage: 20`}},
		Exporters: []component{exporter},
	}.String()
}

// refusedFullSnapshot is in the receiver's log line for a refused snapshot
// that holds every connection.
var refusedFullSnapshot = fmt.Sprintf(`"connections": %d`, outageConns)

// TestBackendDownBoundsMemory checks that a backend outage does not grow
// the collector's memory with the shipped, synchronous export, and loses
// no count: 20,000 UDP connections, snapshots every 2 s to an OTLP/HTTP
// port where nothing listens for 60 s, during which 2,000 connections get
// more datagrams and the other 18,000 are evicted. The RSS may grow by
// less than 50 MB over its value after the first snapshot of every
// connection; then a backend starts and must receive every connection's
// packets and bytes as sent.
func TestBackendDownBoundsMemory(t *testing.T) {
	bin := requireCollector(t)
	pair := netnstest.New(t)
	o := startOutage(t, bin, pair, syncOTLPHTTPExporter)
	o.collector.waitOutputAfter(t, o.trafficEnd, refusedFullSnapshot, firstSnapshotTimeout)
	o.watch(t)
	if !strings.Contains(o.collector.output.String(), "connection refused") {
		t.Errorf("the exporter never logged \"connection refused\": was the backend down?")
	}
	refused := strings.Count(o.collector.output.String(), refusedFullSnapshot)
	t.Logf("snapshots of every connection refused so far: %d", refused)
	if growth := o.growth(); growth >= rssGrowthLimit {
		t.Errorf("RSS grew by %.1f MB during the outage, limit %d MB", mb(growth), rssGrowthLimit>>20)
	}

	began := time.Now()
	backend := startOTLPHTTPBackend(t, pair.Receiver, backendAddr)
	fm := waitLatest(t, backend.read, o.flood.sent, recoveryTimeout)
	t.Logf("backend up; %v later it had %s", time.Since(began).Round(time.Millisecond), backend)
	checkAllFlows(t, fm, o.flood.sent)
	tableSize, ok := backend.latestValue("xdpflow.connections")
	if !ok {
		t.Fatal("the backend received no xdpflow.connections")
	}
	t.Logf("the flow table held %d connections at the last snapshot: %d were evicted during the outage, "+
		"their final counts were exported after it", tableSize, outageConns-tableSize)
	if tableSize >= outageConns {
		t.Errorf("xdpflow.connections = %d: no connection was evicted during the outage", tableSize)
	}
}

// TestBackendDownDefaultQueueMemory measures, for the record, what the
// same outage does with the exporter's default sending queue: it logs the
// RSS growth and asserts nothing. It runs only when
// XDPFLOW_E2E_QUEUE_MEASUREMENT is set (it takes 80 s more).
func TestBackendDownDefaultQueueMemory(t *testing.T) {
	if os.Getenv(queueMeasurementEnvVar) == "" {
		t.Skipf("skipped: a measurement, not a check; set %s=1 to run it", queueMeasurementEnvVar)
	}
	bin := requireCollector(t)
	pair := netnstest.New(t)
	o := startOutage(t, bin, pair, queuedOTLPHTTPExporter)
	// The queue takes every snapshot at once: after a collection
	// interval the queue holds one of every connection, and a consumer
	// fails to send a request.
	time.Sleep(2 * time.Second)
	o.collector.waitOutputAfter(t, time.Now(), "Exporting failed", firstSnapshotTimeout)
	o.watch(t)
	t.Logf("with the default sending queue the RSS grew by %.1f MB in %v (%.1f MB/s)",
		mb(o.growth()), outageDuration, mb(o.growth())/outageDuration.Seconds())
}

// outage is a collector exporting to a backend that is down, and the
// connections it counts.
type outage struct {
	collector  *process
	flood      *connFlood
	trafficEnd time.Time
	baseline   uint64   // RSS when watch began, bytes
	samples    []uint64 // RSS every rssEvery during watch, bytes
}

// startOutage starts the collector with exporter in pair's receiver
// namespace and sends 1 to 4 datagrams on each of outageConns connections.
func startOutage(t *testing.T, bin string, pair *netnstest.Pair, exporter component) *outage {
	t.Helper()
	o := &outage{}
	o.collector = startCollector(t, bin, "agent", pair.Receiver, outageConfig(exporter))
	requireNativeAttach(t, o.collector)
	o.flood = newConnFlood(t, pair)
	all := make([]int, outageConns)
	for i := range all {
		all[i] = i
	}
	began := time.Now()
	o.flood.send(t, all, func(i int) int { return 1 + i%4 })
	o.trafficEnd = time.Now()
	t.Logf("sent %d datagrams on %d connections in %v", o.flood.frames, len(o.flood.sent),
		o.trafficEnd.Sub(began).Round(time.Millisecond))
	return o
}

// watch samples the collector's RSS every rssEvery for outageDuration,
// from now, and sends one more datagram on every touchStride-th
// connection every touchEvery. It logs the samples.
func (o *outage) watch(t *testing.T) {
	t.Helper()
	var touched []int
	for i := 0; i < outageConns; i += touchStride {
		touched = append(touched, i)
	}
	o.baseline = rss(t, o.collector)
	began := time.Now()
	var log strings.Builder
	fmt.Fprintf(&log, "collector RSS with the backend down, after the first snapshot of every connection: %.1f MB\n", mb(o.baseline))
	for k := 1; k <= int(outageDuration/rssEvery); k++ {
		if (time.Duration(k-1)*rssEvery)%touchEvery == 0 {
			o.flood.send(t, touched, func(int) int { return 1 })
		}
		time.Sleep(time.Until(began.Add(time.Duration(k) * rssEvery)))
		s := rss(t, o.collector)
		o.samples = append(o.samples, s)
		fmt.Fprintf(&log, "  %3ds  %7.1f MB  %+6.1f MB\n", k*int(rssEvery/time.Second), mb(s), mb(s)-mb(o.baseline))
	}
	fmt.Fprintf(&log, "largest growth %+.1f MB", mb(o.growth()))
	t.Log(log.String())
	o.flood.checkReceived(t)
}

// growth is the largest RSS sample minus the baseline, or 0.
func (o *outage) growth() uint64 {
	var top uint64
	for _, s := range o.samples {
		top = max(top, s)
	}
	if top < o.baseline {
		return 0
	}
	return top - o.baseline
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

// rss returns the resident set size of the process p (VmRSS in
// /proc/PID/status), failing the test if p has exited.
func rss(t *testing.T, p *process) uint64 {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("%s (pid %d) exited: %v", p.name, p.pid(), p.err)
	default:
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "VmRSS:" && f[2] == "kB" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status: %q: %v", p.pid(), sc.Text(), err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no VmRSS line:\n%s", p.pid(), data)
	return 0
}

// waitOutputAfter waits until a line the process wrote after since (by
// its log timestamp) contains s. It fails the test if the process exits
// or timeout passes first.
func (p *process) waitOutputAfter(t *testing.T, since time.Time, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range strings.Split(p.output.String(), "\n") {
			if !strings.Contains(line, s) {
				continue
			}
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if at, err := time.Parse(time.RFC3339Nano, f[0]); err == nil && !at.Before(since) {
				return
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("%s (pid %d) exited (%v) before logging %q:\n%s", p.name, p.pid(), p.err, s, p.output.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) did not log %q after %s within %v:\n%s", p.name, p.pid(), s,
				since.Format(time.RFC3339Nano), timeout, p.output.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
