//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// point is one number data point of the debug exporter's detailed output.
type point struct {
	Metric    string
	Attrs     map[string]string
	Timestamp time.Time
	Value     int64
	// Start is the start timestamp; the debug exporter's output does not
	// set it, the OTLP/HTTP backend does.
	Start time.Time
}

var (
	metricLine = regexp.MustCompile(`^Metric #\d+$`)
	nameLine   = regexp.MustCompile(`^\s*-> Name: (.+)$`)
	dpLine     = regexp.MustCompile(`^NumberDataPoints #\d+$`)
	attrLine   = regexp.MustCompile(`^\s*-> ([^:]+): [A-Za-z]+\((.*)\)$`)
	tsLine     = regexp.MustCompile(`^Timestamp: (.+)$`)
	valueLine  = regexp.MustCompile(`^Value: (-?\d+)$`)
)

// debugTime is how the debug exporter prints timestamps (time.Time.String).
const debugTime = "2006-01-02 15:04:05.999999999 -0700 MST"

// parseDebug extracts the number data points from the debug exporter's
// detailed text output (what `verbosity: detailed` prints). Lines it does
// not know are skipped; a malformed timestamp or value is an error.
func parseDebug(text string) ([]point, error) {
	var pts []point
	var metric string
	var cur *point
	inDescriptor := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case metricLine.MatchString(line):
			metric, cur, inDescriptor = "", nil, true
		case inDescriptor && nameLine.MatchString(line):
			metric = nameLine.FindStringSubmatch(line)[1]
		case dpLine.MatchString(line):
			inDescriptor = false
			cur = &point{Metric: metric, Attrs: map[string]string{}}
		case cur != nil && attrLine.MatchString(line):
			m := attrLine.FindStringSubmatch(line)
			cur.Attrs[m[1]] = m[2]
		case cur != nil && tsLine.MatchString(line):
			ts, err := time.Parse(debugTime, tsLine.FindStringSubmatch(line)[1])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			cur.Timestamp = ts
		case cur != nil && valueLine.MatchString(line):
			v, err := strconv.ParseInt(valueLine.FindStringSubmatch(line)[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			cur.Value = v
			pts = append(pts, *cur)
			cur = nil
		}
	}
	return pts, sc.Err()
}

// debugFile is a file the debug exporter writes its detailed output to.
type debugFile string

// read parses what the debug exporter has written to the file so far
// (nothing if it does not exist yet) into the latest values per
// connection.
func (f debugFile) read() (flowMetrics, error) {
	data, err := os.ReadFile(string(f))
	if err != nil && !os.IsNotExist(err) {
		return flowMetrics{}, err
	}
	pts, err := parseDebug(string(data))
	if err != nil {
		return flowMetrics{}, err
	}
	return latestFlows(pts, netnstest.ReceiverIface), nil
}

// latestFlows reduces points to the latest value of every connection's
// series of xdpflow.packets and xdpflow.bytes, and of
// xdpflow.overflow.packets. Every flow point must come from interface
// iface.
func latestFlows(pts []point, iface string) flowMetrics {
	return foldLatest(pts, func(attrs map[string]string) (conn, error) {
		c, err := connFromAttrs(attrs, otlpAttr)
		if err == nil && attrs["network.interface.name"] != iface {
			err = fmt.Errorf("network.interface.name %q, want %q", attrs["network.interface.name"], iface)
		}
		return c, err
	})
}

// otlpAttr is the key an OTLP attribute is stored under in a point: its
// name.
func otlpAttr(attr string) string { return attr }

// promLabel is the Prometheus label of an OTLP attribute.
func promLabel(attr string) string { return strings.ReplaceAll(attr, ".", "_") }

// connFromAttrs reads a connection from the receiver's attributes; name
// maps an OTLP attribute name to the key it is stored under (Prometheus
// labels replace dots with underscores). network.type must match the
// address family.
func connFromAttrs(attrs map[string]string, name func(string) string) (conn, error) {
	c, err := connTupleFromAttrs(attrs, name)
	if err != nil {
		return c, err
	}
	if got := attrs[name("network.type")]; got != c.networkType() {
		return c, fmt.Errorf("network.type %q for address %s", got, c.Src)
	}
	return c, nil
}

// connTupleFromAttrs reads a connection as connFromAttrs does, but not
// network.type: a PromQL join's result keeps only the labels it matched on.
func connTupleFromAttrs(attrs map[string]string, name func(string) string) (conn, error) {
	var c conn
	addr, err := netip.ParseAddr(attrs[name("source.address")])
	if err != nil {
		return c, fmt.Errorf("source.address: %w", err)
	}
	sport, err := strconv.ParseUint(attrs[name("source.port")], 10, 16)
	if err != nil {
		return c, fmt.Errorf("source.port: %w", err)
	}
	dport, err := strconv.ParseUint(attrs[name("destination.port")], 10, 16)
	if err != nil {
		return c, fmt.Errorf("destination.port: %w", err)
	}
	c = conn{Transport: attrs[name("network.transport")], Src: addr, SrcPort: uint16(sport), DstPort: uint16(dport)}
	if c.Transport != "tcp" && c.Transport != "udp" {
		return c, fmt.Errorf("network.transport %q", c.Transport)
	}
	return c, nil
}

// TestParseDebug checks the parser on the debug exporter's output as
// printed by otelcol-xdpflow (needs no privileges).
func TestParseDebug(t *testing.T) {
	const sample = `Metrics	{"resource metrics": 1, "metrics": 6, "data points": 6}
ResourceMetrics #0
Resource SchemaURL: 
ScopeMetrics #0
ScopeMetrics SchemaURL: 
InstrumentationScope github.com/xdpflow/xdpflowreceiver 0.1.0
Metric #0
Descriptor:
     -> Name: xdpflow.packets
     -> Description: Packets received per connection.
     -> Unit: {packet}
     -> DataType: Sum
     -> IsMonotonic: true
     -> AggregationTemporality: Cumulative
NumberDataPoints #0
Data point attributes:
     -> source.address: Str(198.51.100.1)
     -> source.port: Int(40004)
     -> destination.port: Int(8080)
     -> network.transport: Str(udp)
     -> network.type: Str(ipv4)
     -> network.interface.name: Str(veth-rcv)
StartTimestamp: 2026-11-28 20:36:25.137020406 +0000 UTC
Timestamp: 2026-11-28 20:36:28.651346527 +0000 UTC
Value: 6
Metric #1
Descriptor:
     -> Name: xdpflow.bytes
     -> Description: Bytes received per connection, whole frames from the Ethernet header on.
     -> Unit: By
     -> DataType: Sum
     -> IsMonotonic: true
     -> AggregationTemporality: Cumulative
NumberDataPoints #0
Data point attributes:
     -> source.address: Str(198.51.100.1)
     -> source.port: Int(40004)
     -> destination.port: Int(8080)
     -> network.transport: Str(udp)
     -> network.type: Str(ipv4)
     -> network.interface.name: Str(veth-rcv)
StartTimestamp: 2026-11-28 20:36:25.137020406 +0000 UTC
Timestamp: 2026-11-28 20:36:28.651346527 +0000 UTC
Value: 600
Metric #2
Descriptor:
     -> Name: xdpflow.overflow.packets
     -> Description: Packets not attributed to a connection because the flow table was full.
     -> Unit: {packet}
     -> DataType: Sum
     -> IsMonotonic: true
     -> AggregationTemporality: Cumulative
NumberDataPoints #0
StartTimestamp: 2026-11-28 20:36:08.643308154 +0000 UTC
Timestamp: 2026-11-28 20:36:28.651346527 +0000 UTC
Value: 0
Metric #0
Descriptor:
     -> Name: xdpflow.packets
NumberDataPoints #0
Data point attributes:
     -> source.address: Str(198.51.100.1)
     -> source.port: Int(40004)
     -> destination.port: Int(8080)
     -> network.transport: Str(udp)
     -> network.type: Str(ipv4)
     -> network.interface.name: Str(veth-rcv)
StartTimestamp: 2026-11-28 20:36:25.137020406 +0000 UTC
Timestamp: 2026-11-28 20:36:27.000000000 +0000 UTC
Value: 5
`
	pts, err := parseDebug(sample)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 4 {
		t.Fatalf("parsed %d points, want 4: %+v", len(pts), pts)
	}
	if p := pts[1]; p.Metric != "xdpflow.bytes" || p.Value != 600 || p.Attrs["source.port"] != "40004" ||
		p.Timestamp.UnixNano() != time.Date(2026, 11, 28, 20, 36, 28, 651346527, time.UTC).UnixNano() {
		t.Errorf("point 1 = %+v", p)
	}
	fm := latestFlows(pts, "veth-rcv")
	c := conn{Transport: "udp", Src: netip.MustParseAddr("198.51.100.1"), SrcPort: 40004, DstPort: 8080}
	// The last point is older than the first: the latest by timestamp wins.
	if got := fm.values[c]; got != (counts{6, 600}) || len(fm.values) != 1 {
		t.Errorf("values = %v, want %v: 6 packets 600 bytes", fm.values, c)
	}
	if fm.overflow != 0 || len(fm.problems) != 0 {
		t.Errorf("overflow %d, problems %v", fm.overflow, fm.problems)
	}
	if fm := latestFlows(pts, "eth0"); len(fm.problems) != 3 {
		t.Errorf("points from another interface: problems %v, want 3", fm.problems)
	}
}
