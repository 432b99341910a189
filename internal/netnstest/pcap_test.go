//go:build linux

package netnstest

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests need no privileges.

// testFrame builds an Ethernet frame with an IP header and a transport
// header carrying sport and dport, followed by payload zero bytes.
func testFrame(src, dst string, proto uint8, sport, dport uint16, payload int, fragOffset uint16, vlan bool) []byte {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	var b []byte
	b = append(b, ReceiverMAC...)
	b = append(b, SenderMAC...)
	if vlan {
		b = binary.BigEndian.AppendUint16(b, 0x8100)
		b = binary.BigEndian.AppendUint16(b, 42)
	}
	l4 := make([]byte, 8+payload)
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[2:4], dport)
	if s.Is4() {
		b = binary.BigEndian.AppendUint16(b, 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[6:8], fragOffset)
		ip[8] = 64
		ip[9] = proto
		copy(ip[12:16], s.AsSlice())
		copy(ip[16:20], d.AsSlice())
		b = append(b, ip...)
	} else {
		b = binary.BigEndian.AppendUint16(b, 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:6], uint16(len(l4)))
		ip[6] = proto
		ip[7] = 64
		copy(ip[8:24], s.AsSlice())
		copy(ip[24:40], d.AsSlice())
		b = append(b, ip...)
	}
	return append(b, l4...)
}

type testRecord struct {
	t       time.Time
	origLen int
	data    []byte
}

// writePcap encodes records as a classic pcap file.
func writePcap(order binary.AppendByteOrder, nanos bool, snapLen uint32, recs []testRecord) []byte {
	var b []byte
	magic := uint32(0xa1b2c3d4)
	if nanos {
		magic = 0xa1b23c4d
	}
	b = order.AppendUint32(b, magic)
	b = order.AppendUint16(b, 2)
	b = order.AppendUint16(b, 4)
	b = order.AppendUint32(b, 0)
	b = order.AppendUint32(b, 0)
	b = order.AppendUint32(b, snapLen)
	b = order.AppendUint32(b, LinkTypeEthernet)
	for _, r := range recs {
		frac := uint32(r.t.Nanosecond())
		if !nanos {
			frac /= 1000
		}
		b = order.AppendUint32(b, uint32(r.t.Unix()))
		b = order.AppendUint32(b, frac)
		b = order.AppendUint32(b, uint32(len(r.data)))
		b = order.AppendUint32(b, uint32(r.origLen))
		b = append(b, r.data...)
	}
	return b
}

func testRecords() []testRecord {
	t0 := time.Unix(1700000000, 123456789)
	udp4 := testFrame("198.51.100.1", "198.51.100.2", 17, 40000, 8080, 100, 0, false)
	tcp6 := testFrame("fd00:db8::1", "fd00:db8::2", 6, 40001, 8080, 1000, 0, false)
	other := testFrame("198.51.100.1", "198.51.100.2", 17, 40000, 9090, 10, 0, true)
	frag := testFrame("198.51.100.1", "198.51.100.2", 17, 1, 8080, 0, 185, false) // non-first fragment
	arp := append(append(append([]byte{}, ReceiverMAC...), SenderMAC...), 0x08, 0x06, 0, 1)
	return []testRecord{
		{t0, len(udp4), udp4},
		{t0.Add(time.Millisecond), 5000, tcp6[:64]}, // truncated by the snap length
		{t0.Add(2 * time.Millisecond), len(other), other},
		{t0.Add(3 * time.Millisecond), len(frag), frag},
		{t0.Add(4 * time.Millisecond), len(arp), arp},
	}
}

func TestReadPcap(t *testing.T) {
	recs := testRecords()
	for _, tc := range []struct {
		name  string
		order binary.AppendByteOrder
		nanos bool
	}{
		{"little-endian-usec", binary.LittleEndian, false},
		{"big-endian-usec", binary.BigEndian, false},
		{"little-endian-nsec", binary.LittleEndian, true},
		{"big-endian-nsec", binary.BigEndian, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ReadPcap(bytes.NewReader(writePcap(tc.order, tc.nanos, 64<<10, recs)))
			if err != nil {
				t.Fatalf("ReadPcap: %v", err)
			}
			if p.LinkType != LinkTypeEthernet || p.SnapLen != 64<<10 {
				t.Errorf("LinkType %d SnapLen %d, want %d and %d", p.LinkType, p.SnapLen, LinkTypeEthernet, 64<<10)
			}
			if len(p.Packets) != len(recs) {
				t.Fatalf("%d packets, want %d", len(p.Packets), len(recs))
			}
			for i, r := range recs {
				got := p.Packets[i]
				want := r.t
				if !tc.nanos {
					want = want.Truncate(time.Microsecond)
				}
				if !got.Time.Equal(want) || got.OrigLen != r.origLen || !bytes.Equal(got.Data, r.data) {
					t.Errorf("packet %d: time %v len %d data %d bytes, want %v, %d, %d bytes",
						i, got.Time, got.OrigLen, len(got.Data), want, r.origLen, len(r.data))
				}
			}
		})
	}
}

func TestPcapCount(t *testing.T) {
	recs := testRecords()
	p, err := ReadPcap(bytes.NewReader(writePcap(binary.LittleEndian, false, 262144, recs)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name           string
		match          func(Frame) bool
		packets, bytes int
	}{
		{"all IP", nil, 4, recs[0].origLen + 5000 + recs[2].origLen + recs[3].origLen},
		{"dport 8080", func(f Frame) bool { return f.DstPort == 8080 }, 2, recs[0].origLen + 5000},
		{"fragments", func(f Frame) bool { return f.Proto == 17 && f.DstPort == 0 }, 1, recs[3].origLen},
		{"vlan 9090", func(f Frame) bool { return f.DstPort == 9090 && f.SrcPort == 40000 }, 1, recs[2].origLen},
		{"ipv6 tcp from fd00:db8::1", func(f Frame) bool {
			return f.Proto == 6 && f.Src == SenderIPv6 && f.Dst == ReceiverIPv6 && f.SrcPort == 40001
		}, 1, 5000},
		{"ipv4 from sender", func(f Frame) bool { return f.Src == SenderIPv4 && f.Dst == ReceiverIPv4 }, 3, recs[0].origLen + recs[2].origLen + recs[3].origLen},
	} {
		n, b := p.Count(tc.match)
		if n != tc.packets || b != uint64(tc.bytes) {
			t.Errorf("%s: %d packets %d bytes, want %d and %d", tc.name, n, b, tc.packets, tc.bytes)
		}
	}
}

func TestDecodeEthernet(t *testing.T) {
	f, err := DecodeEthernet(testFrame("fd00:db8::1", "fd00:db8::2", 17, 5353, 8080, 3, 0, true))
	want := Frame{Src: SenderIPv6, Dst: ReceiverIPv6, Proto: 17, SrcPort: 5353, DstPort: 8080}
	if err != nil || f != want {
		t.Errorf("DecodeEthernet = %+v, %v; want %+v", f, err, want)
	}
	full := testFrame("198.51.100.1", "198.51.100.2", 6, 1, 2, 0, 0, false)
	for _, n := range []int{0, 13, 14 + 19, 14 + 22} {
		if f, err := DecodeEthernet(full[:n]); err == nil {
			t.Errorf("DecodeEthernet of %d bytes = %+v, want an error", n, f)
		}
	}
}

func TestReadPcapErrors(t *testing.T) {
	good := writePcap(binary.LittleEndian, false, 262144, testRecords())
	for _, tc := range []struct {
		name, wantErr string
		data          []byte
	}{
		{"empty", "file header", nil},
		{"pcapng", "pcapng", append([]byte{0x0a, 0x0d, 0x0d, 0x0a}, make([]byte, 20)...)},
		{"bad magic", "not a pcap", make([]byte, 24)},
		{"truncated record header", "record 5 header", append(append([]byte{}, good...), 1, 2, 3)},
		{"truncated record data", "record 4 data", good[:len(good)-1]},
	} {
		_, err := ReadPcap(bytes.NewReader(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestReadPcapFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pcap")
	if err := os.WriteFile(path, writePcap(binary.BigEndian, true, 100, testRecords()[:1]), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := ReadPcapFile(path)
	if err != nil || len(p.Packets) != 1 {
		t.Fatalf("ReadPcapFile = %+v, %v; want 1 packet", p, err)
	}
	if _, err := ReadPcapFile(filepath.Join(t.TempDir(), "missing.pcap")); err == nil {
		t.Error("ReadPcapFile of a missing file succeeded")
	}
}
