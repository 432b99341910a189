package xdpflowreceiver

import (
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// changedFilter keeps, with export_changed_only, the series whose counts
// changed since the last accepted snapshot, and a rotating share of the
// others: a series is exported at least once in every refresh accepted
// snapshots, spread so that each snapshot carries about 1/refresh of the
// unchanged ones rather than all of them at once.
type changedFilter struct {
	refresh uint32 // snapshots within unchanged_export_interval
	// accepted counts the accepted snapshots: it picks the share of
	// unchanged series due, and stands still while exports fail, so that
	// a refused share is offered again.
	accepted uint64
	// since is the kernel time from which a packet makes a series
	// changed: the read of the last accepted snapshot, less the coarse
	// clock's lag; 0 (everything changed) before one was accepted.
	since uint64
}

func newChangedFilter(cfg *Config) *changedFilter {
	if !cfg.ExportChangedOnly {
		return nil
	}
	refresh := uint32((cfg.UnchangedExportInterval + cfg.CollectionInterval - 1) / cfg.CollectionInterval)
	return &changedFilter{refresh: max(refresh, 1)}
}

// keep removes from flows the series not to export in this snapshot.
func (f *changedFilter) keep(flows *datapath.FlowTable) {
	if f == nil || f.since == 0 {
		return
	}
	kept := 0
	for i := range flows.Keys {
		if flows.Values[i].LastSeenNs < f.since && !f.due(&flows.Keys[i]) {
			continue
		}
		flows.Keys[kept] = flows.Keys[i]
		flows.Values[kept] = flows.Values[i]
		kept++
	}
	flows.Keys = flows.Keys[:kept]
	flows.Values = flows.Values[:kept]
}

// due reports whether an unchanged series is in this snapshot's share,
// by the slot the program's selection uses too.
func (f *changedFilter) due(k *datapath.FlowKey) bool {
	return datapath.KeySlot(k, f.refresh) == f.slot()
}

func (f *changedFilter) slot() uint32 { return uint32(f.accepted % uint64(f.refresh)) }

// selection is what the kernel selects for this snapshot, the idle
// entries (last seen before idleBefore) included; ok is false while
// everything is exported (no filter, or none accepted yet).
func (f *changedFilter) selection(idleBefore uint64) (sel datapath.ChangedSelection, ok bool) {
	if f == nil || f.since == 0 {
		return sel, false
	}
	return datapath.ChangedSelection{SinceNs: f.since, IdleBeforeNs: idleBefore, Refresh: f.refresh, Slot: f.slot()}, true
}

// accept records that every part of the snapshot whose table was read
// from readNs (kernel time) was accepted.
func (f *changedFilter) accept(readNs uint64, lag time.Duration) {
	if f == nil {
		return
	}
	f.accepted++
	f.since = max(readNs-min(readNs, uint64(lag)), 1)
}
