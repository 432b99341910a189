//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

const (
	// sinkEndpoint is where collector B's OTLP/gRPC receiver listens,
	// on loopback inside the receiver namespace.
	sinkEndpoint = "127.0.0.1:14317"
	// promAddr is where Prometheus listens, on loopback inside the
	// receiver namespace.
	promAddr = "127.0.0.1:19090"
	// valuesTimeout bounds the wait for the final values to arrive.
	valuesTimeout = 30 * time.Second
)

// agentConfig is collector A: the xdpflow receiver with settings s,
// counting port 8080, then a batch processor and the exporters, all in
// one pipeline.
func agentConfig(s xdpflowSettings, exporters ...component) string {
	s.Ports = []int{port}
	return collectorConfig{
		Receivers:  []component{xdpflowReceiver(s)},
		Processors: []component{batchProcessor},
		Exporters:  exporters,
	}.String()
}

// otlpExporter sends to collector B.
var otlpExporter = component{ID: "otlp_grpc", Settings: "endpoint: " + sinkEndpoint + "\ntls:\n  insecure: true"}

// sink is collector B: an OTLP receiver whose metrics the debug exporter
// writes, in detailed verbosity, to a file the test reads.
type sink struct {
	proc *process
	debugFile
}

func startSink(t *testing.T, bin, ns string) *sink {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sink-debug.txt")
	cfg := collectorConfig{
		Receivers: []component{{ID: "otlp", Settings: "protocols:\n  grpc:\n    endpoint: " + sinkEndpoint}},
		Exporters: []component{debugFileExporter(path)},
	}.String()
	return &sink{proc: startCollector(t, bin, "B", ns, cfg), debugFile: debugFile(path)}
}

// captureAndSend captures the receiver veth's inbound packets to port 8080
// while sendTraffic runs, then checks the capture against the sender:
// exactly the connections sent, UDP with the sender's counts.
func captureAndSend(t *testing.T, pair *netnstest.Pair, afterTraffic func()) (*traffic, map[conn]counts) {
	t.Helper()
	capture := capturePort(t, pair)
	tr := sendTraffic(t, pair)
	if afterTraffic != nil {
		afterTraffic()
	}
	captured := stopCapture(t, capture, tr)
	for _, c := range tr.conns {
		if c.Transport == "tcp" && (captured[c].Packets < 50 || captured[c].Bytes < 100<<10) {
			t.Errorf("%s: capture holds only %s", c, captured[c])
		}
	}
	return tr, captured
}

// TestOTLPExport runs collector A (xdpflow -> OTLP/gRPC) and collector B
// (OTLP receiver -> debug exporter) in the receiver namespace, sends UDP
// and TCP over IPv4 and IPv6, and checks that B's final cumulative values
// equal the capture, and for UDP the sender's counts.
func TestOTLPExport(t *testing.T) {
	bin := requireCollector(t)
	pair := netnstest.New(t)
	b := startSink(t, bin, pair.Receiver)
	a := startCollector(t, bin, "A", pair.Receiver, agentConfig(xdpflowSettings{
		CollectionInterval: time.Second, MinSnapshotInterval: time.Second, NewConnectionsPerEvent: 5,
	}, otlpExporter))
	requireNativeAttach(t, a)
	checkListeners(t, pair.Receiver, sinkEndpoint)

	tr, captured := captureAndSend(t, pair, nil)
	fm := waitLatest(t, b.read, captured, valuesTimeout)
	checkLatest(t, "collector B", fm, captured, tr.sent)
	t.Logf("final values:\n%s", table(tr.conns, []string{"sender", "tcpdump", "collector B"}, tr.sent, captured, fm.values))
}

// TestShutdownFlush checks that the snapshot taken at shutdown reaches
// collector B: with a one-minute collection interval and no
// new-connection snapshots, collector A exports nothing until it gets
// SIGTERM right after the traffic.
func TestShutdownFlush(t *testing.T) {
	bin := requireCollector(t)
	pair := netnstest.New(t)
	b := startSink(t, bin, pair.Receiver)
	a := startCollector(t, bin, "A", pair.Receiver, agentConfig(xdpflowSettings{
		CollectionInterval: time.Minute, MinSnapshotInterval: time.Minute, NewConnectionsPerEvent: 1000,
	}, otlpExporter))
	requireNativeAttach(t, a)

	var before flowMetrics
	var stopped time.Duration
	tr, captured := captureAndSend(t, pair, func() {
		var err error
		if before, err = b.read(); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if err := a.stop(); err != nil {
			t.Fatalf("collector A: %v", err)
		}
		stopped = time.Since(began)
	})
	if len(before.values) != 0 {
		t.Fatalf("collector B had values before the shutdown: %v", before.values)
	}
	if out := a.output.String(); !strings.Contains(out, "Shutdown complete.") {
		t.Errorf("collector A did not log a complete shutdown:\n%s", out)
	}
	t.Logf("collector A exited %v after SIGTERM", stopped.Round(time.Millisecond))
	fm := waitLatest(t, b.read, captured, 10*time.Second)
	checkLatest(t, "collector B", fm, captured, tr.sent)
	t.Logf("final values, sent by the shutdown snapshot only:\n%s",
		table(tr.conns, []string{"sender", "tcpdump", "collector B"}, tr.sent, captured, fm.values))
}

// TestPrometheusRemoteWrite runs Prometheus with its remote-write receiver
// and collector A (xdpflow -> prometheus_remote_write) in the receiver
// namespace, sends traffic, and checks the latest values of the
// per-connection series Prometheus answers queries with.
func TestPrometheusRemoteWrite(t *testing.T) {
	bin := requireCollector(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("the remote-write test needs Prometheus: apt-get install prometheus (%v)", err)
	}
	pair := netnstest.New(t)
	prom := startPrometheus(t, promBin, pair.Receiver)
	a := startCollector(t, bin, "A", pair.Receiver, agentConfig(xdpflowSettings{
		CollectionInterval: time.Second, MinSnapshotInterval: time.Second, NewConnectionsPerEvent: 5,
	}, promRemoteWriteExporter))
	requireNativeAttach(t, a)
	checkListeners(t, pair.Receiver, promAddr)

	tr, captured := captureAndSend(t, pair, nil)
	fm := waitLatest(t, prom.flows, captured, valuesTimeout)
	checkLatest(t, "Prometheus", fm, captured, tr.sent)
	names, err := prom.query(`count by (__name__) ({__name__=~"xdpflow.*"})`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range names {
		got = append(got, r.Metric["__name__"])
	}
	slices.Sort(got)
	t.Logf("series names in Prometheus: %v", got)
	for _, n := range []string{"xdpflow_packets_total", "xdpflow_bytes_total"} {
		if !slices.Contains(got, n) {
			t.Errorf("Prometheus has no series %s", n)
		}
	}
	t.Logf("latest values:\n%s", table(tr.conns, []string{"sender", "tcpdump", "Prometheus"}, tr.sent, captured, fm.values))
}

// prometheus is a running Prometheus server in a namespace.
type prometheus struct {
	proc   *process
	client *http.Client
}

// startPrometheus runs Prometheus in namespace ns, listening on promAddr
// only, with remote write enabled, no scrape targets and its storage in a
// temporary directory, and returns once it is ready.
func startPrometheus(t *testing.T, bin, ns string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{client: nsHTTPClient(ns)}
	p.proc = startProcess(t, "prometheus", ns, bin,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr,
		"--web.enable-remote-write-receiver",
	)
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := p.client.Get("http://" + promAddr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.proc.exited:
			t.Fatalf("prometheus exited (%v) before it was ready:\n%s", p.proc.err, p.proc.output.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after %v (last error %v):\n%s", readyTimeout, err, p.proc.output.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sample is one element of an instant vector in a query response.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"` // [unix time, "value"]
}

// query runs an instant query and returns its vector.
func (p *prometheus) query(q string) ([]sample, error) {
	resp, err := p.client.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string   `json:"resultType"`
			Result     []sample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %s: %w: %s", q, err, body)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: status %s, result type %s: %s", q, r.Status, r.Data.ResultType, r.Error)
	}
	return r.Data.Result, nil
}

// flows queries the latest value of every per-connection series and of
// the overflow counter.
func (p *prometheus) flows() (flowMetrics, error) {
	fm := flowMetrics{values: map[conn]counts{}, overflow: -1}
	for _, name := range []string{"xdpflow_packets_total", "xdpflow_bytes_total"} {
		res, err := p.query(name)
		if err != nil {
			return fm, err
		}
		for _, s := range res {
			c, err := connFromAttrs(s.Metric, promLabel)
			if err == nil && s.Metric["network_interface_name"] != netnstest.ReceiverIface {
				err = fmt.Errorf("network_interface_name %q", s.Metric["network_interface_name"])
			}
			var v uint64
			if err == nil {
				v, err = sampleValue(s)
			}
			if err != nil {
				fm.problems = append(fm.problems, fmt.Sprintf("%s%v: %v", name, s.Metric, err))
				continue
			}
			x := fm.values[c]
			if name == "xdpflow_packets_total" {
				x.Packets = v
			} else {
				x.Bytes = v
			}
			fm.values[c] = x
		}
	}
	res, err := p.query("xdpflow_overflow_packets_total")
	if err != nil {
		return fm, err
	}
	if len(res) == 1 {
		v, err := sampleValue(res[0])
		if err != nil {
			return fm, err
		}
		fm.overflow = int64(v)
	} else if len(res) > 1 {
		fm.problems = append(fm.problems, fmt.Sprintf("%d overflow series: %v", len(res), res))
	}
	return fm, nil
}

// points returns the latest value of every series of the receiver's
// xdpflow.packets, xdpflow.bytes and xdpflow.overflow.packets in
// Prometheus, as points: the metric's OTLP name, and its labels but
// __name__ and those of the instrumentation scope, which must be the
// receiver's. They have no timestamps: there is one point per series.
func (p *prometheus) points() ([]point, error) {
	var pts []point
	for metric, name := range map[string]string{
		"xdpflow.packets":          "xdpflow_packets_total",
		"xdpflow.bytes":            "xdpflow_bytes_total",
		"xdpflow.overflow.packets": "xdpflow_overflow_packets_total",
	} {
		res, err := p.query(name)
		if err != nil {
			return nil, err
		}
		for _, s := range res {
			v, err := sampleValue(s)
			if err != nil {
				return nil, fmt.Errorf("%s%v: %w", name, s.Metric, err)
			}
			attrs := maps.Clone(s.Metric)
			if scope := attrs["otel_scope_name"]; scope != receiverScope {
				return nil, fmt.Errorf("%s%v: otel_scope_name %q, want %q", name, s.Metric, scope, receiverScope)
			}
			for _, l := range []string{"__name__", "otel_scope_name", "otel_scope_version"} {
				delete(attrs, l)
			}
			pts = append(pts, point{Metric: metric, Attrs: attrs, Value: int64(v)})
		}
	}
	return pts, nil
}

func sampleValue(s sample) (uint64, error) {
	str, ok := s.Value[1].(string)
	if !ok {
		return 0, fmt.Errorf("value %v is not a string", s.Value[1])
	}
	var v uint64
	if _, err := fmt.Sscan(str, &v); err != nil {
		return 0, fmt.Errorf("value %q: %w", str, err)
	}
	return v, nil
}
