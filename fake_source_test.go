package xdpflowreceiver

import (
	"sync"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// fakeSource is an in-memory flowSource: tests put flows in its table and
// read back what the receiver did with it.
type fakeSource struct {
	mu        sync.Mutex
	table     map[datapath.FlowKey]datapath.FlowValue
	stats     datapath.Stats
	events    chan datapath.TriggerEvent
	calls     []string // "detach", "read", "close" in order
	readErr   error
	evictions int
	gone      []string
	// listChanges makes ReadDirty list the keys put since the last call;
	// else it lists none and the receiver reads the whole table.
	listChanges bool
	changed     map[datapath.FlowKey]bool
	dirtyErr    error // returned by ReadDirty, which then lists nothing
}

func newFakeSource() *fakeSource {
	return &fakeSource{table: map[datapath.FlowKey]datapath.FlowValue{}, events: make(chan datapath.TriggerEvent, 1)}
}

func (f *fakeSource) put(k datapath.FlowKey, v datapath.FlowValue) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.table[k] = v
	if f.changed == nil {
		f.changed = map[datapath.FlowKey]bool{}
	}
	f.changed[k] = true
}

func (f *fakeSource) ReadFlows(dst *datapath.FlowTable) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "read")
	dst.Reset()
	if f.readErr != nil {
		return f.readErr
	}
	for k, v := range f.table {
		dst.Append(k, v)
	}
	return nil
}

func (f *fakeSource) Evict(keys []datapath.FlowKey, dst *datapath.FlowTable) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		if v, ok := f.table[k]; ok {
			delete(f.table, k)
			dst.Append(k, v)
			f.evictions++
		}
	}
	return nil
}

func (f *fakeSource) Stats() (datapath.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats, nil
}

func (f *fakeSource) Events() <-chan datapath.TriggerEvent { return f.events }

func (f *fakeSource) Attached() map[string]int { return map[string]int{"eth0": 2} }

func (f *fakeSource) InterfaceNames() map[int]string { return map[int]string{2: "eth0"} }

func (f *fakeSource) State() datapath.StateReport { return datapath.StateReport{} }

// ReadDirty lists the keys put since the last call that are still in
// the table, if listChanges; else none (not ok): the receiver reads the
// whole table, and finds the changes by comparing counters.
func (f *fakeSource) ReadDirty(dst *datapath.FlowTable) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dst.Reset()
	if f.dirtyErr != nil {
		clear(f.changed) // the epoch ended unread
		return false, f.dirtyErr
	}
	for k := range f.changed {
		if v, ok := f.table[k]; ok {
			dst.Append(k, v)
		}
	}
	clear(f.changed)
	return f.listChanges, nil
}

func (f *fakeSource) Gone() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gone
}

func (f *fakeSource) DetachAll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "detach")
	return nil
}

func (f *fakeSource) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "close")
	return nil
}

func (f *fakeSource) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}
