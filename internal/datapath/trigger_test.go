//go:build linux

package datapath

import (
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// keyFrame returns the frame of the i-th distinct test connection (i below
// 65536): TCP from keyAddr(i) port 20000+i to port 8080, with i%50 bytes
// of payload. keyOf returns its key.
func keyFrame(i int) []byte {
	return tcp4Frame(keyAddr(i), uint16(20000+i), dport, i%50)
}

// keyAddr returns the source address of keyFrame(i).
func keyAddr(i int) string {
	return fmt.Sprintf("10.9.%d.%d", i/256, i%256)
}

// TestTriggerEveryN checks the every-N trigger: with `new` distinct
// connections the kernel submits exactly floor(new/N) events, and packets
// of known connections submit none. Events() coalesces bursts (capacity
// 1), so exact counts come from the kernel's counters; the channel must
// deliver at least one event, the last one for the largest multiple of N.
func TestTriggerEveryN(t *testing.T) {
	privtest.RequireRoot(t)
	for _, n := range []uint32{1, 5, 7} {
		for _, newConns := range []int{0, 4, 5, 23, 100} {
			t.Run(fmt.Sprintf("N=%d/new=%d", n, newConns), func(t *testing.T) {
				testTrigger(t, n, newConns)
			})
		}
	}
}

func testTrigger(t *testing.T, n uint32, newConns int) {
	opts := testOptions()
	opts.NewConnectionsPerEvent = n
	d := loadDatapath(t, opts)

	for i := range newConns {
		runFrame(t, d, keyFrame(i))
	}
	// Packets of known connections: no new connection, no event.
	for i := range newConns {
		runFrame(t, d, keyFrame(i))
		runFrame(t, d, keyFrame(i))
	}

	wantEvents := uint64(newConns) / uint64(n)
	st := readStats(t, d)
	if st.NewConnections != uint64(newConns) || st.Events != wantEvents || st.RingbufDrops != 0 {
		t.Fatalf("stats %+v, want NewConnections %d, Events %d, RingbufDrops 0", st, newConns, wantEvents)
	}

	if wantEvents == 0 {
		select {
		case ev := <-d.Events():
			t.Fatalf("got event %+v, want none", ev)
		case <-time.After(50 * time.Millisecond):
		}
		return
	}

	// The event for the last multiple of N carries the first-seen time of
	// the connection whose insertion reached it.
	last := wantEvents * uint64(n)
	flows := readFlows(t, d)
	k := keyOf(int(last-1), loopbackIndex(t))
	trigger, ok := flows[k]
	if !ok {
		t.Fatalf("connection %d (%+v) not in the flow table", last-1, k)
	}

	ev := waitEvent(t, d, n, last)
	if ev.KtimeNs != trigger.FirstSeenNs {
		t.Errorf("event KtimeNs = %d, want first seen of connection %d: %d", ev.KtimeNs, last, trigger.FirstSeenNs)
	}
}

// waitEvent reads Events() until an event for `last` connections arrives,
// checking that every event received is for a positive multiple of n, in
// increasing order, not above last.
func waitEvent(t *testing.T, d *Datapath, n uint32, last uint64) TriggerEvent {
	t.Helper()
	timeout := time.After(2 * time.Second)
	var prev uint64
	for {
		select {
		case ev, ok := <-d.Events():
			if !ok {
				t.Fatal("Events() closed")
			}
			c := ev.NewConnections
			if c == 0 || c%uint64(n) != 0 || c > last || c <= prev {
				t.Fatalf("event for %d connections after one for %d; want increasing multiples of %d up to %d", c, prev, n, last)
			}
			if c == last {
				return ev
			}
			prev = c
		case <-timeout:
			t.Fatalf("no event for %d connections within 2s (last seen: %d)", last, prev)
		}
	}
}

// TestCloseWhileEventsArrive closes the datapath while trigger events keep
// coming: the event reader must not look at the ring buffer once Close
// has unmapped it (a fault, seen once in a benchmark before the fix).
func TestCloseWhileEventsArrive(t *testing.T) {
	privtest.RequireRoot(t)
	opts := testOptions()
	opts.NewConnectionsPerEvent = 1
	for round := range 30 {
		d, err := Load(opts)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := d.Program().Run(&ebpf.RunOptions{Data: keyFrame(i % 60000)}); err != nil {
					return
				}
			}
		}()
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		if err := d.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		close(stop)
		<-done
	}
}
