package datapath

import "time"

// The types in this file are what the datapath reports; they build on every
// platform so that the receiver compiles everywhere.

// TriggerEvent is sent by the program every N new connections.
type TriggerEvent struct {
	// KtimeNs is the kernel timestamp of the connection that triggered it.
	KtimeNs uint64
	// NewConnections is the number of connections inserted since load.
	NewConnections uint64
}

// Stats are the program's data-quality counters since load.
type Stats struct {
	// OverflowPackets and OverflowBytes were not attributed to a connection
	// because the flow table was full.
	OverflowPackets uint64
	OverflowBytes   uint64
	// RingbufDrops counts trigger events lost because the ring buffer was
	// full; a later snapshot still reads their connections.
	RingbufDrops uint64
	// Events counts trigger events submitted.
	Events uint64
	// NewConnections counts connections inserted into the flow table.
	NewConnections uint64
}

// StateReport says what Load found in Options.StateDir.
type StateReport struct {
	// Restored is true when the flow table and statistics of an earlier
	// process were taken over.
	Restored bool
	// Reason says why a new table was started, when one was found that
	// could not be taken over; empty otherwise.
	Reason string
	// Started is when the flow table was created: the start of the
	// statistics' cumulative sums.
	Started time.Time
	// Clock is the clock offset measured when the table was created: its
	// timestamps convert to the same start times in every process, where
	// a new measurement would differ by tens of nanoseconds.
	Clock ClockOffset
}
