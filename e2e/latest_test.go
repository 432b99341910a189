//go:build linux

package e2e

// The latest exported values of the receiver's metrics, per series, and
// how the tests wait for them and compare them with the capture: the same
// for series of one connection (conn) and grouped series (seriesKey).

import (
	"fmt"
	"testing"
	"time"
)

// seriesID identifies a series of xdpflow.packets and xdpflow.bytes by the
// attributes a test configures: conn, or seriesKey.
type seriesID interface {
	comparable
	fmt.Stringer
	// noun names what the series counts, for messages.
	noun() string
}

// latest are the latest values, by timestamp, of the receiver's metrics
// in a sequence of data points.
type latest[K seriesID] struct {
	// values are xdpflow.packets and xdpflow.bytes per series.
	values map[K]counts
	// overflow is xdpflow.overflow.packets; -1 if never seen.
	overflow int64
	// problems lists data points with unexpected attributes.
	problems []string
}

// flowMetrics are the latest values per connection.
type flowMetrics = latest[conn]

// groupedMetrics are the latest values per grouped series.
type groupedMetrics = latest[seriesKey]

// foldLatest reduces points to the latest value of every series of
// xdpflow.packets and xdpflow.bytes, and of xdpflow.overflow.packets.
// seriesOf reads a point's series from its attributes; a point it returns
// an error for is a problem.
func foldLatest[K seriesID](pts []point, seriesOf func(attrs map[string]string) (K, error)) latest[K] {
	type id struct {
		metric string
		k      K
	}
	newest := map[id]point{}
	l := latest[K]{values: map[K]counts{}, overflow: -1}
	var overflowAt time.Time
	for _, p := range pts {
		switch p.Metric {
		case "xdpflow.overflow.packets":
			if !p.Timestamp.Before(overflowAt) {
				l.overflow, overflowAt = p.Value, p.Timestamp
			}
			continue
		case "xdpflow.packets", "xdpflow.bytes":
		default:
			continue
		}
		k, err := seriesOf(p.Attrs)
		if err != nil {
			l.problems = append(l.problems, fmt.Sprintf("%s %v: %v", p.Metric, p.Attrs, err))
			continue
		}
		i := id{p.Metric, k}
		if old, ok := newest[i]; !ok || !p.Timestamp.Before(old.Timestamp) {
			newest[i] = p
		}
	}
	for i, p := range newest {
		v := l.values[i.k]
		if i.metric == "xdpflow.packets" {
			v.Packets = uint64(p.Value)
		} else {
			v.Bytes = uint64(p.Value)
		}
		l.values[i.k] = v
	}
	return l
}

// waitLatest reads the exported values until every series of want has its
// wanted counts (values only grow, so the final ones arrive last), or
// until timeout, and returns the last values read.
func waitLatest[K seriesID](t *testing.T, read func() (latest[K], error), want map[K]counts, timeout time.Duration) latest[K] {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l, err := read()
		if err != nil {
			t.Fatalf("reading exported values: %v", err)
		}
		done := true
		for k, w := range want {
			if l.values[k] != w {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			return l
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkLatest compares the exported values with the capture: the same
// series, the same packets and bytes, nothing overflowed; and, where the
// sender knows its counts (UDP), with those too.
func checkLatest[K seriesID](t *testing.T, what string, l latest[K], captured, sent map[K]counts) {
	t.Helper()
	for _, p := range l.problems {
		t.Errorf("%s: unexpected data point: %s", what, p)
	}
	for k, w := range sent {
		if got := l.values[k]; got != w {
			t.Errorf("%s: %s: %s, the sender sent %s", what, k, got, w)
		}
	}
	for k, w := range captured {
		if got, ok := l.values[k]; !ok {
			t.Errorf("%s: no values for %s (tcpdump: %s)", what, k, w)
		} else if got != w {
			t.Errorf("%s: %s: %s, tcpdump saw %s", what, k, got, w)
		}
	}
	for k, got := range l.values {
		if _, ok := captured[k]; !ok {
			t.Errorf("%s: values for %s (%s), a %s that is not in the capture", what, k, got, k.noun())
		}
	}
	if l.overflow != 0 {
		t.Errorf("%s: xdpflow.overflow.packets = %d, want 0", what, l.overflow)
	}
}

// checkAllFlows checks that fm holds exactly the connections of sent, each
// with its packets and bytes, and nothing overflowed. It reports at most
// ten differences one by one.
func checkAllFlows(t *testing.T, fm flowMetrics, sent map[conn]counts) {
	t.Helper()
	var bad int
	var want, got counts
	for c, w := range sent {
		g := fm.values[c]
		want = counts{want.Packets + w.Packets, want.Bytes + w.Bytes}
		got = counts{got.Packets + g.Packets, got.Bytes + g.Bytes}
		if g != w {
			if bad++; bad <= 10 {
				t.Errorf("%s: exported %s, sent %s", c, g, w)
			}
		}
	}
	for c, g := range fm.values {
		if _, ok := sent[c]; !ok {
			t.Errorf("exported %s for %s, which sent nothing", g, c)
		}
	}
	for _, p := range fm.problems {
		t.Errorf("unexpected data point: %s", p)
	}
	if fm.overflow != 0 {
		t.Errorf("xdpflow.overflow.packets = %d, want 0", fm.overflow)
	}
	t.Logf("%d connections: sent %s, exported %s; %d connections differ", len(sent), want, got, bad)
}
