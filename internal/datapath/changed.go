//go:build linux

package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// MaxChangedRead is the most entries ReadChanged returns at once; the
// kernel buffer it reads them from holds this many, or MaxConnections if
// fewer (Options.ReadChanged).
const MaxChangedRead = 65536

// ReadChanged replaces dst with the entries of the kernel table that sel
// selects, reading only those: the program walks the table in the kernel
// and copies them out. It returns how many entries the table held. ok is
// false, and dst undefined, when more than the kernel buffer holds were
// selected: read the whole table then (ReadFlows).
func (d *Datapath) ReadChanged(dst *FlowTable, sel ChangedSelection) (entries int, ok bool, err error) {
	if d.changedCapacity == 0 {
		return 0, false, errors.New("read changed flows: the datapath was loaded without Options.ReadChanged")
	}
	msg := xdpflowChangedMsg{SinceNs: sel.SinceNs, IdleBeforeNs: sel.IdleBeforeNs, Refresh: sel.Refresh, Slot: sel.Slot}
	if _, err := d.objs.XdpflowChanged.Run(&ebpf.RunOptions{Data: bytesOf(&msg), DataOut: bytesOf(&msg)}); err != nil {
		return 0, false, fmt.Errorf("select changed flows: %w", err)
	}
	if msg.Selected > msg.Copied {
		return int(msg.Seen), false, nil
	}
	if err := d.readChangedOut(dst, msg.Copied); err != nil {
		return 0, false, err
	}
	return int(msg.Seen), true, nil
}
