//go:build linux

package datapath

import (
	"strings"
	"testing"
)

// TestLoadRejectsBadOptions checks that Load refuses invalid options with
// an error naming the problem. Options are checked before anything touches
// the kernel, so this needs no privileges.
func TestLoadRejectsBadOptions(t *testing.T) {
	cases := []struct {
		name   string
		modify func(*Options)
		want   []string
	}{
		{"port 0", func(o *Options) { o.Ports = []uint16{8080, 0} }, []string{"port 0"}},
		{"N 0", func(o *Options) { o.NewConnectionsPerEvent = 0 }, []string{"new connections per event must be at least 1"}},
		{"max connections 0", func(o *Options) { o.MaxConnections = 0 }, []string{"max connections 0 is out of range"}},
		{"max connections above limit", func(o *Options) { o.MaxConnections = MaxConnectionsLimit + 1 }, []string{"max connections 16777217 is out of range (1-16777216)"}},
		{"protocol 1", func(o *Options) { o.Protocols = []Protocol{TCP, 1} }, []string{"protocol 1 is not supported"}},
		{"every problem at once", func(o *Options) { *o = Options{Ports: []uint16{0}, Protocols: []Protocol{132}} },
			[]string{"port 0", "protocol 132", "new connections per event", "max connections 0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultOptions()
			tc.modify(&opts)
			d, err := Load(opts)
			if err == nil {
				d.Close()
				t.Fatalf("Load(%+v) succeeded, want an error", opts)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestDefaultOptionsValid checks the defaults and the limit's boundaries.
func TestDefaultOptionsValid(t *testing.T) {
	o := DefaultOptions()
	if len(o.Ports) != 1 || o.Ports[0] != 8080 || o.NewConnectionsPerEvent != 5 || o.MaxConnections != 65536 {
		t.Errorf("DefaultOptions() = %+v", o)
	}
	for _, n := range []uint32{1, MaxConnectionsLimit} {
		o.MaxConnections = n
		if err := o.validate(); err != nil {
			t.Errorf("MaxConnections %d: %v", n, err)
		}
	}
	o.Ports, o.Protocols = nil, nil
	if err := o.validate(); err != nil {
		t.Errorf("all ports: %v", err)
	}
}

// TestPortBitmap checks the bitmap the program tests destination ports in.
func TestPortBitmap(t *testing.T) {
	ports := []uint16{1, 63, 64, 8080, 65535}
	bm := portBitmap(ports)
	set := map[uint16]bool{}
	for _, p := range ports {
		set[p] = true
	}
	for p := range 65536 {
		got := bm[p>>6]>>(p&63)&1 == 1
		if got != set[uint16(p)] {
			t.Errorf("port %d in bitmap: %v, want %v", p, got, set[uint16(p)])
		}
	}
}

func TestParseAttachMode(t *testing.T) {
	for _, m := range []AttachMode{AttachAuto, AttachNative, AttachGeneric} {
		for _, s := range []string{m.String(), strings.ToUpper(m.String())} {
			got, err := ParseAttachMode(s)
			if err != nil || got != m {
				t.Errorf("ParseAttachMode(%q) = %v, %v; want %v", s, got, err, m)
			}
		}
	}
	if got := []string{AttachAuto.String(), AttachNative.String(), AttachGeneric.String()}; strings.Join(got, ",") != "auto,native,generic" {
		t.Errorf("mode names %v", got)
	}
	for _, s := range []string{"", "skb", "driver", "offload"} {
		if _, err := ParseAttachMode(s); err == nil || !strings.Contains(err.Error(), "unknown attach mode") {
			t.Errorf("ParseAttachMode(%q) error = %v, want unknown attach mode", s, err)
		}
	}
	if s := AttachMode(7).String(); s != "AttachMode(7)" {
		t.Errorf("AttachMode(7).String() = %q", s)
	}
}

func TestParseProtocol(t *testing.T) {
	for _, p := range []Protocol{TCP, UDP} {
		for _, s := range []string{p.String(), strings.ToUpper(p.String())} {
			got, err := ParseProtocol(s)
			if err != nil || got != p {
				t.Errorf("ParseProtocol(%q) = %v, %v; want %v", s, got, err, p)
			}
		}
	}
	if TCP != 6 || UDP != 17 || TCP.String() != "tcp" || UDP.String() != "udp" {
		t.Errorf("TCP, UDP = %d %q, %d %q", TCP, TCP, UDP, UDP)
	}
	for _, s := range []string{"", "icmp", "sctp", "6"} {
		if _, err := ParseProtocol(s); err == nil || !strings.Contains(err.Error(), "unknown protocol") {
			t.Errorf("ParseProtocol(%q) error = %v, want unknown protocol", s, err)
		}
	}
	if s := Protocol(1).String(); s != "proto-1" {
		t.Errorf("Protocol(1).String() = %q", s)
	}
}
