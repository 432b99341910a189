//go:build linux

package netnstest

import (
	"net/netip"
	"testing"
	"time"
)

func TestUDPSizes(t *testing.T) {
	sizes := UDPSizes(300, 1472)
	if len(sizes) != 300 || sizes[0] != 0 || sizes[1] != 1472 {
		t.Fatalf("UDPSizes(300, 1472) = %v...", sizes[:3])
	}
	for i, s := range sizes {
		if s < 0 || s > 1472 {
			t.Errorf("size %d: %d, out of [0, 1472]", i, s)
		}
	}
	if got := MaxUDPPayload(SenderIPv4); got != 1472 {
		t.Errorf("MaxUDPPayload(IPv4) = %d, want 1472", got)
	}
	if got := MaxUDPPayload(SenderIPv6); got != 1452 {
		t.Errorf("MaxUDPPayload(IPv6) = %d, want 1452", got)
	}
	if got := UDPFrameBytes(SenderIPv4, 1472); got != 1514 {
		t.Errorf("UDPFrameBytes(IPv4, 1472) = %d, want 1514", got)
	}
	if got := UDPFrameBytes(SenderIPv6, 0); got != 14+40+8 {
		t.Errorf("UDPFrameBytes(IPv6, 0) = %d, want %d", got, 14+40+8)
	}
}

func TestTraffic(t *testing.T) {
	p := New(t)
	if x, ok := LinkXDP(t, p.Receiver, ReceiverIface); ok {
		t.Errorf("LinkXDP on a fresh veth: %+v, want none", x)
	}
	for _, fam := range []struct{ src, dst netip.Addr }{
		{SenderIPv4, ReceiverIPv4},
		{SenderIPv6, ReceiverIPv6},
	} {
		to := netip.AddrPortFrom(fam.dst, 7010)
		server := ListenUDP(t, p.Receiver, to)
		a := ListenUDP(t, p.Sender, netip.AddrPortFrom(fam.src, 40110))
		b := ListenUDP(t, p.Sender, netip.AddrPortFrom(fam.src, 40111))
		var dgrams []Datagram
		var want uint64
		for i, s := range UDPSizes(70, MaxUDPPayload(fam.src)) {
			from := a
			if i%3 == 0 {
				from = b
			}
			dgrams = append(dgrams, Datagram{From: from, Size: s})
			want += UDPFrameBytes(fam.dst, s)
		}
		got := SendUDP(t, server, to, dgrams, UDPPacing{Batch: 16, Gap: time.Microsecond, Timeout: 5 * time.Second, InOrder: true})
		if got != want {
			t.Errorf("%s: SendUDP returned %d frame bytes, want %d", fam.src, got, want)
		}

		before, after := false, false
		client := TCPConversation{
			Rounds:     5,
			Bulk:       64 << 10,
			Timeout:    5 * time.Second,
			BeforeDial: func() { before = !after },
			AfterDial:  func() { after = before },
		}.Converse(t, p, fam.src, netip.AddrPortFrom(fam.dst, 7011))
		if client.Addr() != fam.src || client.Port() == 0 {
			t.Errorf("Converse returned client %s, want %s and a port", client, fam.src)
		}
		if !before || !after {
			t.Errorf("BeforeDial, AfterDial called: %v, %v (or out of order)", before, after)
		}
	}
}

func TestSendUDPFlow(t *testing.T) {
	p := New(t)
	sizes := UDPSizes(40, MaxUDPPayload(ReceiverIPv6))
	var want uint64
	for _, s := range sizes {
		want += UDPFrameBytes(ReceiverIPv6, s)
	}
	got := SendUDPFlow(t, p, netip.AddrPortFrom(SenderIPv6, 40112), netip.AddrPortFrom(ReceiverIPv6, 7012), sizes,
		UDPPacing{Batch: 32, Timeout: 5 * time.Second, InOrder: true})
	if got != want {
		t.Errorf("SendUDPFlow returned %d frame bytes, want %d", got, want)
	}
}
