//go:build linux

package e2e

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// otlpHTTPBackend is an OTLP/HTTP metrics backend in the test process: it
// answers POST /v1/metrics (protobuf, gzip or not) and keeps the latest
// data point, by timestamp, of every number series it received, and every
// start timestamp each series had.
//
// It decodes requests with pmetric.ProtoUnmarshaler: an
// ExportMetricsServiceRequest has the wire format of a MetricsData (field 1,
// the resource metrics), and pmetricotlp would add gRPC to the module's
// dependencies. Its answer, an ExportMetricsServiceResponse without
// partial success, is an empty message: an empty body.
type otlpHTTPBackend struct {
	srv    *http.Server
	served chan error // Serve's result

	mu       sync.Mutex
	latest   map[string]point          // by metric name and attributes
	starts   map[string]map[int64]bool // start timestamps (Unix ns), by series
	requests int
}

// startOTLPHTTPBackend listens on addr inside namespace ns and serves
// OTLP/HTTP metrics there until the test ends.
func startOTLPHTTPBackend(t *testing.T, ns, addr string) *otlpHTTPBackend {
	t.Helper()
	var ln net.Listener
	err := netnstest.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("OTLP/HTTP backend: listen %s in %s: %v", addr, ns, err)
	}
	b := &otlpHTTPBackend{latest: map[string]point{}, starts: map[string]map[int64]bool{}, served: make(chan error, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/metrics", b.handleMetrics)
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: ioTimeout}
	go func() { b.served <- b.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := b.srv.Shutdown(ctx); err != nil {
			t.Errorf("OTLP/HTTP backend: shutdown: %v", err)
			b.srv.Close()
		}
		if err := <-b.served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("OTLP/HTTP backend: %v", err)
		}
	})
	return b
}

func (b *otlpHTTPBackend) handleMetrics(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	md, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(data)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b.keep(md)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// keep records the number data points of md that are newer than those
// already kept for their series.
func (b *otlpHTTPBackend) keep(md pmetric.Metrics) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests++
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				m := ms.At(k)
				var dps pmetric.NumberDataPointSlice
				switch m.Type() {
				case pmetric.MetricTypeSum:
					dps = m.Sum().DataPoints()
				case pmetric.MetricTypeGauge:
					dps = m.Gauge().DataPoints()
				default:
					continue
				}
				for l := range dps.Len() {
					b.keepPoint(m.Name(), dps.At(l))
				}
			}
		}
	}
}

func (b *otlpHTTPBackend) keepPoint(metric string, dp pmetric.NumberDataPoint) {
	p := point{Metric: metric, Attrs: map[string]string{}, Timestamp: dp.Timestamp().AsTime(), Value: dp.IntValue(),
		Start: dp.StartTimestamp().AsTime()}
	key := []string{metric}
	dp.Attributes().Range(func(k string, v pcommon.Value) bool {
		p.Attrs[k] = v.AsString()
		key = append(key, k+"="+p.Attrs[k])
		return true
	})
	slices.Sort(key[1:])
	id := strings.Join(key, "\x00")
	if b.starts[id] == nil {
		b.starts[id] = map[int64]bool{}
	}
	b.starts[id][int64(dp.StartTimestamp())] = true
	if old, ok := b.latest[id]; !ok || !p.Timestamp.Before(old.Timestamp) {
		b.latest[id] = p
	}
}

// read returns the latest values of the receiver's series received so far.
func (b *otlpHTTPBackend) read() (flowMetrics, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	pts := make([]point, 0, len(b.latest))
	for _, p := range b.latest {
		pts = append(pts, p)
	}
	return latestFlows(pts, netnstest.ReceiverIface), nil
}

// points returns the latest data point of every series received so far.
func (b *otlpHTTPBackend) points() []point {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Collect(maps.Values(b.latest))
}

// flowStarts returns, for every connection of the receiver's
// xdpflow.packets series received so far, each start timestamp its data
// points had, in order.
func (b *otlpHTTPBackend) flowStarts() map[conn][]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[conn][]time.Time{}
	for id, p := range b.latest {
		if p.Metric != "xdpflow.packets" {
			continue
		}
		c, err := connFromAttrs(p.Attrs, otlpAttr)
		if err != nil {
			continue // latestFlows reports it
		}
		for _, ns := range slices.Sorted(maps.Keys(b.starts[id])) {
			out[c] = append(out[c], time.Unix(0, ns))
		}
	}
	return out
}

// latestValue returns the latest value received of the series of metric
// that has no attributes, and whether there is one.
func (b *otlpHTTPBackend) latestValue(metric string) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.latest[metric]
	return p.Value, ok
}

// String summarises what the backend received.
func (b *otlpHTTPBackend) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprintf("%d requests, %d series", b.requests, len(b.latest))
}
