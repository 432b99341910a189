//go:build linux

package datapath

import (
	"errors"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// Events returns the trigger events. The channel holds at most one pending
// event: a consumer that is busy sees bursts coalesced into the latest
// event, which is all a "take a snapshot now" signal needs. The channel is
// closed by Close.
func (d *Datapath) Events() <-chan TriggerEvent { return d.trig }

// EventReadGap is how long the reader leaves the ring buffer alone once
// it has drained it. The kernel wakes a reader only for a record written
// when the reader had read everything before it, so during a burst of new
// connections the events queue up without one cross-CPU wake-up each
// (about 1.8 µs of the inserting CPU's time, BENCHMARKS.md); the reader
// then takes them all at once. The first event after a quiet time is
// delivered at once; the later ones of a burst wait at most this long,
// well under any min_snapshot_interval worth setting.
const EventReadGap = 20 * time.Millisecond

func (d *Datapath) readEvents() {
	defer d.wg.Done()
	defer close(d.trig)
	var rec ringbuf.Record
	for {
		if err := d.events.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		var ev xdpflowTriggerEvent
		if len(rec.RawSample) >= len(bytesOf(&ev)) {
			copy(bytesOf(&ev), rec.RawSample)
			d.offer(TriggerEvent{KtimeNs: ev.KtimeNs, NewConnections: ev.NewConnections})
		}
		if d.queuedEventBytes() > 0 {
			continue // drain what is queued
		}
		select {
		case <-d.closing:
			return
		case <-time.After(EventReadGap):
		}
	}
}

// offer delivers ev, replacing a pending event the consumer has not taken.
func (d *Datapath) offer(ev TriggerEvent) {
	for {
		select {
		case d.trig <- ev:
			return
		default:
		}
		select {
		case <-d.trig:
		default:
		}
	}
}

// queuedEventBytes returns how many bytes of events wait in the ring
// buffer, 0 once Close has begun: the ring's memory is unmapped by Close,
// and reading its positions then would fault.
func (d *Datapath) queuedEventBytes() int {
	d.eventsMu.Lock()
	defer d.eventsMu.Unlock()
	if d.eventsClosed {
		return 0
	}
	return d.events.AvailableBytes()
}

// closeEvents closes the ring buffer reader, which ends readEvents.
func (d *Datapath) closeEvents() error {
	d.eventsMu.Lock()
	defer d.eventsMu.Unlock()
	d.eventsClosed = true
	return d.events.Close()
}
